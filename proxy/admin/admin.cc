#include "proxy/admin/admin.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string_view>

#include <nlohmann/json.hpp>

#include "proxy/admin/dashboard/dashboard.h"  // generated from dashboard/*.html|css|js
#include "proxy/admin/prometheus.h"
#include "proxy/observe/metrics.h"
#include "proxy/rollout/manager.h"
#include "proxy/routing/splitter.h"
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
    if (!authorized(req)) return;
    std::string error;
    if (backend_.reload(error)) {
      reply(req, 200, "application/json",
            "{\"generation\": " + std::to_string(backend_.generation()) + "}\n");
    } else {
      reply(req, 400, "text/plain; charset=utf-8", error);
    }
    return;
  }
  if (path == "/rollouts" || path.starts_with("/rollouts/")) {
    handleRollouts(req, path, get);
    return;
  }
  if ((path == "/" || path == "/dashboard") && get) {
    reply(req, 200, "text/html; charset=utf-8", kDashboardHtml);
    return;
  }
  reply(req, 404, "text/plain; charset=utf-8", "not found\n");
}

bool AdminServer::authorized(evhttp_request* req) {
  const std::string token = backend_.snapshot()->server.admin_token;
  if (token.empty()) return true;
  const char* auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
  if (auth != nullptr && std::string_view(auth) == "Bearer " + token) return true;
  evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
  reply(req, 401, "text/plain; charset=utf-8", "missing or wrong admin token\n");
  return false;
}

namespace {

// The names of the segments in `mask` (bit i = snapshot.segments[i]).
nlohmann::ordered_json segmentNames(const config::Snapshot& snapshot, uint64_t mask) {
  nlohmann::ordered_json names = nlohmann::ordered_json::array();
  for (size_t i = 0; i < snapshot.segments.size() && i < config::kMaxSegments; ++i) {
    if ((mask >> i) & 1) names.push_back(snapshot.segments[i].name);
  }
  return names;
}

// SPEC §14: where this replica stands with the fleet. A Prometheus that cannot be read holds
// the rollout: waiting_for becomes "prometheus" and hold_reason says why.
nlohmann::ordered_json fleetJson(const RolloutManager::Entry& entry, nlohmann::ordered_json& j) {
  const RolloutManager::Fleet& f = *entry.fleet;
  const config::RolloutAnalysis& a = entry.engine->settings().analysis;
  nlohmann::ordered_json fl;
  fl["source"] = "prometheus";
  fl["prometheus_url"] = a.prometheus_url;
  fl["lag_ms"] = a.lag_ms;
  fl["replica"] = f.rollout->replica();
  const std::optional<int64_t>& start = f.rollout->start();
  fl["start"] = start ? nlohmann::ordered_json(formatTime(*start)) : nullptr;
  fl["start_ms"] = start ? nlohmann::ordered_json(*start) : nullptr;
  fl["intervals_evaluated"] = f.rollout->evaluated();
  fl["intervals_due"] = f.due;
  fl["caught_up"] = f.caught_up;
  // The interval whose end the latest event is dated at (events the engine makes by itself are
  // dated at an interval's end, the same on every replica).
  const auto& history = entry.engine->history();
  if (start && !history.empty() && a.interval_ms > 0 && history.back().at_ms >= *start) {
    fl["last_event_interval"] =
        static_cast<uint64_t>(history.back().at_ms - *start) / a.interval_ms;
  } else {
    fl["last_event_interval"] = nullptr;
  }
  fl["share"] = entry.share();
  fl["prometheus_errors"] = f.errors;
  fl["error"] = f.error.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(f.error);
  fl["error_since"] = f.error.empty() ? nlohmann::ordered_json(nullptr)
                                      : nlohmann::ordered_json(formatTime(f.error_since_ms));
  if (!f.error.empty()) {
    j["waiting_for"] = "prometheus";
    j["hold_reason"] = "Prometheus cannot be read since " + formatTime(f.error_since_ms) + " (" +
                       f.error + "): the rollout holds at interval " +
                       std::to_string(f.rollout->evaluated()) + " of " + std::to_string(f.due) +
                       " due";
  } else if (!f.caught_up) {
    j["waiting_for"] = "prometheus";
    j["hold_reason"] = "catching up with the fleet: the route gets the baseline only until then";
  }
  return fl;
}

nlohmann::ordered_json rolloutJson(const RolloutManager::Entry& entry,
                                   const config::Snapshot& snapshot) {
  const RolloutEngine& e = *entry.engine;
  const config::Rollout& s = e.settings();
  nlohmann::ordered_json j;
  j["route"] = e.route();
  j["id"] = s.id;
  j["variant"] = config::variantName(s.variant);
  j["baseline"] = config::variantName(s.baseline);
  j["state"] = kRolloutStateNames[static_cast<size_t>(e.state())];
  j["stage"] = e.stage();
  j["percent"] = e.percent();
  j["on_failure"] = s.on_failure == config::RolloutFailure::Rollback ? "rollback" : "pause";
  nlohmann::ordered_json stages = nlohmann::ordered_json::array();
  for (const config::RolloutStage& st : s.stages) {
    uint64_t mask = 0;
    for (uint32_t segment : st.segments) mask |= segment < 64 ? uint64_t{1} << segment : 0;
    stages.push_back({{"percent", st.percent},
                      {"hold_ms", st.hold_ms},
                      {"gate", st.manual_gate},
                      {"segments", segmentNames(snapshot, mask)}});
  }
  j["stages"] = stages;
  // SPEC §13: the segments sent to the variant now, whatever the share.
  j["segments"] = segmentNames(snapshot, rolloutSegments(s, e.stage(), e.percent()));
  j["since"] =
      e.history().empty() ? nullptr : nlohmann::ordered_json(formatTime(e.history().back().at_ms));
  const int64_t next = e.nextTransitionMs();
  j["next_transition"] = next > 0 ? nlohmann::ordered_json(formatTime(next)) : nullptr;
  j["waiting_for"] = e.waitingFor();
  j["needed"] = s.analysis.min_requests;
  j["seen"] = e.stageJudged();
  j["intervals"] = e.intervals();
  j["interval_ms"] = s.analysis.interval_ms;
  j["warmup_ms"] = s.analysis.warmup_ms;
  j["confidence"] = s.analysis.confidence;
  nlohmann::ordered_json checks = nlohmann::ordered_json::array();
  for (const CheckResult& c : e.checks()) checks.push_back(checkJson(c));
  j["checks"] = checks;
  j["verdict"] = e.verdict();
  nlohmann::ordered_json history = nlohmann::ordered_json::array();
  for (const RolloutRecord& r : e.history()) history.push_back(recordJson(r, false));
  j["history"] = history;
  if (entry.fleet != nullptr) j["fleet"] = fleetJson(entry, j);
  return j;
}

}  // namespace

