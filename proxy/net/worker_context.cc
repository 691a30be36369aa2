#include "proxy/net/worker_context.h"

#include <sys/random.h>

#include <ctime>

namespace sy::proxy {

WorkerContext::WorkerContext(size_t index, ConnectionCounts& counts)
    : index_(index), counts_(counts), base_(event_base_new()) {
  deferred_event_.reset(event_new(base_.get(), -1, 0, &WorkerContext::onDeferred, this));
  if (getrandom(&rng_state_, sizeof(rng_state_), 0) != sizeof(rng_state_)) {
    rng_state_ = reinterpret_cast<uintptr_t>(this) ^ static_cast<uint64_t>(time(nullptr));
  }
}

WorkerContext::~WorkerContext() {
  freeDeferred();
  deferred_event_.reset();
}

void WorkerContext::deferDelete(std::unique_ptr<Deferrable> obj) {
  deferred_.push_back(std::move(obj));
  event_active(deferred_event_.get(), 0, 0);
}

void WorkerContext::freeDeferred() {
  // Freeing may defer more (a connection releasing its upstream): loop until quiet.
  // Both vectors keep their capacity: no allocation per deferred object once warm.
  while (!deferred_.empty()) {
    freeing_.swap(deferred_);
    freeing_.clear();
  }
}

void WorkerContext::onDeferred(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<WorkerContext*>(ctx)->freeDeferred();
}

uint64_t WorkerContext::nowMs() const {
  timeval tv{};
  event_base_gettimeofday_cached(base_.get(), &tv);
  return static_cast<uint64_t>(tv.tv_sec) * 1000 + static_cast<uint64_t>(tv.tv_usec) / 1000;
}

}  // namespace sy::proxy
