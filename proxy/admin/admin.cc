#include "proxy/admin/admin.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include <array>
#include <cstdio>
#include <ctime>
#include <string_view>

#include <nlohmann/json.hpp>

#include "proxy/admin/dashboard/dashboard.h"  // generated from dashboard/*.html|css|js
#include "proxy/admin/prometheus.h"
#include "proxy/observe/metrics.h"
#include "proxy/shadow/mirror.h"
#include "proxy/upstream/health.h"

namespace sy::proxy {

std::unique_ptr<AdminServer> AdminServer::create(AdminBackend& backend, event_base* base,
                                                 const config::SocketAddress& address,
                                                 std::string& error) {
  std::unique_ptr<AdminServer> admin(new AdminServer(backend, address.text));
  admin->http_.reset(evhttp_new(base));
  if (!admin->http_) {
    error = "admin: cannot create the HTTP server";
    return nullptr;
  }
  ListenerPtr listener(evconnlistener_new_bind(
      base, nullptr, nullptr, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
      128, reinterpret_cast<const sockaddr*>(&address.addr), static_cast<int>(address.len)));
  if (!listener) {
    error = "admin: cannot listen on " + address.text + ": " +
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
    return nullptr;
  }
  // evhttp owns the listener from here and frees it with the evhttp.
  if (evhttp_bind_listener(admin->http_.get(), listener.get()) == nullptr) {
    error = "admin: cannot serve on " + address.text;
    return nullptr;
  }
  listener.release();
  evhttp_set_allowed_methods(admin->http_.get(),
                             EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
  evhttp_set_gencb(admin->http_.get(), &AdminServer::handleCb, admin.get());
  return admin;
}

void AdminServer::handleCb(evhttp_request* req, void* ctx) noexcept {
  static_cast<AdminServer*>(ctx)->handle(req);
}

void AdminServer::reply(evhttp_request* req, int status, const char* content_type,
                        std::string_view body) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", content_type);
  evhttp_add_header(headers, "Cache-Control", "no-store");
  EvBufferPtr buf(evbuffer_new());
  evbuffer_add(buf.get(), body.data(), body.size());
  evhttp_send_reply(req, status, nullptr, buf.get());
}

void AdminServer::handle(evhttp_request* req) {
  const char* uri = evhttp_request_get_uri(req);
  std::string_view path = uri ? uri : "/";
  if (size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  const evhttp_cmd_type method = evhttp_request_get_command(req);
  const bool get = method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD;

  if (path == "/healthz" && get) {
    if (backend_.draining()) {
      reply(req, 503, "text/plain; charset=utf-8", "draining\n");
    } else {
      reply(req, 200, "text/plain; charset=utf-8", "ok\n");
    }
    return;
  }
  if (path == "/metrics" && get) {
    reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", renderMetrics());
    return;
  }
  if (path == "/status" && get) {
    reply(req, 200, "application/json", renderStatus());
    return;
  }
  if (path == "/shadow/diffs" && get) {
    reply(req, 200, "application/json", renderShadowDiffs());
    return;
  }
  if (path == "/reload") {
    if (method != EVHTTP_REQ_POST) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
      reply(req, 405, "text/plain; charset=utf-8", "use POST\n");
      return;
    }
    const std::string token = backend_.snapshot()->server.admin_token;
    if (!token.empty()) {
      const char* auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
      if (auth == nullptr || std::string_view(auth) != "Bearer " + token) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        reply(req, 401, "text/plain; charset=utf-8", "missing or wrong admin token\n");
        return;
      }
    }
    std::string error;
    if (backend_.reload(error)) {
      reply(req, 200, "application/json",
            "{\"generation\": " + std::to_string(backend_.generation()) + "}\n");
    } else {
      reply(req, 400, "text/plain; charset=utf-8", error);
    }
    return;
  }
  if ((path == "/" || path == "/dashboard") && get) {
    reply(req, 200, "text/html; charset=utf-8", kDashboardHtml);
    return;
  }
  reply(req, 404, "text/plain; charset=utf-8", "not found\n");
}

