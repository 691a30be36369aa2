#include "proxy/upstream/pool.h"

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "proxy/observe/metrics.h"

namespace sy::proxy {
// ---- UpstreamConn --------------------------------------------------------------------------

UpstreamConn::UpstreamConn(std::shared_ptr<UpstreamPool> pool, size_t server,
                           std::unique_ptr<Transport> transport)
    : pool_(std::move(pool)), server_(server), transport_(std::move(transport)) {
  transport_->setHandler(this);
  pool_->worker().connections().upstream.fetch_add(1, std::memory_order_relaxed);
}

UpstreamConn::~UpstreamConn() {
  transport_->setHandler(nullptr);
  pool_->worker().connections().upstream.fetch_sub(1, std::memory_order_relaxed);
}

const config::SocketAddress& UpstreamConn::address() const { return pool_->address(server_); }

std::string UpstreamConn::describeFailure(short events) const {
  std::string failure = transport_->failure();
  if (!failure.empty()) return failure;
  return (events & BEV_EVENT_TIMEOUT) ? "timeout" : "connection closed";
}

void UpstreamConn::onTransportRead() {
  if (owner_) {
    owner_->onUpstreamRead();
  } else {
    pool_->onIdleEvent(*this);  // an idle connection must not speak: drop it
  }
}

void UpstreamConn::onTransportWrite() {
  if (owner_) owner_->onUpstreamWrite();
}

void UpstreamConn::onTransportEvent(short events) {
  if (owner_) {
    owner_->onUpstreamEvent(events);
  } else {
    pool_->onIdleEvent(*this);  // closed by the server, or idle timeout
  }
}

// ---- UpstreamPool --------------------------------------------------------------------------

std::shared_ptr<UpstreamPool> UpstreamPool::create(WorkerContext& worker, const config::Pool& pool,
                                                   const std::vector<ServerHealth*>& health) {
  return std::shared_ptr<UpstreamPool>(new UpstreamPool(worker, pool, health));
}

UpstreamPool::UpstreamPool(WorkerContext& worker, const config::Pool& pool,
                           const std::vector<ServerHealth*>& health)
    : worker_(worker),
      name_(pool.name),
      balance_(pool.balance),
      tls_(upstreamTls(pool)),
      ca_file_(pool.ca_file) {
  servers_.reserve(pool.servers.size());
  for (size_t i = 0; i < pool.servers.size(); ++i) {
    Server s;
    s.address = pool.servers[i];
    s.health = i < health.size() ? health[i] : nullptr;
    servers_.push_back(std::move(s));
  }
  // Workers start their round-robin at different servers so that, with few requests, the
  // servers still see an even share.
  selection_ = makeSelection(balance_, servers_.empty() ? 0 : worker.index() % servers_.size());
}

bool UpstreamPool::sameServers(const config::Pool& pool) const {
  if (pool.servers.size() != servers_.size() || pool.balance != balance_) return false;
  if (pool.tls != static_cast<bool>(tls_) || pool.tls_verify != tls_.verify ||
      pool.ca_file != ca_file_ || pool.sni != tls_.sni) {
    return false;
  }
  for (size_t i = 0; i < servers_.size(); ++i) {
    if (pool.servers[i].text != servers_[i].address.text ||
        pool.servers[i].len != servers_[i].address.len ||
        memcmp(&pool.servers[i].addr, &servers_[i].address.addr, pool.servers[i].len) != 0) {
      return false;
    }
  }
  return true;
}

bool UpstreamPool::usable(const Server& s, uint64_t now_ms) const {
  return (s.health == nullptr || s.health->healthy()) && now_ms >= s.ejected_until_ms;
}

bool UpstreamPool::hasUsableServer() {
  const uint64_t now = worker_.nowMs();
  for (const Server& s : servers_) {
    if (usable(s, now)) return true;
  }
  return false;
}

void UpstreamPool::reportResult(size_t server, bool ok) {
  if (server >= servers_.size()) return;
  Server& s = servers_[server];
  if (ok) {
    s.failures = 0;
    return;
  }
  if (++s.failures < kPassiveFailures) return;
  s.failures = 0;
  s.ejected_until_ms = worker_.nowMs() + kEjectMs;
  SY_LOG(Warn, "pool %s: server %s ejected for %u ms after %u consecutive failures (worker %zu)",
         name_.c_str(), s.address.text.c_str(), kEjectMs, kPassiveFailures, worker_.index());
}

std::unique_ptr<UpstreamConn> UpstreamPool::acquire(int exclude, uint32_t connect_timeout_ms,
                                                    bool fresh) {
  now_ms_ = worker_.nowMs();
  const size_t i = selection_->pick(*this, exclude);
  if (i >= servers_.size()) return nullptr;
  Server& server = servers_[i];
  ++server.active;
  if (server.health != nullptr) bump(server.health->active(worker_.index()), 1);
  if (!fresh && !server.idle.empty()) {
    std::unique_ptr<UpstreamConn> conn = std::move(server.idle.back());
    server.idle.pop_back();
    conn->reused_ = true;
    conn->transport().setTimeouts(0, 0);
    return conn;
  }
  std::unique_ptr<Transport> stream =
      connectUpstream(worker_.base(), server.address, tls_, connect_timeout_ms);
  if (!stream) {
    SY_LOG(Debug, "upstream %s: no socket for a connect", server.address.text.c_str());
    --server.active;
    if (server.health != nullptr) unbump(server.health->active(worker_.index()));
    return nullptr;
  }
  return std::unique_ptr<UpstreamConn>(new UpstreamConn(shared_from_this(), i, std::move(stream)));
}

void UpstreamPool::release(std::unique_ptr<UpstreamConn> conn, bool reusable) {
  Server& server = servers_[conn->server_];
  if (server.active > 0) {
    --server.active;
    if (server.health != nullptr) unbump(server.health->active(worker_.index()));
  }
  conn->attach(nullptr);
  if (!reusable || retired_ || worker_.draining()) {
    worker_.deferDelete(std::move(conn));
    return;
  }
  conn->transport().setTimeouts(kIdleTimeoutMs, 0);
  conn->transport().enableRead();  // an idle connection that speaks or closes is dropped
  server.idle.push_back(std::move(conn));
}

void UpstreamPool::onIdleEvent(UpstreamConn& conn) {
  Server& server = servers_[conn.server_];
  auto it = std::find_if(server.idle.begin(), server.idle.end(),
                         [&](const std::unique_ptr<UpstreamConn>& c) { return c.get() == &conn; });
  if (it == server.idle.end()) return;
  std::unique_ptr<UpstreamConn> owned = std::move(*it);
  server.idle.erase(it);
  owned->transport().setHandler(nullptr);
  worker_.deferDelete(std::move(owned));
}

void UpstreamPool::retire() {
  retired_ = true;
  for (Server& server : servers_) {
    // Moved out first: deleting a connection may drop the last other reference to this pool.
    std::vector<std::unique_ptr<UpstreamConn>> idle;
    idle.swap(server.idle);
    for (std::unique_ptr<UpstreamConn>& conn : idle) {
      conn->transport().setHandler(nullptr);
      worker_.deferDelete(std::move(conn));
    }
  }
}

}  // namespace sy::proxy
