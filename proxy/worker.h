#pragma once
// One thread + one event_base. Owns every per-thread object: its listeners, its client
// connections, its upstream pools, its copy of the current snapshot pointer. Other threads
// talk to a worker only through post().
//
// Thread: worker-local, except where a method says "Thread: any".

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "config/snapshot.h"
#include "proxy/deferred.h"
#include "proxy/access_log.h"
#include "proxy/health.h"
#include "proxy/libevent_ptr.h"
#include "proxy/metrics.h"
#include "proxy/mirror.h"

namespace sy::proxy {

class DownstreamConn;
class Listener;
class UpstreamPool;
struct ListenSocket;

// Process-wide counters shared by every worker. Atomics, touched once per connection.
struct SharedState {
  std::atomic<uint32_t> client_connections{0};
  std::atomic<uint32_t> upstream_connections{0};
  DiffLog diffs;  // latest shadow mismatches of every worker
  AccessLog access_log;
};

// What the main thread hands every worker for one config generation: the snapshot and the
// per-route / per-server state objects that belong to it (created on the main thread).
struct Publication {
  config::SnapshotConstSharedPtr snapshot;
  std::shared_ptr<const RouteMetricsTable> metrics;
  std::shared_ptr<const HealthTable> health;
};

class Worker {
 public:
  // Thread: main. `snapshot` is the one to start with.
  Worker(size_t index, SharedState& shared, Publication first);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Thread: main, before start(). Takes the sockets to accept on.
  void addListeners(std::vector<ListenSocket> sockets);
  // Thread: main. Starts the thread running the loop.
  void start();
  // Thread: main. Waits for the loop to exit.
  void join();

  // Thread: any. Runs `fn` on this worker's thread (soon; in order of posting).
  void post(std::function<void()> fn);
  // Thread: any. Requests from now on use `snapshot`; requests in flight keep theirs.
  // `new_listeners` are sockets for addresses the snapshot adds; listeners for addresses it
  // no longer has are closed, and their connections close once idle.
  void publish(Publication next, std::vector<ListenSocket> new_listeners);
  // Thread: any. Stop accepting; exit the loop once every connection is gone or after
  // `timeout_ms`, closing idle keep-alive connections at once.
  void drain(uint32_t timeout_ms);

  event_base* base() const { return base_.get(); }
  size_t index() const { return index_; }
  const config::SnapshotConstSharedPtr& snapshot() const { return snapshot_; }
  // The metrics of route `index` of snapshot(); index == routes.size() for unmatched requests.
  RouteMetrics& routeMetrics(size_t index) const { return *(*route_metrics_)[index]; }
  bool draining() const { return draining_; }
  // Thread: any. True once the loop has exited (after a drain).
  bool finished() const { return finished_.load(std::memory_order_acquire); }

  // The per-worker connection pool for `pool` of the current or an older snapshot.
  UpstreamPool* poolFor(const config::Pool* pool);

  // Takes ownership of an accepted connection.
  void adopt(std::unique_ptr<DownstreamConn> conn);
  // Unlinks `conn` and frees it after the current callbacks return.
  void close(DownstreamConn* conn);
  // Frees `obj` after the current callbacks return.
  void deferDelete(std::unique_ptr<Deferrable> obj);

  SharedState& shared() { return shared_; }
  // Queues an access-log line (written by the log's thread within ~100 ms).
  void logAccess(const AccessLogEntry& entry);
  Mirror& mirror() { return *mirror_; }
  // A fast non-cryptographic random value (split fallback, request ids, cookie ids).
  uint64_t random();

 private:
  static void onPosted(evutil_socket_t, short, void* ctx) noexcept;
  static void onDeferred(evutil_socket_t, short, void* ctx) noexcept;
  static void onDrainTimer(evutil_socket_t, short, void* ctx) noexcept;
  static void onAccessLogTimer(evutil_socket_t, short, void* ctx) noexcept;
  void runPosted();
  void closeRemovedListeners(const config::Snapshot& next);
  void setSnapshot(Publication next);
  void maybeFinishDrain();

  size_t index_;
  SharedState& shared_;
  EventBasePtr base_;
  EventPtr posted_event_;
  EventPtr deferred_event_;
  EventPtr drain_timer_;
  EventPtr access_log_timer_;  // flushes a partial batch of access-log lines
  std::thread thread_;

  int wake_fd_ = -1;         // eventfd: post() writes, the loop reads
  std::mutex posted_mutex_;  // guards posted_ (the only cross-thread state)
  std::vector<std::function<void()>> posted_;

  config::SnapshotConstSharedPtr snapshot_;
  std::shared_ptr<const RouteMetricsTable> route_metrics_;  // parallel to snapshot_->routes
  std::shared_ptr<const HealthTable> health_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<DownstreamConn*, std::unique_ptr<DownstreamConn>> connections_;
  std::vector<std::unique_ptr<Deferrable>> deferred_;
  // Pools of the current snapshot, by config pool. Pools of older snapshots stay alive
  // through the shared_ptrs held by their connections.
  std::unordered_map<const config::Pool*, std::shared_ptr<UpstreamPool>> pools_;
  std::unique_ptr<Mirror> mirror_;
  AccessLogBatch access_batch_{shared_.access_log};
  uint64_t rng_state_;
  bool draining_ = false;
  std::atomic<bool> finished_{false};
};

}  // namespace sy::proxy
