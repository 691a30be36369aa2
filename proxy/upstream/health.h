#pragma once
// Upstream server health.
//
// Active checks (a pool's `health = {...}`) run on the main thread with libevent's evhttp
// client: every interval_ms a GET of `path`; a 2xx or 3xx within timeout_ms is a success. After
// `unhealthy_after` consecutive failures a server is marked unhealthy, after `healthy_after`
// consecutive successes healthy again. The verdict is one atomic flag per server that workers
// read when they pick a server (no lock, no write on the request path).
//
// Passive ejection happens per worker, in UpstreamPool: consecutive connect failures or 5xx
// answers take a server out for a cool-down, without waiting for the next check.
//
// Entries are keyed by (pool name, server address) and never removed, so a reload that keeps
// a server keeps its state.
//
// Thread: HealthRegistry and HealthChecker: main. ServerHealth::healthy: written by main, read
// by workers; ServerHealth::active(w): written by worker w, read by main.

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <event2/http.h>

#include "config/snapshot.h"
#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {

class ServerHealth {
 public:
  ServerHealth(std::string pool, std::string server, size_t workers);
  const std::string& pool() const { return pool_; }
  const std::string& server() const { return server_; }

  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }
  void setHealthy(bool h) { healthy_.store(h, std::memory_order_relaxed); }

  // Connections of worker `w` currently serving a request on this server.
  std::atomic<uint32_t>& active(size_t w) { return active_[w].n; }
  uint32_t totalActive() const;

 private:
  struct alignas(64) Slot {
    std::atomic<uint32_t> n{0};
  };
  std::string pool_;
  std::string server_;
  std::atomic<bool> healthy_{true};
  size_t workers_;
  std::unique_ptr<Slot[]> active_;
};

// Per config pool of one snapshot: the health entry of each server, parallel to pool.servers.
using HealthTable = std::unordered_map<const config::Pool*, std::vector<ServerHealth*>>;

class HealthRegistry {
 public:
  explicit HealthRegistry(size_t workers) : workers_(workers) {}
  std::shared_ptr<const HealthTable> tableFor(const config::Snapshot& snapshot);
  ServerHealth* find(const std::string& pool, const std::string& server) const;

 private:
  size_t workers_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<ServerHealth>> entries_;
};

using EvHttpConnectionPtr = std::unique_ptr<evhttp_connection, CDeleter<&evhttp_connection_free>>;

// Runs the active checks of the current snapshot's pools.
class HealthChecker {
 public:
  HealthChecker(event_base* base, HealthRegistry& registry);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Checks the pools of `snapshot` that have `health`; servers no longer there stop being
  // checked; servers still there keep their counters.
  void update(const config::SnapshotConstSharedPtr& snapshot);

 private:
  struct Target;
  static void onTimer(evutil_socket_t, short, void* ctx) noexcept;
  static void onResponse(evhttp_request* req, void* ctx) noexcept;
  void start(Target& t);
  void finish(Target& t, bool ok);

  event_base* base_;
  HealthRegistry& registry_;
  config::SnapshotConstSharedPtr snapshot_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Target>> targets_;
};

}  // namespace sy::proxy
