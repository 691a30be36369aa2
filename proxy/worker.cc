#include "proxy/worker.h"

#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "proxy/downstream_conn.h"
#include "proxy/listener.h"
#include "proxy/log.h"
#include "proxy/upstream_pool.h"

namespace sy::proxy {

Worker::Worker(size_t index, SharedState& shared, Publication first)
    : index_(index), shared_(shared), base_(event_base_new()) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  posted_event_.reset(
      event_new(base_.get(), wake_fd_, EV_READ | EV_PERSIST, &Worker::onPosted, this));
  event_add(posted_event_.get(), nullptr);
  deferred_event_.reset(event_new(base_.get(), -1, 0, &Worker::onDeferred, this));
  drain_timer_.reset(evtimer_new(base_.get(), &Worker::onDrainTimer, this));
  mirror_ = std::make_unique<Mirror>(*this);
  access_log_timer_.reset(evtimer_new(base_.get(), &Worker::onAccessLogTimer, this));
  if (getrandom(&rng_state_, sizeof(rng_state_), 0) != sizeof(rng_state_)) {
    rng_state_ = reinterpret_cast<uintptr_t>(this) ^ static_cast<uint64_t>(time(nullptr));
  }
  setSnapshot(std::move(first));
}

Worker::~Worker() {
  // Connections first: they return upstream connections to pools that must still exist.
  connections_.clear();
  for (auto& [cfg, pool] : pools_) pool->retire();
  mirror_.reset();
  deferred_.clear();
  pools_.clear();
  listeners_.clear();
  posted_event_.reset();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Worker::addListeners(std::vector<ListenSocket> sockets) {
  for (ListenSocket& s : sockets) {
    std::unique_ptr<Listener> l = Listener::create(*this, std::move(s));
    if (l) listeners_.push_back(std::move(l));
  }
}

void Worker::start() {
  thread_ = std::thread([this] {
    event_base_loop(base_.get(), EVLOOP_NO_EXIT_ON_EMPTY);
    access_batch_.flush();
    finished_.store(true, std::memory_order_release);
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    posted_.push_back(std::move(fn));
  }
  // The only cross-thread touch of a worker: a write to its eventfd wakes its loop.
  const uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;  // EAGAIN means the counter is already non-zero: a wake-up is pending anyway
}

void Worker::onPosted(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<Worker*>(ctx)->runPosted();
}

void Worker::runPosted() {
  uint64_t count = 0;
  ssize_t n = read(wake_fd_, &count, sizeof(count));
  (void)n;
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    tasks.swap(posted_);
  }
  for (auto& t : tasks) t();
}

void Worker::publish(Publication next, std::vector<ListenSocket> new_listeners) {
  post([this, next = std::move(next), sockets = std::move(new_listeners)]() mutable {
    closeRemovedListeners(*next.snapshot);
    if (!draining_) {
      addListeners(std::move(sockets));
    } else {
      for (ListenSocket& s : sockets) evutil_closesocket(s.fd);
    }
    setSnapshot(std::move(next));
  });
}

void Worker::closeRemovedListeners(const config::Snapshot& next) {
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    const std::string& address = (*it)->address();
    if (listensOn(next, address, (*it)->tls())) {
      ++it;
      continue;
    }
    SY_LOG(Info, "worker %zu: no longer listening on %s", index_, address.c_str());
    std::vector<DownstreamConn*> conns;
    for (auto& [ptr, owned] : connections_) {
      if (ptr->listenerAddress() == address) conns.push_back(ptr);
    }
    for (DownstreamConn* c : conns) c->closeWhenIdle();
    it = listeners_.erase(it);
  }
}

