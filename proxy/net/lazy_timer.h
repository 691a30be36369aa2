#pragma once
// A timer for deadlines that move often and rarely fire: idle, header and I/O timeouts.
// Moving a deadline later (every read pushes a read timeout back) costs a store, not an
// event_add (a min-heap update in libevent): the event stays armed for the earlier time and,
// when it fires before the deadline, re-arms itself for what is left. Only a deadline earlier
// than the armed one touches libevent.
//
// Thread: worker-local. Its `this` is libevent callback context: neither copyable nor movable.

#include <time.h>

#include <cstdint>

#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {

class LazyTimer {
 public:
  using Callback = void (*)(void* ctx);

  LazyTimer(event_base* base, Callback cb, void* ctx)
      : ev_(evtimer_new(base, &LazyTimer::fire, this)), cb_(cb), ctx_(ctx) {}
  LazyTimer(const LazyTimer&) = delete;
  LazyTimer& operator=(const LazyTimer&) = delete;

  bool ok() const { return ev_ != nullptr; }

  // Monotonic milliseconds; the clock deadlines are in. The coarse clock (a few ms of
  // resolution, no syscall) is plenty for timeouts configured in milliseconds to minutes.
  static uint64_t nowMs() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
  }

  // The callback runs once, at `deadline_ms` or a little later. 0 cancels.
  void setDeadline(uint64_t deadline_ms) {
    deadline_ = deadline_ms;
    if (deadline_ms != 0 && (armed_at_ == 0 || deadline_ms < armed_at_)) arm(deadline_ms);
  }
  void cancel() { deadline_ = 0; }
  // Cancels and takes the event out of the loop (for an object about to go away).
  void stop() {
    deadline_ = 0;
    armed_at_ = 0;
    if (ev_) evtimer_del(ev_.get());
  }
  uint64_t deadline() const { return deadline_; }

 private:
  void arm(uint64_t at) {
    const uint64_t now = nowMs();
    const uint64_t ms = at > now ? at - now : 0;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms / 1000);
    tv.tv_usec = static_cast<suseconds_t>(ms % 1000) * 1000;
    evtimer_add(ev_.get(), &tv);
    armed_at_ = at;
  }

  static void fire(evutil_socket_t, short, void* ctx) noexcept {
    auto* t = static_cast<LazyTimer*>(ctx);
    t->armed_at_ = 0;
    if (t->deadline_ == 0) return;
    if (nowMs() < t->deadline_) {
      t->arm(t->deadline_);  // the deadline moved since this was armed
      return;
    }
    t->deadline_ = 0;
    t->cb_(t->ctx_);
  }

  EventPtr ev_;
  Callback cb_;
  void* ctx_;
  uint64_t deadline_ = 0;  // 0: none
  uint64_t armed_at_ = 0;  // when the event is set to fire; 0: not armed
};

}  // namespace sy::proxy