namespace {

std::string rfc3339(time_t t) {
  tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

std::string AdminServer::renderMetrics() const {
  const config::SnapshotConstSharedPtr snapshot = backend_.snapshot();  // kept for the render
  MetricsSources sources;
  sources.registry = &backend_.metrics();
  sources.snapshot = snapshot.get();
  sources.generation = backend_.generation();
  sources.reloads_success = backend_.reloadCount(true);
  sources.reloads_failure = backend_.reloadCount(false);
  sources.client_connections = backend_.clientConnections();
  sources.upstream_connections = backend_.upstreamConnections();
  sources.access_log_dropped_lines = backend_.accessLogDroppedLines();
  sources.health = &backend_.health();
  std::string out;
  renderPrometheus(out, sources);
  return out;
}

std::string AdminServer::renderStatus() const {
  const config::SnapshotConstSharedPtr snap = backend_.snapshot();
  nlohmann::ordered_json j;
  j["version"] = SWITCHYARD_VERSION;
  j["config"] = backend_.configPath();
  j["generation"] = backend_.generation();
  j["loaded_at"] = rfc3339(backend_.loadedAt());
  j["draining"] = backend_.draining();
  nlohmann::ordered_json routes = nlohmann::ordered_json::array();
  for (const config::Route& r : snap->routes) {
    nlohmann::ordered_json route;
    route["name"] = r.name;
    nlohmann::ordered_json weights, upstreams, served;
    for (size_t v = 0; v < config::kWeightedVariants; ++v) {
      weights[config::kVariantNames[v]] = r.weights[v];
    }
    const RouteMetrics* m = backend_.metrics().find(r.name);
    std::array<uint64_t, config::kWeightedVariants> counts{};
    uint64_t total = 0;
    for (size_t v = 0; v < config::kVariants; ++v) {
      if (r.pools[v] != nullptr) upstreams[config::kVariantNames[v]] = r.pools[v]->name;
      if (v < config::kWeightedVariants && m != nullptr) {
        for (uint64_t c : m->totals(static_cast<config::Variant>(v)).responses) counts[v] += c;
        total += counts[v];
      }
    }
    nlohmann::ordered_json share;
    for (size_t v = 0; v < config::kWeightedVariants; ++v) {
      served[config::kVariantNames[v]] = counts[v];
      share[config::kVariantNames[v]] =
          total == 0 ? 0.0 : static_cast<double>(counts[v]) / static_cast<double>(total);
    }
    route["weights"] = weights;
    route["upstreams"] = upstreams;
    route["served"] = served;  // requests answered per variant since start
    route["share"] = share;    // the same as fractions of the route's total
    if (r.shadow) route["shadow_percent"] = r.shadow->percent;
    routes.push_back(route);
  }
  j["routes"] = routes;
  nlohmann::ordered_json pools = nlohmann::ordered_json::array();
  for (const auto& [name, pool] : snap->pools) {
    nlohmann::ordered_json p;
    p["name"] = name;
    p["balance"] = pool.balance == config::Balance::LeastConn ? "least_conn" : "round_robin";
    nlohmann::ordered_json servers = nlohmann::ordered_json::array();
    for (const config::SocketAddress& a : pool.servers) {
      const ServerHealth* h = backend_.health().find(name, a.text);
      servers.push_back({{"address", a.text},
                         {"healthy", h == nullptr || h->healthy()},
                         {"active", h == nullptr ? 0 : h->totalActive()}});
    }
    p["health_check"] = pool.health.has_value();
    p["servers"] = servers;
    pools.push_back(p);
  }
  j["pools"] = pools;
  return j.dump(2) + "\n";
}

std::string AdminServer::renderShadowDiffs() const {
  static constexpr const char* kKinds[] = {"status", "body", "headers"};
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  char hex[17];
  for (const ShadowDiff& d : backend_.shadowDiffs().latest()) {
    nlohmann::ordered_json j;
    j["ts"] = rfc3339(d.ts);
    j["route"] = d.route;
    j["method"] = d.method;
    j["path"] = d.path;
    j["request_id"] = d.request_id;
    nlohmann::ordered_json kinds = nlohmann::ordered_json::array();
    for (MismatchKind k : d.kinds) kinds.push_back(kKinds[static_cast<size_t>(k)]);
    j["kinds"] = kinds;
    snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(d.primary_digest));
    j["primary"] = {{"status", d.primary_status}, {"digest", hex}};
    snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(d.shadow_digest));
    j["shadow"] = {{"status", d.shadow_status}, {"digest", hex}};
    j["headers"] = d.headers;
    list.push_back(j);
  }
  return list.dump(2) + "\n";
}

}  // namespace sy::proxy