void AdminServer::handleRollouts(evhttp_request* req, std::string_view path, bool get) {
  RolloutManager* rollouts = backend_.rollouts();
  const config::SnapshotConstSharedPtr snapshot = backend_.snapshot();
  std::string_view rest = path.substr(std::string_view("/rollouts").size());
  if (rest.empty() || rest == "/") {
    if (!get) {
      reply(req, 405, "text/plain; charset=utf-8", "use GET\n");
      return;
    }
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    if (rollouts != nullptr) {
      for (const RolloutManager::Entry* e : rollouts->ordered())
        list.push_back(rolloutJson(*e, *snapshot));
    }
    reply(req, 200, "application/json", list.dump(2) + "\n");
    return;
  }
  rest.remove_prefix(1);
  const size_t slash = rest.find('/');
  const std::string route(rest.substr(0, slash));
  const std::string_view action = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  const auto find = [&]() -> const RolloutManager::Entry* {
    if (rollouts == nullptr) return nullptr;
    auto it = rollouts->entries().find(route);
    return it == rollouts->entries().end() ? nullptr : &it->second;
  };
  if (action.empty()) {
    if (!get) {
      reply(req, 405, "text/plain; charset=utf-8", "use GET\n");
      return;
    }
    const RolloutManager::Entry* entry = find();
    if (entry == nullptr) {
      reply(req, 404, "text/plain; charset=utf-8", "no rollout on route " + route + "\n");
      return;
    }
    reply(req, 200, "application/json", rolloutJson(*entry, *snapshot).dump(2) + "\n");
    return;
  }
  static constexpr std::array<std::pair<std::string_view, RolloutCommand>, 5> kActions = {{
      {"pause", RolloutCommand::Pause},
      {"resume", RolloutCommand::Resume},
      {"promote", RolloutCommand::Promote},
      {"abort", RolloutCommand::Abort},
      {"retry", RolloutCommand::Retry},
  }};
  const auto* known = std::find_if(kActions.begin(), kActions.end(),
                                   [&](const auto& a) { return a.first == action; });
  if (known == kActions.end()) {
    reply(req, 404, "text/plain; charset=utf-8", "not found\n");
    return;
  }
  if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
    reply(req, 405, "text/plain; charset=utf-8", "use POST\n");
    return;
  }
  if (!authorized(req)) return;
  bool to_last = false;
  const char* uri = evhttp_request_get_uri(req);
  if (const char* q = uri != nullptr ? std::strchr(uri, '?') : nullptr) {
    evkeyvalq query;
    if (evhttp_parse_query_str(q + 1, &query) == 0) {
      const char* to = evhttp_find_header(&query, "to");
      const bool valid = to == nullptr || (known->second == RolloutCommand::Promote &&
                                           std::string_view(to) == "100");
      to_last = to != nullptr && valid;
      evhttp_clear_headers(&query);
      if (!valid) {
        reply(req, 400, "text/plain; charset=utf-8", "only promote takes ?to, and only to=100\n");
        return;
      }
    }
  }
  std::string reason;
  evbuffer* input = evhttp_request_get_input_buffer(req);
  const size_t length = evbuffer_get_length(input);
  if (length > 0) {
    std::string body(length, '\0');
    evbuffer_copyout(input, body.data(), length);
    const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || (j.contains("reason") && !j["reason"].is_string())) {
      reply(req, 400, "text/plain; charset=utf-8", "the body must be {\"reason\": \"...\"}\n");
      return;
    }
    reason = j.value("reason", "");
  }
  if (rollouts == nullptr || find() == nullptr) {
    reply(req, 404, "text/plain; charset=utf-8", "no rollout on route " + route + "\n");
    return;
  }
  std::string error;
  switch (rollouts->call(route, known->second, to_last, reason, error)) {
    case RolloutManager::CallResult::Ok:
      reply(req, 200, "application/json", rolloutJson(*find(), *snapshot).dump(2) + "\n");
      return;
    case RolloutManager::CallResult::NotFound:
      reply(req, 404, "text/plain; charset=utf-8", "no rollout on route " + route + "\n");
      return;
    case RolloutManager::CallResult::Conflict:
      reply(req, 409, "application/json", nlohmann::json({{"error", error}}).dump() + "\n");
      return;
    case RolloutManager::CallResult::Failed:
      reply(req, 500, "application/json", nlohmann::json({{"error", error}}).dump() + "\n");
      return;
  }
}

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
  sources.rollouts = backend_.rollouts();
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
  j["loaded_at"] = formatTime(static_cast<int64_t>(backend_.loadedAt()) * 1000);
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
    j["ts"] = formatTime(static_cast<int64_t>(d.ts) * 1000);
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
