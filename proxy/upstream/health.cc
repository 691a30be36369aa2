#include "proxy/upstream/health.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/keyvalq_struct.h>

#include "common/log.h"
#include "common/timeval.h"
#include "proxy/upstream/connector.h"

namespace sy::proxy {

// ---- ServerHealth / HealthRegistry ---------------------------------------------------------

ServerHealth::ServerHealth(std::string pool, std::string server, size_t workers)
    : pool_(std::move(pool)),
      server_(std::move(server)),
      workers_(workers),
      active_(new Slot[workers]) {}

uint32_t ServerHealth::totalActive() const {
  uint32_t n = 0;
  for (size_t w = 0; w < workers_; ++w) n += active_[w].n.load(std::memory_order_relaxed);
  return n;
}

std::shared_ptr<const HealthTable> HealthRegistry::tableFor(const config::Snapshot& snapshot) {
  auto table = std::make_shared<HealthTable>();
  for (const auto& [name, pool] : snapshot.pools) {
    std::vector<ServerHealth*>& servers = (*table)[&pool];
    for (const config::SocketAddress& a : pool.servers) {
      auto& entry = entries_[{name, a.text}];
      if (!entry) entry = std::make_unique<ServerHealth>(name, a.text, workers_);
      // A pool without an active check has nobody to mark a server healthy again.
      if (!pool.health) entry->setHealthy(true);
      servers.push_back(entry.get());
    }
  }
  return table;
}

ServerHealth* HealthRegistry::find(const std::string& pool, const std::string& server) const {
  auto it = entries_.find({pool, server});
  return it == entries_.end() ? nullptr : it->second.get();
}

// ---- HealthChecker -------------------------------------------------------------------------

struct HealthChecker::Target {
  HealthChecker* owner = nullptr;
  ServerHealth* health = nullptr;
  config::HealthCheck check;
  std::string ip;
  uint16_t port = 0;
  std::string host_header;
  UpstreamTls tls;  // the pool's TLS settings when it speaks TLS
  config::SocketAddress address;
  EventPtr timer;
  EvHttpConnectionPtr conn;
  uint32_t successes = 0;
  uint32_t failures = 0;
  bool seen = false;  // still in the current snapshot (during update())
};

namespace {

bool splitAddress(const config::SocketAddress& a, std::string& ip, uint16_t& port) {
  char buf[INET6_ADDRSTRLEN];
  if (a.addr.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&a.addr);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
    port = ntohs(sin->sin_port);
  } else if (a.addr.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&a.addr);
    inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
    port = ntohs(sin6->sin6_port);
  } else {
    return false;
  }
  ip = buf;
  return true;
}

}  // namespace

HealthChecker::HealthChecker(event_base* base, HealthRegistry& registry)
    : base_(base), registry_(registry) {}

HealthChecker::~HealthChecker() {
  // Connections first: freeing one drops its pending request without calling back.
  for (auto& [key, t] : targets_) t->conn.reset();
}

void HealthChecker::update(const config::SnapshotConstSharedPtr& snapshot) {
  snapshot_ = snapshot;
  for (auto& [key, t] : targets_) t->seen = false;
  for (const auto& [name, pool] : snapshot->pools) {
    if (!pool.health) continue;
    for (const config::SocketAddress& a : pool.servers) {
      auto& t = targets_[{name, a.text}];
      const bool fresh = !t;
      if (fresh) t = std::make_unique<Target>();
      t->seen = true;
      t->owner = this;
      t->health = registry_.find(name, a.text);
      t->check = *pool.health;
      t->host_header = a.text;
      std::string ip;
      uint16_t port = 0;
      if (t->health == nullptr || !splitAddress(a, ip, port)) {
        t.reset();
        continue;
      }
      t->ip = ip;
      t->port = port;
      t->tls = upstreamTls(pool);
      t->address = a;
      if (fresh) {
        t->timer.reset(evtimer_new(base_, &HealthChecker::onTimer, t.get()));
        start(*t);  // check at once, so a dead server is found within the first interval
      }
    }
  }
  for (auto it = targets_.begin(); it != targets_.end();) {
    if (!it->second || !it->second->seen) {
      it = targets_.erase(it);
    } else {
      ++it;
    }
  }
}

void HealthChecker::onTimer(evutil_socket_t, short, void* ctx) noexcept {
  auto* t = static_cast<Target*>(ctx);
  t->owner->start(*t);
}

void HealthChecker::start(Target& t) {
  // A fresh connection per check: it proves the server accepts connections now, and a TLS
  // connection cannot be re-established on the same bufferevent. (The previous one finished
  // its request; freeing it here, in a timer callback, is safe.)
  BufferEventPtr bev;
  if (t.tls) {
    // Set up as a request's connection would be (connector.h); the evhttp connection owns
    // the bufferevent from here.
    bev = newTlsBufferEvent(base_, t.tls, t.address);
    if (!bev) {
      finish(t, false);
      return;
    }
  }
  t.conn.reset(
      evhttp_connection_base_bufferevent_new(base_, nullptr, bev.release(), t.ip.c_str(), t.port));
  if (!t.conn) {
    finish(t, false);
    return;
  }
  evhttp_connection_set_retries(t.conn.get(), 0);
  timeval timeout = toTimeval(t.check.timeout_ms);
  evhttp_connection_set_timeout_tv(t.conn.get(), &timeout);
  evhttp_request* req = evhttp_request_new(&HealthChecker::onResponse, &t);
  if (req == nullptr) {
    finish(t, false);
    return;
  }
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Host", t.host_header.c_str());
  evhttp_add_header(headers, "User-Agent", "switchyard-health/" SWITCHYARD_VERSION);
  // On failure evhttp_make_request frees the request itself.
  if (evhttp_make_request(t.conn.get(), req, EVHTTP_REQ_GET, t.check.path.c_str()) != 0) {
    finish(t, false);
  }
}

void HealthChecker::onResponse(evhttp_request* req, void* ctx) noexcept {
  auto* t = static_cast<Target*>(ctx);
  const int code = req != nullptr ? evhttp_request_get_response_code(req) : 0;
  t->owner->finish(*t, code >= 200 && code < 400);
}

void HealthChecker::finish(Target& t, bool ok) {
  if (ok) {
    t.failures = 0;
    ++t.successes;
    if (!t.health->healthy() && t.successes >= t.check.healthy_after) {
      t.health->setHealthy(true);
      SY_LOG(Warn, "pool %s: server %s is healthy again", t.health->pool().c_str(),
             t.health->server().c_str());
    }
  } else {
    t.successes = 0;
    ++t.failures;
    if (t.health->healthy() && t.failures >= t.check.unhealthy_after) {
      t.health->setHealthy(false);
      SY_LOG(Warn, "pool %s: server %s is unhealthy (%u failed checks of %s)",
             t.health->pool().c_str(), t.health->server().c_str(), t.failures,
             t.check.path.c_str());
    }
  }
  timeval tv = toTimeval(t.check.interval_ms);
  evtimer_add(t.timer.get(), &tv);
}

}  // namespace sy::proxy
