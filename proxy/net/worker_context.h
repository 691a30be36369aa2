#pragma once
// What every per-thread object of a worker (connections, pools, listeners, shadow copies) needs
// from the worker it lives on: its event loop, its index, deferred deletion, a fast random
// source, whether it is draining, and the process-wide connection gauges. Handed out instead of
// the Worker itself, so the folders below server/ never include it.
//
// Thread: worker-local (made on the main thread before the worker's thread starts), except
// ConnectionCounts (Thread: any, relaxed atomics).

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/deferred.h"
#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {

// Open connections of the whole process (switchyard_connections_active). Each worker adds and
// subtracts once per connection.
struct ConnectionCounts {
  std::atomic<uint32_t> client{0};
  std::atomic<uint32_t> upstream{0};
};

class WorkerContext {
 public:
  WorkerContext(size_t index, ConnectionCounts& counts);
  ~WorkerContext();
  WorkerContext(const WorkerContext&) = delete;
  WorkerContext& operator=(const WorkerContext&) = delete;

  event_base* base() const { return base_.get(); }
  size_t index() const { return index_; }
  ConnectionCounts& connections() const { return counts_; }

  // Set once a drain starts: pools stop keeping idle connections, listeners stay closed.
  bool draining() const { return draining_; }
  void setDraining() { draining_ = true; }

  // Frees `obj` after the current callbacks return (never inside its own callback).
  void deferDelete(std::unique_ptr<Deferrable> obj);
  // Frees everything deferred so far, now (the worker's teardown).
  void freeDeferred();

  // splitmix64: fast, good enough for fallback sampling and ids (not for secrets).
  uint64_t random() {
    uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Milliseconds of the loop's cached clock (cheap; the same within one loop iteration).
  uint64_t nowMs() const;

 private:
  static void onDeferred(evutil_socket_t, short, void* ctx) noexcept;

  size_t index_;
  ConnectionCounts& counts_;
  EventBasePtr base_;
  EventPtr deferred_event_;
  std::vector<std::unique_ptr<Deferrable>> deferred_;
  std::vector<std::unique_ptr<Deferrable>> freeing_;  // the batch being freed (keeps capacity)
  uint64_t rng_state_ = 0;
  bool draining_ = false;
};

}  // namespace sy::proxy
