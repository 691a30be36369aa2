#include "proxy/rollout/prometheus_api.h"

#include <event2/http.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/c_deleter.h"
#include "proxy/observe/latency_buckets.h"

namespace sy::proxy {
namespace {

constexpr std::array<const char*, 5> kCommandNames = {"pause", "resume", "promote", "abort",
                                                      "retry"};

// A count from a query: rounded, NaN and negatives 0.
uint64_t rounded(double v) {
  if (!std::isfinite(v) || v <= 0) return 0;
  return static_cast<uint64_t>(std::llround(v));
}

std::string encoded(std::string_view text) {
  std::unique_ptr<char, CDeleter<&free>> out(
      evhttp_uriencode(text.data(), static_cast<ev_ssize_t>(text.size()), 0));
  return out ? std::string(out.get()) : std::string();
}

// One series of the evidence query, pinned or not: per replica, the counter at the interval's
// end minus the counter one interval earlier (both the latest sample at or before that time);
// the whole counter for a replica whose counting began within the interval (it started or
// restarted: its counter went down or did not exist); then summed. `fresh` selects those
// replicas.
std::string tagged(const char* tag, const char* by, const std::string& metric,
                   const std::string& selector, const std::string& window, const std::string& at,
                   const std::string& fresh) {
  const std::string now = metric + selector + at;
  return std::string("label_replace(sum") + by + " ((" + now + " - " + metric + selector +
         " offset " + window + at + ") >= 0 or (" + now + " and ignoring(variant, le) " + fresh +
         ")), \"series\", \"" + tag + "\", \"\", \"\")";
}

double parseValue(const nlohmann::json& v) {
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    return std::strtod(s.c_str(), nullptr);  // also "NaN", "+Inf", "-Inf"
  }
  if (v.is_number()) return v.get<double>();
  return std::nan("");
}

// [time, "value"] -> (ms, value); false when it is not that shape.
bool parsePoint(const nlohmann::json& p, std::pair<int64_t, double>& out) {
  if (!p.is_array() || p.size() != 2 || !p[0].is_number()) return false;
  out = {static_cast<int64_t>(std::llround(p[0].get<double>() * 1000.0)), parseValue(p[1])};
  return true;
}

std::optional<uint64_t> parseUnsigned(const std::string& s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

}  // namespace

std::string latencyLe(size_t b) {
  const uint64_t us = latencyBucketUpperUs(b);
  char buf[40];
  snprintf(buf, sizeof(buf), "%llu.%06llu", static_cast<unsigned long long>(us / 1000000),
           static_cast<unsigned long long>(us % 1000000));
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

std::string promqlString(std::string_view value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string rolloutSelector(const std::string& route, const std::string& id) {
  return "{route=" + promqlString(route) + ",rollout=" + promqlString(id) + "}";
}

std::string promDuration(uint64_t ms) {
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string promTime(int64_t unix_ms) {
  char buf[40];
  const bool negative = unix_ms < 0;
  const uint64_t a = negative ? static_cast<uint64_t>(-unix_ms) : static_cast<uint64_t>(unix_ms);
  snprintf(buf, sizeof(buf), "%s%llu.%03llu", negative ? "-" : "",
           static_cast<unsigned long long>(a / 1000), static_cast<unsigned long long>(a % 1000));
  return buf;
}

std::string evidenceQuery(const std::string& route, const std::string& id, uint64_t interval_ms,
                          std::optional<int64_t> at_ms) {
  const std::string sel = rolloutSelector(route, id);
  const std::string w = promDuration(interval_ms);
  const std::string at = at_ms ? " @ " + promTime(*at_ms) : "";
  // The interval's start: a literal when pinned, time() - interval at each step of a range.
  const std::string begin = at_ms ? promTime(*at_ms - static_cast<int64_t>(interval_ms))
                                  : "time() - " + promTime(static_cast<int64_t>(interval_ms));
  const std::string fresh =
      "(switchyard_rollout_counted_since_seconds" + sel + at + " >= " + begin + ")";
  return tagged("judged", " by (variant)", "switchyard_rollout_judged_requests_total", sel, w, at,
                fresh) +
         " or " +
         tagged("errors", " by (variant)", "switchyard_rollout_judged_errors_total", sel, w, at,
                fresh) +
         " or " +
         tagged("latency", " by (variant, le)", "switchyard_rollout_latency_seconds_bucket", sel, w,
                at, fresh) +
         " or " +
         tagged("shadow_compared", "", "switchyard_rollout_shadow_compared_total", sel, w, at,
                fresh) +
         " or " +
         tagged("shadow_mismatched", "", "switchyard_rollout_shadow_mismatched_total", sel, w, at,
                fresh);
}

std::string startQuery(const std::string& route, const std::string& id, uint64_t lookback_ms) {
  return "min(min_over_time(switchyard_rollout_start_seconds" + rolloutSelector(route, id) + "[" +
         promDuration(lookback_ms) + "]))";
}

std::string eventsQuery(const std::string& route, const std::string& id, uint64_t lookback_ms) {
  return "last_over_time(switchyard_rollout_operator_event_time_seconds" +
         rolloutSelector(route, id) + "[" + promDuration(lookback_ms) + "])";
}

std::string instantQueryTarget(std::string_view query, int64_t time_ms) {
  return "/api/v1/query?query=" + encoded(query) + "&time=" + promTime(time_ms);
}

std::string rangeQueryTarget(std::string_view query, int64_t start_ms, int64_t end_ms,
                             uint64_t step_ms) {
  return "/api/v1/query_range?query=" + encoded(query) + "&start=" + promTime(start_ms) +
         "&end=" + promTime(end_ms) + "&step=" + promTime(static_cast<int64_t>(step_ms));
}

PromAnswer parsePromAnswer(int http_status, std::string_view body) {
  PromAnswer a;
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    a.error = http_status == 200 ? "the answer is not JSON"
                                 : "HTTP " + std::to_string(http_status) + " (not a JSON answer)";
    return a;
  }
  const auto status = j.find("status");
  if (status == j.end() || !status->is_string() || *status != "success") {
    const auto err = j.find("error");
    a.error = "HTTP " + std::to_string(http_status) + ": " +
              (err != j.end() && err->is_string() ? err->get<std::string>()
                                                  : std::string("status is not success"));
    return a;
  }
  const auto data = j.find("data");
  if (data == j.end() || !data->is_object()) {
    a.error = "the answer has no data";
    return a;
  }
  // Never value(): it throws on a key of another type, and this is network input.
  const auto type_field = data->find("resultType");
  const std::string type = type_field != data->end() && type_field->is_string()
                               ? type_field->get<std::string>()
                               : std::string();
  const auto result = data->find("result");
  if (result == data->end()) {
    a.error = "the answer has no result";
    return a;
  }
  if (type == "scalar") {
    PromSeries s;
    std::pair<int64_t, double> p;
    if (parsePoint(*result, p)) s.points.push_back(p);
    a.series.push_back(std::move(s));
    a.ok = true;
    return a;
  }
  if ((type != "vector" && type != "matrix") || !result->is_array()) {
    a.error = "unexpected result type \"" + type + "\"";
    return a;
  }
  for (const nlohmann::json& item : *result) {
    if (!item.is_object()) continue;
    PromSeries s;
    if (auto m = item.find("metric"); m != item.end() && m->is_object()) {
      for (const auto& [k, v] : m->items()) {
        if (v.is_string()) s.labels.emplace(k, v.get<std::string>());
      }
    }
    std::pair<int64_t, double> p;
    if (auto v = item.find("value"); v != item.end() && parsePoint(*v, p)) s.points.push_back(p);
    if (auto vs = item.find("values"); vs != item.end() && vs->is_array()) {
      for (const nlohmann::json& point : *vs) {
        if (parsePoint(point, p)) s.points.push_back(p);
      }
    }
    a.series.push_back(std::move(s));
  }
  a.ok = true;
  return a;
}

IntervalEvidence evidenceFromSeries(const std::vector<std::pair<const PromLabels*, double>>& series,
                                    config::Variant variant, config::Variant baseline) {
  IntervalEvidence e;
  const std::string vname = config::variantName(variant);
  const std::string bname = config::variantName(baseline);
  // Cumulative bucket counts by analysis bucket (kLatencyBuckets = +Inf), per arm.
  std::map<size_t, uint64_t> cumulative[2];
  auto label = [](const PromLabels& l, const char* key) -> std::string {
    auto it = l.find(key);
    return it == l.end() ? std::string() : it->second;
  };
  for (const auto& [labels, value] : series) {
    const std::string tag = label(*labels, "series");
    const std::string arm = label(*labels, "variant");
    const uint64_t n = rounded(value);
    if (tag == "shadow_compared") {
      e.shadow_compared = n;
      continue;
    }
    if (tag == "shadow_mismatched") {
      e.shadow_mismatched = n;
      continue;
    }
    const int side = arm == vname ? 0 : arm == bname ? 1 : -1;
    if (side < 0) continue;
    ArmCounts& counts = side == 0 ? e.variant : e.baseline;
    if (tag == "judged") {
      counts.requests = n;
    } else if (tag == "errors") {
      counts.errors = n;
    } else if (tag == "latency") {
      const std::string le = label(*labels, "le");
      size_t b = kLatencyBuckets;
      if (le != "+Inf") {
        char* end = nullptr;
        const double seconds = std::strtod(le.c_str(), &end);
        if (end == le.c_str() || !std::isfinite(seconds) || seconds < 0) continue;
        b = latencyBucket(static_cast<uint64_t>(std::llround(seconds * 1e6)));
      }
      cumulative[side][b] = n;
    }
  }
  for (int side = 0; side < 2; ++side) {
    LatencyHistogram& h = side == 0 ? e.variant_latency : e.baseline_latency;
    uint64_t below = 0;  // the largest cumulative count so far (non-decreasing in le)
    for (const auto& [b, count] : cumulative[side]) {
      const uint64_t c = std::max(count, below);
      // +Inf: the slower-than-the-last-bucket requests go just above it.
      const size_t at = b < kLatencyBuckets ? b : std::min(kExportedLatencyLast + 1, b - 1);
      h[at] += c - below;
      below = c;
    }
  }
  e.variant.errors = std::min(e.variant.errors, e.variant.requests);
  e.baseline.errors = std::min(e.baseline.errors, e.baseline.requests);
  e.shadow_mismatched = std::min(e.shadow_mismatched, e.shadow_compared);
  return e;
}

std::map<int64_t, IntervalEvidence> evidenceByTime(const PromAnswer& answer,
                                                   config::Variant variant,
                                                   config::Variant baseline) {
  std::map<int64_t, std::vector<std::pair<const PromLabels*, double>>> by_time;
  for (const PromSeries& s : answer.series) {
    for (const auto& [t, v] : s.points) by_time[t].emplace_back(&s.labels, v);
  }
  std::map<int64_t, IntervalEvidence> out;
  for (const auto& [t, series] : by_time) {
    out.emplace(t, evidenceFromSeries(series, variant, baseline));
  }
  return out;
}

int64_t intervalEndMs(int64_t start_ms, uint64_t interval_ms, uint64_t k) {
  return start_ms + static_cast<int64_t>(k * interval_ms);
}

uint64_t evaluableIntervals(int64_t now_ms, int64_t start_ms, uint64_t interval_ms,
                            uint64_t lag_ms) {
  if (interval_ms == 0) return 0;
  const int64_t since = now_ms - static_cast<int64_t>(lag_ms) - start_ms;
  return since <= 0 ? 0 : static_cast<uint64_t>(since) / interval_ms;
}

bool fleetEventBefore(const FleetEvent& a, const FleetEvent& b) {
  if (a.slot != b.slot) return a.slot < b.slot;
  if (a.at_ms != b.at_ms) return a.at_ms < b.at_ms;
  if (a.replica != b.replica) return a.replica < b.replica;
  return a.seq < b.seq;
}

const char* commandName(RolloutCommand command) {
  return kCommandNames[static_cast<size_t>(command)];
}

std::optional<RolloutCommand> parseCommand(std::string_view name) {
  for (size_t i = 0; i < kCommandNames.size(); ++i) {
    if (name == kCommandNames[i]) return static_cast<RolloutCommand>(i);
  }
  return std::nullopt;
}

std::vector<FleetEvent> eventsFromAnswer(const PromAnswer& answer) {
  std::vector<FleetEvent> out;
  for (const PromSeries& s : answer.series) {
    if (s.points.empty() || !std::isfinite(s.points.back().second)) continue;
    auto get = [&](const char* key) -> std::string {
      auto it = s.labels.find(key);
      return it == s.labels.end() ? std::string() : it->second;
    };
    FleetEvent e;
    e.replica = get("replica");
    const std::optional<uint64_t> seq = parseUnsigned(get("seq"));
    const std::optional<uint64_t> slot = parseUnsigned(get("slot"));
    const std::optional<RolloutCommand> command = parseCommand(get("event"));
    if (e.replica.empty() || !seq || !slot || !command) continue;
    e.seq = *seq;
    e.slot = *slot;
    e.command = *command;
    e.at_ms = static_cast<int64_t>(std::llround(s.points.back().second * 1000.0));
    e.to_last = get("to") == "last";
    e.reason = get("reason");
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), fleetEventBefore);
  return out;
}

}  // namespace sy::proxy