void Worker::setSnapshot(Publication next) {
  // Pools whose servers did not change carry over, idle connections included.
  std::unordered_map<const config::Pool*, std::shared_ptr<UpstreamPool>> pools;
  for (const auto& [name, pool] : next.snapshot->pools) {
    const std::vector<ServerHealth*>& health = next.health->at(&pool);
    std::shared_ptr<UpstreamPool> kept;
    for (auto& [old_cfg, old_pool] : pools_) {
      if (old_pool->name() == name && old_pool->sameServers(pool)) {
        kept = old_pool;
        kept->updateTls(pool);
        break;
      }
    }
    pools.emplace(&pool, kept ? std::move(kept) : UpstreamPool::create(*this, pool, health));
  }
  // Pools the new snapshot does not keep: close their idle connections (see retire()).
  for (auto& old_entry : pools_) {
    bool kept = false;
    for (const auto& entry : pools) kept = kept || entry.second == old_entry.second;
    if (!kept) old_entry.second->retire();
  }
  pools_ = std::move(pools);
  mirror_->setSnapshot(*next.snapshot, *next.health);
  snapshot_ = std::move(next.snapshot);
  route_metrics_ = std::move(next.metrics);
  health_ = std::move(next.health);
}

UpstreamPool* Worker::poolFor(const config::Pool* pool) {
  auto it = pools_.find(pool);
  return it == pools_.end() ? nullptr : it->second.get();
}

void Worker::adopt(std::unique_ptr<DownstreamConn> conn) {
  DownstreamConn* key = conn.get();
  connections_.emplace(key, std::move(conn));
}

void Worker::close(DownstreamConn* conn) {
  auto it = connections_.find(conn);
  if (it == connections_.end()) return;
  deferDelete(std::move(it->second));
  connections_.erase(it);
  if (draining_) maybeFinishDrain();
}

void Worker::deferDelete(std::unique_ptr<Deferrable> obj) {
  deferred_.push_back(std::move(obj));
  event_active(deferred_event_.get(), 0, 0);
}

void Worker::onDeferred(evutil_socket_t, short, void* ctx) noexcept {
  auto* w = static_cast<Worker*>(ctx);
  // Freeing may defer more (a connection releasing its upstream): loop until quiet.
  while (!w->deferred_.empty()) {
    std::vector<std::unique_ptr<Deferrable>> batch;
    batch.swap(w->deferred_);
  }
}

void Worker::drain(uint32_t timeout_ms) {
  post([this, timeout_ms] {
    draining_ = true;
    // Closed, not just disabled: a disabled socket still completes handshakes into its
    // backlog, leaving new clients hanging until exit instead of being refused.
    listeners_.clear();
    // Copy: closeWhenIdle may unlink connections from the map.
    std::vector<DownstreamConn*> conns;
    conns.reserve(connections_.size());
    for (auto& [ptr, owned] : connections_) conns.push_back(ptr);
    for (DownstreamConn* c : conns) c->closeWhenIdle();
    timeval tv{static_cast<time_t>(timeout_ms / 1000),
               static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
    evtimer_add(drain_timer_.get(), &tv);
    maybeFinishDrain();
  });
}

void Worker::maybeFinishDrain() {
  if (connections_.empty()) event_base_loopexit(base_.get(), nullptr);
}

void Worker::onDrainTimer(evutil_socket_t, short, void* ctx) noexcept {
  auto* w = static_cast<Worker*>(ctx);
  SY_LOG(Warn, "worker %zu: drain timeout with %zu connections left", w->index_,
         w->connections_.size());
  event_base_loopexit(w->base_.get(), nullptr);
}

void Worker::logAccess(const AccessLogEntry& entry) {
  const bool was_empty = access_batch_.empty();
  access_batch_.add(entry);
  if (was_empty && !access_batch_.empty()) {
    // A lone line is written within 100 ms; busy workers flush by size long before.
    timeval tv{0, 100000};
    evtimer_add(access_log_timer_.get(), &tv);
  }
}

void Worker::onAccessLogTimer(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<Worker*>(ctx)->access_batch_.flush();
}

uint64_t Worker::random() {
  // splitmix64: fast, good enough for fallback sampling and ids (not for secrets).
  uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace sy::proxy
