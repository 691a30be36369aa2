#pragma once
// Per-worker keep-alive connection pools to the servers of one config::Pool. Nothing here is
// shared across threads: each worker has its own pools, so picking a server and reusing an
// idle connection need no lock.
//
// Thread: worker-local.

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/deferred.h"
#include "config/snapshot.h"
#include "proxy/http1/client.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/net/transport.h"
#include "proxy/net/worker_context.h"
#include "proxy/upstream/connector.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/selection.h"

namespace sy::proxy {

class UpstreamPool;

// One connection to an upstream server. While serving a request it is owned by that
// request's exchange (or shadow copy), which receives its events through Owner; between requests it
// sits idle in its pool.
class UpstreamConn : public Deferrable, private Transport::Handler {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    virtual void onUpstreamRead() = 0;
    virtual void onUpstreamWrite() = 0;
    virtual void onUpstreamEvent(short events) = 0;  // BEV_EVENT_* flags (see transport.h)
  };

  ~UpstreamConn() override;
  UpstreamConn(const UpstreamConn&) = delete;
  UpstreamConn& operator=(const UpstreamConn&) = delete;

  Transport& transport() const { return *transport_; }
  // The HTTP/1 client of this connection (the request in progress on it).
  Http1Client& client() { return client_; }
  evbuffer* input() const { return transport_->input(); }
  evbuffer* output() const { return transport_->output(); }
  bool connected() const { return connected_; }
  void setConnected() { connected_ = true; }
  bool reused() const { return reused_; }
  bool tls() const { return transport_->tls(); }
  size_t serverIndex() const { return server_; }
  const config::SocketAddress& address() const;
  UpstreamPool& pool() const { return *pool_; }

  // The response timeout, once connected: the write side always counts (an upstream that
  // stops reading), the read side only once the whole request is out (`request_sent`), since
  // an upstream may wait for the whole body before it answers. Before the connect completes
  // nothing changes (the connect timeout runs).
  void armResponseTimeouts(uint32_t response_ms, bool request_sent) {
    if (connected_) transport_->setTimeouts(request_sent ? response_ms : 0, response_ms);
  }

  // Routes this connection's events to `owner`; null: the request is over (its client is
  // detached too), the connection goes idle or closes.
  void attach(Owner* owner) {
    owner_ = owner;
    if (owner == nullptr) client_.detach();
  }

  // Why the connection failed, for logs: the TLS error (e.g. certificate verify failed), or
  // the socket error, or "timeout".
  std::string describeFailure(short events) const;

 private:
  friend class UpstreamPool;
  UpstreamConn(std::shared_ptr<UpstreamPool> pool, size_t server,
               std::unique_ptr<Transport> transport);
  void onTransportRead() override;
  void onTransportWrite() override;
  void onTransportEvent(short events) override;

  std::shared_ptr<UpstreamPool> pool_;  // keeps the pool alive across a reload
  size_t server_;
  std::unique_ptr<Transport> transport_;
  Http1Client client_{*transport_};
  Owner* owner_ = nullptr;
  bool connected_ = false;
  bool reused_ = false;
};

class UpstreamPool : public std::enable_shared_from_this<UpstreamPool>, private ServerView {
 public:
  // How long an idle keep-alive connection is kept. Below the keep-alive timeouts of common
  // servers (nginx 75 s, Apache 5 s is the exception) so we usually close first.
  static constexpr uint32_t kIdleTimeoutMs = 30000;

  // Passive ejection: this many consecutive failures (connect failures, resets, timeouts,
  // 5xx answers) take a server out of this worker's rotation for kEjectMs.
  static constexpr uint32_t kPassiveFailures = 5;
  static constexpr uint32_t kEjectMs = 10000;

  // `health` is parallel to pool.servers.
  static std::shared_ptr<UpstreamPool> create(WorkerContext& worker, const config::Pool& pool,
                                              const std::vector<ServerHealth*>& health);
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // A connection to a usable server of the pool: an idle keep-alive one when there is one,
  // else a new connect (in progress; its Owner sees BEV_EVENT_CONNECTED or an error, an
  // error also when the connect could not start).
  // `exclude` is a server index to avoid (the one whose connect just failed) when others
  // exist; -1 for none. Null when no server is usable or the connect could not even start.
  // `fresh`: never an idle one (a replay after a reused connection was closed under us).
  std::unique_ptr<UpstreamConn> acquire(int exclude, uint32_t connect_timeout_ms,
                                        bool fresh = false);

  // Takes a connection back after a request: kept idle if `reusable`, else closed.
  void release(std::unique_ptr<UpstreamConn> conn, bool reusable);

  size_t serverCount() const { return servers_.size(); }
  // Whether some server is healthy (active checks) and not ejected (passive).
  bool hasUsableServer();
  // Passive health: the outcome of one exchange with `server`.
  void reportResult(size_t server, bool ok);
  const config::SocketAddress& address(size_t server) const { return servers_[server].address; }
  const std::string& name() const { return name_; }
  WorkerContext& worker() const { return worker_; }
  // Whether this pool serves the same servers as `pool` with the same TLS settings (so a
  // reload can keep it and its idle connections).
  bool sameServers(const config::Pool& pool) const;
  // A reload kept this pool: new connections use the new snapshot's TLS context.
  void updateTls(const config::Pool& pool) { tls_.ctx = pool.tls ? pool.tls_ctx : nullptr; }
  // The worker dropped this pool (a reload changed its servers, or the worker is going away):
  // idle connections are closed now, and connections still serving a request are closed when
  // they come back instead of being kept idle. Without this the pool and its idle connections
  // keep each other alive (UpstreamConn::pool_ is a shared_ptr): sockets stay open until the
  // idle timeout, and whatever is idle at exit is leaked.
  void retire();

 private:
  struct Server {
    config::SocketAddress address;
    ServerHealth* health = nullptr;  // shared verdict of the active checks
    uint32_t active = 0;             // connections of this worker currently serving a request
    uint32_t failures = 0;           // consecutive, for passive ejection
    uint64_t ejected_until_ms = 0;
    std::vector<std::unique_ptr<UpstreamConn>> idle;
  };

  UpstreamPool(WorkerContext& worker, const config::Pool& pool,
               const std::vector<ServerHealth*>& health);
  bool usable(const Server& s, uint64_t now_ms) const;
  // ServerView, for selection_.
  size_t size() const override { return servers_.size(); }
  bool usable(size_t server) const override { return usable(servers_[server], now_ms_); }
  uint32_t active(size_t server) const override { return servers_[server].active; }
  void onIdleEvent(UpstreamConn& conn);
  friend class UpstreamConn;

  WorkerContext& worker_;
  std::string name_;
  config::Balance balance_;
  UpstreamTls tls_;
  std::string ca_file_;
  std::vector<Server> servers_;
  std::unique_ptr<Selection> selection_;
  uint64_t now_ms_ = 0;  // the clock of the pick in progress
  bool retired_ = false;
};

}  // namespace sy::proxy
