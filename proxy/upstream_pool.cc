#include "proxy/upstream_pool.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "config/openssl_ptr.h"
#include "proxy/log.h"
#include "proxy/worker.h"

namespace sy::proxy {
// ---- UpstreamConn --------------------------------------------------------------------------

UpstreamConn::UpstreamConn(std::shared_ptr<UpstreamPool> pool, size_t server,
                           std::unique_ptr<Stream> stream)
    : pool_(std::move(pool)), server_(server), stream_(std::move(stream)) {
  stream_->setHandler(this);
  pool_->worker().shared().upstream_connections.fetch_add(1, std::memory_order_relaxed);
}

UpstreamConn::~UpstreamConn() {
  stream_->setHandler(nullptr);
  pool_->worker().shared().upstream_connections.fetch_sub(1, std::memory_order_relaxed);
}

const config::SocketAddress& UpstreamConn::address() const { return pool_->address(server_); }

std::string UpstreamConn::describeFailure(short events) const {
  std::string failure = stream_->failure();
  if (!failure.empty()) return failure;
  return (events & BEV_EVENT_TIMEOUT) ? "timeout" : "connection closed";
}

void UpstreamConn::onStreamRead() {
  if (owner_) {
    owner_->onUpstreamRead();
  } else {
    pool_->onIdleEvent(*this);  // an idle connection must not speak: drop it
  }
}

void UpstreamConn::onStreamWrite() {
  if (owner_) owner_->onUpstreamWrite();
}

void UpstreamConn::onStreamEvent(short events) {
  if (owner_) {
    owner_->onUpstreamEvent(events);
  } else {
    pool_->onIdleEvent(*this);  // closed by the server, or idle timeout
  }
}

// ---- UpstreamPool --------------------------------------------------------------------------

std::shared_ptr<UpstreamPool> UpstreamPool::create(Worker& worker, const config::Pool& pool,
                                                   const std::vector<ServerHealth*>& health) {
  return std::shared_ptr<UpstreamPool>(new UpstreamPool(worker, pool, health));
}

UpstreamPool::UpstreamPool(Worker& worker, const config::Pool& pool,
                           const std::vector<ServerHealth*>& health)
    : worker_(worker),
      name_(pool.name),
      balance_(pool.balance),
      tls_ctx_(pool.tls ? pool.tls_ctx : nullptr),
      tls_verify_(pool.tls_verify),
      ca_file_(pool.ca_file),
      sni_(pool.sni) {
  servers_.reserve(pool.servers.size());
  for (size_t i = 0; i < pool.servers.size(); ++i) {
    Server s;
    s.address = pool.servers[i];
    s.health = i < health.size() ? health[i] : nullptr;
    servers_.push_back(std::move(s));
  }
  // Workers start their round-robin at different servers so that, with few requests, the
  // servers still see an even share.
  if (!servers_.empty()) rr_next_ = worker.index() % servers_.size();
}

bool UpstreamPool::sameServers(const config::Pool& pool) const {
  if (pool.servers.size() != servers_.size() || pool.balance != balance_) return false;
  if (pool.tls != (tls_ctx_ != nullptr) || pool.tls_verify != tls_verify_ ||
      pool.ca_file != ca_file_ || pool.sni != sni_) {
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

uint64_t UpstreamPool::nowMs() const {
  timeval tv{};
  event_base_gettimeofday_cached(worker_.base(), &tv);
  return static_cast<uint64_t>(tv.tv_sec) * 1000 + static_cast<uint64_t>(tv.tv_usec) / 1000;
}

bool UpstreamPool::usable(const Server& s, uint64_t now_ms) const {
  return (s.health == nullptr || s.health->healthy()) && now_ms >= s.ejected_until_ms;
}

bool UpstreamPool::hasUsableServer() {
  const uint64_t now = nowMs();
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
  s.ejected_until_ms = nowMs() + kEjectMs;
  SY_LOG(Warn, "pool %s: server %s ejected for %u ms after %u consecutive failures (worker %zu)",
         name_.c_str(), s.address.text.c_str(), kEjectMs, kPassiveFailures, worker_.index());
}

std::unique_ptr<Stream> UpstreamPool::newTlsStream(const config::SocketAddress& address,
                                                   uint32_t connect_timeout_ms) {
  config::SslPtr ssl(SSL_new(tls_ctx_.get()));
  if (!ssl) return nullptr;
  // The name to send as SNI and to verify: `sni`, else the host part of "host:port".
  std::string name = sni_;
  if (name.empty()) {
    name = address.text.substr(0, address.text.rfind(':'));
    if (name.size() >= 2 && name.front() == '[') name = name.substr(1, name.size() - 2);
  }
  in6_addr ignored6;
  in_addr ignored4;
  const bool ip_literal = inet_pton(AF_INET, name.c_str(), &ignored4) == 1 ||
                          inet_pton(AF_INET6, name.c_str(), &ignored6) == 1;
  if (ip_literal) {
    // RFC 6066: no SNI for addresses; verify the certificate's IP SAN instead.
    if (tls_verify_) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), name.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl.get(), name.c_str());
    if (tls_verify_) SSL_set1_host(ssl.get(), name.c_str());
  }
  // The bufferevent owns the SSL from here (BEV_OPT_CLOSE_ON_FREE).
  BufferEventPtr bev(bufferevent_openssl_socket_new(worker_.base(), -1, ssl.get(),
                                                    BUFFEREVENT_SSL_CONNECTING,
                                                    BEV_OPT_CLOSE_ON_FREE));
  if (!bev) return nullptr;
  ssl.release();
  bufferevent_openssl_set_allow_dirty_shutdown(bev.get(), 1);
  auto stream = std::make_unique<TlsStream>(std::move(bev));
  stream->connect(reinterpret_cast<const sockaddr*>(&address.addr), address.len,
                  connect_timeout_ms);
  return stream;
}

size_t UpstreamPool::pickServer(int exclude) {
  const size_t n = servers_.size();
  const uint64_t now = nowMs();
  // Round robin (or least connections) over the usable servers; `exclude` only when it is
  // the one usable server left.
  size_t best = n;
  size_t fallback = n;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (rr_next_ + k) % n;
    if (!usable(servers_[i], now)) continue;
    if (static_cast<int>(i) == exclude) {
      fallback = i;
      continue;
    }
    if (balance_ != config::Balance::LeastConn) {
      best = i;
      break;
    }
    if (best == n || servers_[i].active < servers_[best].active) best = i;
  }
  if (best == n) best = fallback;
  if (best != n) rr_next_ = (best + 1) % n;
  return best;
}

