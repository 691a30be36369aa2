#include "proxy/admin/prometheus.h"

#include <array>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "config/snapshot.h"
#include "proxy/http/termination.h"
#include "proxy/observe/metrics.h"
#include "proxy/rollout/manager.h"
#include "proxy/rollout/prometheus_api.h"
#include "proxy/upstream/health.h"

namespace sy::proxy {
namespace {

// Prometheus label values escape backslash, double quote and newline.
void appendLabel(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void appendNumber(std::string& out, double v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.17g", v);
  out += buf;
}

void appendHeader(std::string& out, const char* name, const char* type, const char* help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

bool anyNonZero(const RouteMetrics::Totals& t) {
  for (uint64_t n : t.responses) {
    if (n) return true;
  }
  for (uint64_t n : t.upstream_errors) {
    if (n) return true;
  }
  for (const auto& row : t.terminations) {
    for (uint64_t n : row) {
      if (n) return true;
    }
  }
  return false;
}

// A route's variants worth a series: those it has now, or that have counted something.
bool variantShown(const config::Route* route, const RouteMetrics::Totals& t, size_t v) {
  if (route != nullptr && route->pools[v] != nullptr) return true;
  return anyNonZero(t);
}

// SPEC §11's rollout metrics.
void renderRollouts(std::string& out, const RolloutManager* rollouts) {
  std::vector<const RolloutManager::Entry*> entries;
  if (rollouts != nullptr) entries = rollouts->ordered();
  auto labels = [&](const RolloutManager::Entry& e) {
    out.append("route=\"");
    appendLabel(out, e.engine->route());
    out.append("\",rollout=\"");
    appendLabel(out, e.engine->settings().id);
    out.append("\"");
  };
  appendHeader(out, "switchyard_rollout_state", "gauge",
               "1 for the rollout's current state, 0 for the others.");
  for (const RolloutManager::Entry* e : entries) {
    for (size_t st = 0; st < kRolloutStates; ++st) {
      out.append("switchyard_rollout_state{");
      labels(*e);
      out.append(",state=\"").append(kRolloutStateNames[st]).append("\"} ");
      out.append(static_cast<size_t>(e->engine->state()) == st ? "1\n" : "0\n");
    }
  }
  appendHeader(out, "switchyard_rollout_stage", "gauge",
               "The rollout's 1-based stage index, 0 before the first.");
  for (const RolloutManager::Entry* e : entries) {
    out.append("switchyard_rollout_stage{");
    labels(*e);
    out.append("} ").append(std::to_string(e->engine->stage())).append("\n");
  }
  appendHeader(out, "switchyard_rollout_percent", "gauge",
               "The rolled-out variant's current share of the route's hashed traffic, percent.");
  for (const RolloutManager::Entry* e : entries) {
    out.append("switchyard_rollout_percent{");
    labels(*e);
    out.append("} ");
    appendNumber(out, e->engine->percent());
    out.append("\n");
  }
  appendHeader(out, "switchyard_rollout_evidence", "gauge",
               "Each check's test statistic divided by its threshold (>= 1 fails).");
  for (const RolloutManager::Entry* e : entries) {
    for (const CheckResult& c : e->engine->checks()) {
      out.append("switchyard_rollout_evidence{");
      labels(*e);
      out.append(",check=\"").append(kCheckNames[static_cast<size_t>(c.kind)]).append("\"} ");
      appendNumber(out, c.threshold > 0 ? c.evidence / c.threshold : 0.0);
      out.append("\n");
    }
  }
  appendHeader(out, "switchyard_rollout_events_total", "counter",
               "Rollout events taken by this process, by event.");
  for (const RolloutManager::Entry* e : entries) {
    for (size_t ev = 0; ev < kRolloutEvents; ++ev) {
      out.append("switchyard_rollout_events_total{");
      labels(*e);
      out.append(",event=\"").append(kRolloutEventNames[ev]).append("\"} ");
      out.append(std::to_string(e->events[ev])).append("\n");
    }
  }
  appendHeader(out, "switchyard_rollout_notify_failures_total", "counter",
               "Rollout notifications that failed every attempt.");
  for (const RolloutManager::Entry* e : entries) {
    out.append("switchyard_rollout_notify_failures_total{");
    labels(*e);
    out.append("} ").append(std::to_string(e->notify_failures)).append("\n");
  }
}

uint64_t since(uint64_t now, uint64_t base) { return now >= base ? now - base : 0; }

// SPEC §14: what the queries of the rollouts judged through Prometheus read back, summed over
// the replicas. Only those rollouts have these series.
void renderFleetRollouts(std::string& out, const RolloutManager* rollouts,
                         const MetricsRegistry* registry) {
  std::vector<const RolloutManager::Entry*> entries;
  if (rollouts != nullptr) {
    for (const RolloutManager::Entry* e : rollouts->ordered()) {
      if (e->fleet != nullptr) entries.push_back(e);
    }
  }
  auto labels = [&](const RolloutManager::Entry& e) {
    out.append("route=\"");
    appendLabel(out, e.engine->route());
    out.append("\",rollout=\"");
    appendLabel(out, e.engine->settings().id);
    out.append("\"");
  };
  // The judged requests of the rollout's variant and baseline.
  struct Arm {
    const RolloutManager::Entry* entry;
    const char* variant;
    RouteMetrics::Totals totals;
  };
  std::vector<Arm> arms;
  for (const RolloutManager::Entry* e : entries) {
    const RouteMetrics* m = registry != nullptr ? registry->find(e->engine->route()) : nullptr;
    const config::Rollout& r = e->engine->settings();
    for (config::Variant v : {r.variant, r.baseline}) {
      // Counted from the rollout's load on this replica (Fleet::*_base).
      RouteMetrics::Totals t = m != nullptr ? m->totals(v) : RouteMetrics::Totals{};
      const RouteMetrics::Totals& base =
          v == r.variant ? e->fleet->variant_base : e->fleet->baseline_base;
      t.judged = since(t.judged, base.judged);
      t.judged_errors = since(t.judged_errors, base.judged_errors);
      for (size_t b = 0; b < kLatencyBuckets; ++b) {
        t.latency[b] = since(t.latency[b], base.latency[b]);
      }
      arms.push_back({e, config::variantName(v), t});
    }
  }
  auto armLabels = [&](const Arm& a) {
    labels(*a.entry);
    out.append(",variant=\"").append(a.variant).append("\"");
  };
  // One counter family per arm, each in its own group (the text format wants a family's lines
  // together).
  auto armCounter = [&](const char* name, const char* help, uint64_t RouteMetrics::Totals::*field) {
    appendHeader(out, name, "counter", help);
    for (const Arm& a : arms) {
      out.append(name).append("{");
      armLabels(a);
      out.append("} ").append(std::to_string(a.totals.*field)).append("\n");
    }
  };
  armCounter("switchyard_rollout_judged_requests_total",
             "Requests the rollout analysis judges (SPEC §11), by variant.",
             &RouteMetrics::Totals::judged);
  armCounter("switchyard_rollout_judged_errors_total",
             "Judged requests that count as errors for the rollout analysis, by variant.",
             &RouteMetrics::Totals::judged_errors);
  appendHeader(out, "switchyard_rollout_latency_seconds", "histogram",
               "Time from the request head to the upstream's response head of judged requests "
               "(the analysis's buckets; no _sum).");
  for (const Arm& a : arms) {
    uint64_t cumulative = 0;
    size_t b = 0;
    for (size_t edge = kExportedLatencyFirst; edge <= kExportedLatencyLast; ++edge) {
      for (; b <= edge; ++b) cumulative += a.totals.latency[b];
      out.append("switchyard_rollout_latency_seconds_bucket{");
      armLabels(a);
      out.append(",le=\"").append(latencyLe(edge)).append("\"} ");
      out.append(std::to_string(cumulative)).append("\n");
    }
    for (; b < kLatencyBuckets; ++b) cumulative += a.totals.latency[b];
    out.append("switchyard_rollout_latency_seconds_bucket{");
    armLabels(a);
    out.append(",le=\"+Inf\"} ").append(std::to_string(cumulative)).append("\n");
    out.append("switchyard_rollout_latency_seconds_count{");
    armLabels(a);
    out.append("} ").append(std::to_string(cumulative)).append("\n");
  }
  auto shadowCounter = [&](const char* name, const char* help,
                           uint64_t RouteMetrics::ShadowTotals::*field) {
    appendHeader(out, name, "counter", help);
    for (const RolloutManager::Entry* e : entries) {
      const RouteMetrics* m = registry != nullptr ? registry->find(e->engine->route()) : nullptr;
      const RouteMetrics::ShadowTotals t =
          m != nullptr ? m->shadowTotals() : RouteMetrics::ShadowTotals{};
      out.append(name).append("{");
      labels(*e);
      out.append("} ").append(std::to_string(since(t.*field, e->fleet->shadow_base.*field)));
      out.append("\n");
    }
  };
  shadowCounter("switchyard_rollout_shadow_compared_total",
                "Shadow comparisons made on the rollout's route.",
                &RouteMetrics::ShadowTotals::compared);
  shadowCounter("switchyard_rollout_shadow_mismatched_total",
                "Shadow comparisons on the rollout's route that found a mismatch.",
                &RouteMetrics::ShadowTotals::mismatched);
  appendHeader(out, "switchyard_rollout_start_seconds", "gauge",
               "The rollout's start as this replica knows it (on_load: its own load time until "
               "it has read the fleet's earliest), Unix seconds.");
  for (const RolloutManager::Entry* e : entries) {
    const RolloutManager::Fleet& f = *e->fleet;
    const int64_t start =
        f.rollout->start().value_or(e->engine->settings().start_unix_ms.value_or(f.loaded_ms));
    out.append("switchyard_rollout_start_seconds{");
    labels(*e);
    out.append("} ").append(promTime(start)).append("\n");
  }
  appendHeader(out, "switchyard_rollout_counted_since_seconds", "gauge",
               "When this replica began the rollout's counters above (its load of the rollout), "
               "Unix seconds: an interval counts a replica's whole counters only when they "
               "began within it.");
  for (const RolloutManager::Entry* e : entries) {
    out.append("switchyard_rollout_counted_since_seconds{");
    labels(*e);
    out.append("} ").append(promTime(e->fleet->loaded_ms)).append("\n");
  }
  appendHeader(out, "switchyard_rollout_operator_events_total", "counter",
               "Operator calls taken on this replica, by event.");
  for (const RolloutManager::Entry* e : entries) {
    std::array<uint64_t, 5> counts{};
    for (const FleetEvent& ev : e->fleet->rollout->ownEvents()) {
      ++counts[static_cast<size_t>(ev.command)];
    }
    for (size_t c = 0; c < counts.size(); ++c) {
      out.append("switchyard_rollout_operator_events_total{");
      labels(*e);
      out.append(",event=\"").append(commandName(static_cast<RolloutCommand>(c))).append("\"} ");
      out.append(std::to_string(counts[c])).append("\n");
    }
  }
  appendHeader(out, "switchyard_rollout_operator_event_time_seconds", "gauge",
               "One series per operator call taken on this replica: when (Unix seconds), and "
               "where it goes in the fleet's order (slot: after that many intervals).");
  for (const RolloutManager::Entry* e : entries) {
    for (const FleetEvent& ev : e->fleet->rollout->ownEvents()) {
      out.append("switchyard_rollout_operator_event_time_seconds{");
      labels(*e);
      out.append(",replica=\"").append(ev.replica).append("\",seq=\"");
      out.append(std::to_string(ev.seq)).append("\",event=\"").append(commandName(ev.command));
      out.append("\",slot=\"").append(std::to_string(ev.slot)).append("\",to=\"");
      out.append(ev.to_last ? "last" : "").append("\",reason=\"");
      appendLabel(out, ev.reason);
      out.append("\"} ").append(promTime(ev.at_ms)).append("\n");
    }
  }
  appendHeader(out, "switchyard_rollout_prometheus_errors_total", "counter",
               "Queries to Prometheus that failed (unreachable, timed out, or an error answer).");
  for (const RolloutManager::Entry* e : entries) {
    out.append("switchyard_rollout_prometheus_errors_total{");
    labels(*e);
    out.append("} ").append(std::to_string(e->fleet->errors)).append("\n");
  }
}

const config::Route* findRoute(const config::Snapshot* snap, const std::string& name) {
  if (snap == nullptr) return nullptr;
  for (const config::Route& r : snap->routes) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

}  // namespace

void renderPrometheus(std::string& out, const MetricsSources& s) {
  static constexpr const char* kClasses[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
  static constexpr const char* kErrorKinds[] = {"connect", "timeout", "reset", "protocol"};
  struct Series {
    const RouteMetrics* metrics;
    const config::Route* route;
    size_t variant;
    RouteMetrics::Totals totals;
  };
  std::vector<Series> series;
  if (s.registry != nullptr) {
    for (const auto& [name, m] : s.registry->routes()) {
      const config::Route* route = findRoute(s.snapshot, name);
      for (size_t v = 0; v < config::kWeightedVariants; ++v) {
        // Unmatched requests (route "") have no variant: they are counted under blue's slot
        // and shown with variant="".
        if (name.empty() && v != 0) continue;
        RouteMetrics::Totals t = m->totals(static_cast<config::Variant>(v));
        if (!name.empty() && !variantShown(route, t, v)) continue;
        series.push_back({m.get(), route, v, t});
      }
    }
  }
  auto labels = [&](const Series& x) {
    out.append("route=\"");
    appendLabel(out, x.metrics->name());
    out.append("\",variant=\"");
    if (!x.metrics->name().empty()) out.append(config::kVariantNames[x.variant]);
    out.append("\"");
  };

  appendHeader(out, "switchyard_requests_total", "counter",
               "Responses sent to clients, by route, variant and status class.");
  for (const Series& x : series) {
    for (size_t c = 0; c < 5; ++c) {
      if (c == 0 && x.totals.responses[0] == 0) continue;  // 1xx only when seen (101)
      out.append("switchyard_requests_total{");
      labels(x);
      out.append(",code=\"").append(kClasses[c]).append("\"} ");
      out.append(std::to_string(x.totals.responses[c])).append("\n");
    }
  }

  appendHeader(out, "switchyard_requests_by_protocol_total", "counter",
               "Requests (HTTP/2: streams) by route, variant and the protocol the client spoke.");
  for (const Series& x : series) {
    for (size_t p = 0; p < kClientProtocols; ++p) {
      out.append("switchyard_requests_by_protocol_total{");
      labels(x);
      out.append(",protocol=\"").append(kClientProtocolNames[p]).append("\"} ");
      out.append(std::to_string(x.totals.protocols[p])).append("\n");
    }
  }

  appendHeader(out, "switchyard_request_duration_seconds", "histogram",
               "Time from the request head to the last response byte, in seconds.");
  for (const Series& x : series) {
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= kDurationBuckets.size(); ++b) {
      cumulative += x.totals.buckets[b];
      out.append("switchyard_request_duration_seconds_bucket{");
      labels(x);
      out.append(",le=\"");
      if (b < kDurationBuckets.size()) {
        appendNumber(out, kDurationBuckets[b]);
      } else {
        out.append("+Inf");
      }
      out.append("\"} ").append(std::to_string(cumulative)).append("\n");
    }
    out.append("switchyard_request_duration_seconds_sum{");
    labels(x);
    out.append("} ");
    appendNumber(out, static_cast<double>(x.totals.duration_sum_us) / 1e6);
    out.append("\nswitchyard_request_duration_seconds_count{");
    labels(x);
    out.append("} ").append(std::to_string(cumulative)).append("\n");
  }

  appendHeader(out, "switchyard_upstream_errors_total", "counter",
               "Upstream failures, by route, variant and kind.");
  for (const Series& x : series) {
    if (x.metrics->name().empty()) continue;
    for (size_t k = 0; k < kUpstreamErrorKinds; ++k) {
      out.append("switchyard_upstream_errors_total{");
      labels(x);
      out.append(",kind=\"").append(kErrorKinds[k]).append("\"} ");
      out.append(std::to_string(x.totals.upstream_errors[k])).append("\n");
    }
  }

  // SPEC §10: only abnormal ends, and only combinations that counted (see prometheus.h).
  appendHeader(out, "switchyard_requests_terminated_total", "counter",
               "Exchanges that did not end normally, by route, variant, source and phase.");
  for (const Series& x : series) {
    for (size_t src = 0; src < kTerminationSources; ++src) {
      const auto source = static_cast<TerminationSource>(src);
      if (source == TerminationSource::None) continue;
      for (size_t ph = 0; ph < kTerminationPhases; ++ph) {
        const uint64_t n = x.totals.terminations[src][ph];
        if (n == 0) continue;
        out.append("switchyard_requests_terminated_total{");
        labels(x);
        out.append(",source=\"").append(terminationSourceName(source));
        out.append("\",phase=\"").append(terminationPhaseName(static_cast<TerminationPhase>(ph)));
        out.append("\"} ").append(std::to_string(n)).append("\n");
      }
    }
  }

  static constexpr const char* kShadowResultNames[] = {"sent", "completed", "failed", "dropped",
                                                       "skipped"};
  static constexpr const char* kMismatchNames[] = {"status", "body", "headers"};
  // Routes with a shadow now, or with shadow counts from before a reload.
  std::vector<std::pair<const RouteMetrics*, RouteMetrics::ShadowTotals>> shadows;
  if (s.registry != nullptr) {
    for (const auto& [name, m] : s.registry->routes()) {
      if (name.empty()) continue;
      const config::Route* route = findRoute(s.snapshot, name);
      RouteMetrics::ShadowTotals t = m->shadowTotals();
      bool any = route != nullptr && route->shadow.has_value();
      for (uint64_t n : t.results) any = any || n != 0;
      if (any) shadows.emplace_back(m.get(), t);
    }
  }
  appendHeader(out, "switchyard_shadow_requests_total", "counter",
               "Mirrored requests, by route and result.");
  for (const auto& [m, t] : shadows) {
    for (size_t i = 0; i < kShadowResults; ++i) {
      out.append("switchyard_shadow_requests_total{route=\"");
      appendLabel(out, m->name());
      out.append("\",result=\"").append(kShadowResultNames[i]).append("\"} ");
      out.append(std::to_string(t.results[i])).append("\n");
    }
  }
  appendHeader(out, "switchyard_shadow_mismatches_total", "counter",
               "Shadow responses that differed from the primary's, by route and kind.");
  for (const auto& [m, t] : shadows) {
    for (size_t i = 0; i < kMismatchKinds; ++i) {
      out.append("switchyard_shadow_mismatches_total{route=\"");
      appendLabel(out, m->name());
      out.append("\",kind=\"").append(kMismatchNames[i]).append("\"} ");
      out.append(std::to_string(t.mismatches[i])).append("\n");
    }
  }

  appendHeader(out, "switchyard_config_reloads_total", "counter",
               "Configuration reloads, by result.");
  out.append("switchyard_config_reloads_total{result=\"success\"} ")
      .append(std::to_string(s.reloads_success))
      .append("\nswitchyard_config_reloads_total{result=\"failure\"} ")
      .append(std::to_string(s.reloads_failure))
      .append("\n");
  appendHeader(out, "switchyard_config_generation", "gauge",
               "Generation of the configuration in use (1 = the one loaded at start).");
  out.append("switchyard_config_generation ").append(std::to_string(s.generation)).append("\n");

  appendHeader(out, "switchyard_route_weight", "gauge", "Configured weight per route and variant.");
  if (s.snapshot != nullptr) {
    for (const config::Route& r : s.snapshot->routes) {
      for (size_t v = 0; v < config::kWeightedVariants; ++v) {
        out.append("switchyard_route_weight{route=\"");
        appendLabel(out, r.name);
        out.append("\",variant=\"").append(config::kVariantNames[v]).append("\"} ");
        appendNumber(out, r.weights[v]);
        out.append("\n");
      }
    }
  }

  appendHeader(out, "switchyard_connections_active", "gauge", "Open connections, by side.");
  out.append("switchyard_connections_active{side=\"client\"} ")
      .append(std::to_string(s.client_connections))
      .append("\nswitchyard_connections_active{side=\"upstream\"} ")
      .append(std::to_string(s.upstream_connections))
      .append("\n");

  appendHeader(out, "switchyard_upstream_healthy", "gauge",
               "1 when the server is considered healthy, else 0.");
  if (s.snapshot != nullptr) {
    for (const auto& [name, pool] : s.snapshot->pools) {
      for (const config::SocketAddress& a : pool.servers) {
        out.append("switchyard_upstream_healthy{pool=\"");
        appendLabel(out, name);
        out.append("\",server=\"");
        appendLabel(out, a.text);
        const ServerHealth* h = s.health != nullptr ? s.health->find(name, a.text) : nullptr;
        out.append(h == nullptr || h->healthy() ? "\"} 1\n" : "\"} 0\n");
      }
    }
  }

  appendHeader(out, "switchyard_http2_goaways_total", "counter",
               "HTTP/2 connections closed with GOAWAY(ENHANCE_YOUR_CALM), by the budget the "
               "client went beyond.");
  if (s.registry != nullptr) {
    const std::array<uint64_t, kHttp2AbuseReasons> goaways = s.registry->http2GoawayTotals();
    for (size_t r = 0; r < kHttp2AbuseReasons; ++r) {
      out.append("switchyard_http2_goaways_total{reason=\"")
          .append(kHttp2AbuseNames[r])
          .append("\"} ")
          .append(std::to_string(goaways[r]))
          .append("\n");
    }
  }

  appendHeader(out, "switchyard_proxy_protocol_errors_total", "counter",
               "Connections closed because their PROXY protocol header was missing, invalid, "
               "too large or truncated, by listener and reason.");
  if (s.registry != nullptr) {
    std::map<std::string, ProxyProtocolErrors::Counts> errors =
        s.registry->proxyProtocolErrors().totals();
    if (s.snapshot != nullptr) {  // listeners with nothing refused yet show zeros
      for (const config::Listener& l : s.snapshot->listeners) {
        if (l.proxy_protocol) errors.try_emplace(l.address.text);
      }
    }
    for (const auto& [listener, counts] : errors) {
      for (size_t r = 0; r < kProxyProtocolErrors; ++r) {
        out.append("switchyard_proxy_protocol_errors_total{listener=\"");
        appendLabel(out, listener);
        out.append("\",reason=\"")
            .append(kProxyProtocolErrorNames[r])
            .append("\"} ")
            .append(std::to_string(counts[r]))
            .append("\n");
      }
    }
  }

  appendHeader(out, "switchyard_access_log_dropped_lines_total", "counter",
               "Access-log lines dropped because the log writer could not keep up.");
  out.append("switchyard_access_log_dropped_lines_total ")
      .append(std::to_string(s.access_log_dropped_lines))
      .append("\n");

  renderRollouts(out, s.rollouts);
  renderFleetRollouts(out, s.rollouts, s.registry);
}

}  // namespace sy::proxy
