#include "proxy/upstream_pool.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "config/openssl_ptr.h"
#include "proxy/log.h"
#include "proxy/timeval.h"
#include "proxy/worker.h"

namespace sy::proxy {
// ---- UpstreamConn --------------------------------------------------------------------------

UpstreamConn::UpstreamConn(std::shared_ptr<UpstreamPool> pool, size_t server, BufferEventPtr bev,
                           bool tls)
    : pool_(std::move(pool)), server_(server), bev_(std::move(bev)), tls_(tls) {
  bufferevent_setcb(bev_.get(), &readCb, &writeCb, &eventCb, this);
  pool_->worker().shared().upstream_connections.fetch_add(1, std::memory_order_relaxed);
}

UpstreamConn::~UpstreamConn() {
  if (bev_) bufferevent_setcb(bev_.get(), nullptr, nullptr, nullptr, nullptr);
  pool_->worker().shared().upstream_connections.fetch_sub(1, std::memory_order_relaxed);
}

const config::SocketAddress& UpstreamConn::address() const { return pool_->address(server_); }

std::string UpstreamConn::describeFailure(short events) const {
  if (tls_) {
    std::string reasons;
    while (unsigned long e = bufferevent_get_openssl_error(bev_.get())) {
      if (ERR_GET_LIB(e) == 0) continue;  // libevent also queues plain errno values here
      char buf[256];
      ERR_error_string_n(e, buf, sizeof(buf));
      if (!reasons.empty()) reasons += "; ";
      reasons += buf;
    }
    if (SSL* ssl = bufferevent_openssl_get_ssl(bev_.get())) {
      const long verify = SSL_get_verify_result(ssl);
      if (verify != X509_V_OK) {
        reasons += std::string(reasons.empty() ? "" : " ") + "(" +
                   X509_verify_cert_error_string(verify) + ")";
      }
    }
    if (!reasons.empty()) return "TLS: " + reasons;
  }
  if (events & BEV_EVENT_TIMEOUT) return "timeout";
  const int err = EVUTIL_SOCKET_ERROR();
  return err != 0 ? evutil_socket_error_to_string(err) : "connection closed";
}

void UpstreamConn::readCb(bufferevent*, void* ctx) noexcept {
  auto* c = static_cast<UpstreamConn*>(ctx);
  if (c->owner_) {
    c->owner_->onUpstreamRead();
  } else {
    c->pool_->onIdleEvent(*c);  // an idle connection must not speak: drop it
  }
}

void UpstreamConn::writeCb(bufferevent*, void* ctx) noexcept {
  auto* c = static_cast<UpstreamConn*>(ctx);
  if (c->owner_) c->owner_->onUpstreamWrite();
}

void UpstreamConn::eventCb(bufferevent*, short events, void* ctx) noexcept {
  auto* c = static_cast<UpstreamConn*>(ctx);
  if (c->owner_) {
    c->owner_->onUpstreamEvent(events);
  } else {
    c->pool_->onIdleEvent(*c);  // closed by the server, or idle timeout
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

BufferEventPtr UpstreamPool::newTlsBufferEvent(const config::SocketAddress& address) {
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
  return bev;
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
    bufferevent_set_timeouts(conn->bev(), nullptr, nullptr);
    return conn;
  }
  BufferEventPtr bev = tls_ctx_ ? newTlsBufferEvent(server.address)
                               : BufferEventPtr(bufferevent_socket_new(worker_.base(), -1,
                                                                       BEV_OPT_CLOSE_ON_FREE));
  if (!bev) {
    --server.active;
    if (server.health != nullptr) unbump(server.health->active(worker_.index()));
    return nullptr;
  }
  // While connecting, the write timeout is the connect timeout (libevent applies it to the
  // pending connect).
  timeval tv = toTimeval(connect_timeout_ms);
  bufferevent_set_timeouts(bev.get(), nullptr, &tv);
  std::unique_ptr<UpstreamConn> conn(
      new UpstreamConn(shared_from_this(), i, std::move(bev), tls_ctx_ != nullptr));
  if (bufferevent_socket_connect(conn->bev(), reinterpret_cast<const sockaddr*>(&server.address.addr),
                                 static_cast<int>(server.address.len)) != 0) {
    // Immediate failure (e.g. no route): the owner sees it as a connect error event soon.
    SY_LOG(Debug, "upstream %s: connect could not start", server.address.text.c_str());
  }
  return conn;
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
  timeval idle = toTimeval(kIdleTimeoutMs);
  bufferevent_set_timeouts(conn->bev(), &idle, nullptr);
  bufferevent_enable(conn->bev(), EV_READ);
  server.idle.push_back(std::move(conn));
}

void UpstreamPool::onIdleEvent(UpstreamConn& conn) {
  Server& server = servers_[conn.server_];
  auto it = std::find_if(server.idle.begin(), server.idle.end(),
                         [&](const std::unique_ptr<UpstreamConn>& c) { return c.get() == &conn; });
  if (it == server.idle.end()) return;
  std::unique_ptr<UpstreamConn> owned = std::move(*it);
  server.idle.erase(it);
  bufferevent_disable(owned->bev(), EV_READ | EV_WRITE);
  worker_.deferDelete(std::move(owned));
}

void UpstreamPool::retire() {
  retired_ = true;
  for (Server& server : servers_) {
    // Moved out first: deleting a connection may drop the last other reference to this pool.
    std::vector<std::unique_ptr<UpstreamConn>> idle;
    idle.swap(server.idle);
    for (std::unique_ptr<UpstreamConn>& conn : idle) {
      bufferevent_disable(conn->bev(), EV_READ | EV_WRITE);
      worker_.deferDelete(std::move(conn));
    }
  }
}

}  // namespace sy::proxy