std::unique_ptr<UpstreamConn> UpstreamPool::acquire(int exclude, uint32_t connect_timeout_ms) {
  const size_t i = pickServer(exclude);
  if (i >= servers_.size()) return nullptr;
  Server& server = servers_[i];
  ++server.active;
  if (server.health != nullptr) bump(server.health->active(worker_.index()), 1);
  if (!server.idle.empty()) {
    std::unique_ptr<UpstreamConn> conn = std::move(server.idle.back());
    server.idle.pop_back();
    conn->reused_ = true;
    conn->stream().setTimeouts(0, 0);
    return conn;
  }
  std::unique_ptr<Stream> stream =
      tls_ctx_ ? newTlsStream(server.address, connect_timeout_ms)
               : PlainStream::connect(worker_.base(),
                                      reinterpret_cast<const sockaddr*>(&server.address.addr),
                                      server.address.len, connect_timeout_ms);
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
  conn->stream().setTimeouts(kIdleTimeoutMs, 0);
  conn->stream().enableRead();  // an idle connection that speaks or closes is dropped
  server.idle.push_back(std::move(conn));
}

void UpstreamPool::onIdleEvent(UpstreamConn& conn) {
  Server& server = servers_[conn.server_];
  auto it = std::find_if(server.idle.begin(), server.idle.end(),
                         [&](const std::unique_ptr<UpstreamConn>& c) { return c.get() == &conn; });
  if (it == server.idle.end()) return;
  std::unique_ptr<UpstreamConn> owned = std::move(*it);
  server.idle.erase(it);
  owned->stream().setHandler(nullptr);
  worker_.deferDelete(std::move(owned));
}

void UpstreamPool::retire() {
  retired_ = true;
  for (Server& server : servers_) {
    // Moved out first: deleting a connection may drop the last other reference to this pool.
    std::vector<std::unique_ptr<UpstreamConn>> idle;
    idle.swap(server.idle);
    for (std::unique_ptr<UpstreamConn>& conn : idle) {
      conn->stream().setHandler(nullptr);
      worker_.deferDelete(std::move(conn));
    }
  }
}

}  // namespace sy::proxy
