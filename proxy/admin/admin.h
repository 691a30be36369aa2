#pragma once
// The admin endpoint (SPEC §7): plain HTTP on its own address, served by libevent's evhttp on
// the main thread, never on a worker, so a scrape or a reload cannot delay a proxied request.
//
// Thread: main.

#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include <event2/http.h>

#include "config/snapshot.h"
#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {

class DiffLog;
class HealthRegistry;
class MetricsRegistry;
class RolloutManager;

// What the admin endpoint reads from, and asks of, the process. Declared here so that admin/
// never includes proxy/server/ (the Server implements it; STYLE.md "Layout"). A test can serve
// the endpoint from a fake.
//
// Thread: main, every method: the admin endpoint calls them from the main loop only.
class AdminBackend {
 public:
  virtual ~AdminBackend() = default;

  // True once a graceful stop began (GET /healthz answers 503).
  virtual bool draining() const = 0;
  // The snapshot in use now (never null once the endpoint serves).
  virtual config::SnapshotConstSharedPtr snapshot() const = 0;
  // Reads, validates and publishes the config file, as SIGHUP does. False with `error` set (the
  // old snapshot stays) when the file is invalid.
  virtual bool reload(std::string& error) = 0;
  // Generation of the snapshot in use (1 = the one loaded at start).
  virtual uint64_t generation() const = 0;
  // Reloads so far that succeeded (`success`) or failed.
  virtual uint64_t reloadCount(bool success) const = 0;
  virtual const std::string& configPath() const = 0;
  // Wall clock when the snapshot in use was loaded.
  virtual time_t loadedAt() const = 0;
  // Per-route counters (summed over workers on read) and per-server health.
  virtual const MetricsRegistry& metrics() const = 0;
  virtual const HealthRegistry& health() const = 0;
  // Open connections of the whole process, by side.
  virtual uint64_t clientConnections() const = 0;
  virtual uint64_t upstreamConnections() const = 0;
  // The latest shadow mismatches (GET /shadow/diffs). DiffLog is safe to read from any thread.
  virtual const DiffLog& shadowDiffs() const = 0;
  // Access-log lines dropped because the writer could not keep up, since start.
  virtual uint64_t accessLogDroppedLines() const = 0;
  // The rollouts (GET/POST /rollouts...); null when the process has none to manage.
  virtual RolloutManager* rollouts() = 0;
};

using EvHttpPtr = std::unique_ptr<evhttp, CDeleter<&evhttp_free>>;

class AdminServer {
 public:
  // Binds `address` on `base`. Null with `error` set when it cannot. `backend` must outlive
  // the AdminServer.
  static std::unique_ptr<AdminServer> create(AdminBackend& backend, event_base* base,
                                             const config::SocketAddress& address,
                                             std::string& error);
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  const std::string& address() const { return address_; }

 private:
  AdminServer(AdminBackend& backend, std::string address)
      : backend_(backend), address_(std::move(address)) {}
  static void handleCb(evhttp_request* req, void* ctx) noexcept;
  void handle(evhttp_request* req);
  std::string renderMetrics() const;
  std::string renderStatus() const;
  std::string renderShadowDiffs() const;
  // /rollouts, /rollouts/{route}, POST /rollouts/{route}/{action} (SPEC §11).
  void handleRollouts(evhttp_request* req, std::string_view path, bool get);
  // With admin_token set: whether the request carries it; answers 401 when not.
  bool authorized(evhttp_request* req);
  void reply(evhttp_request* req, int status, const char* content_type, std::string_view body);

  AdminBackend& backend_;
  std::string address_;
  EvHttpPtr http_;
};

}  // namespace sy::proxy
