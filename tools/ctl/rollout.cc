// `switchyard-ctl rollout`: the /rollouts JSON (contract: SPEC §11 and the engine's admin
// handler) as tables, and `preview`, which counts with the proxy's own splitter what each stage
// of a rollout does to the keys.

#include "tools/ctl/rollout.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <nlohmann/json.hpp>

#include "proxy/routing/splitter.h"
#include "tools/ctl/explain.h"
#include "tools/ctl/format.h"

namespace sy::ctl {
namespace {

using Json = nlohmann::json;
constexpr size_t kN = config::kWeightedVariants;

const Json& member(const Json& j, const char* key) {
  static const Json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// A compact number: "1.2", "150", "0.008", "1,412" (three significant digits below 1000).
std::string numText(double x) {
  if (!std::isfinite(x)) return x > 0 ? "inf" : x < 0 ? "-inf" : "nan";
  if (std::fabs(x) >= 1000 && std::fabs(x) < 1e15) {
    const double r = std::round(std::fabs(x));
    return (x < 0 ? "-" : "") + groupDigits(static_cast<uint64_t>(r));
  }
  return strFormat("%.3g", x);
}

// A scalar as text; "-" when absent, null or of an unexpected type.
std::string text(const Json& j, const char* key) {
  const Json& v = member(j, key);
  if (v.is_string()) return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_unsigned()) return groupDigits(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) return numText(v.get<double>());
  return "-";
}

std::string str(const Json& j, const char* key) {
  const Json& v = member(j, key);
  return v.is_string() ? v.get<std::string>() : std::string();
}

std::string percentText(const Json& j, const char* key) {
  const Json& v = member(j, key);
  return v.is_number() ? percent(v.get<double>() / 100.0) : "-";
}

std::string stageText(const Json& r) {
  const Json& stages = member(r, "stages");
  return text(r, "stage") + "/" + (stages.is_array() ? std::to_string(stages.size()) : "-");
}

std::string uintText(const Json& j, const char* key) {
  const Json& v = member(j, key);
  if (v.is_number_unsigned()) return groupDigits(v.get<uint64_t>());
  if (v.is_number()) return numText(v.get<double>());
  return "-";
}

// When the engine acts next by itself, or what it waits for.
std::string nextText(const Json& r) {
  const std::string next = str(r, "next_transition");
  const std::string waiting = str(r, "waiting_for");
  std::string out;
  if (!next.empty()) {
    out = next;
    if (waiting == "hold") out += " (hold ends)";
    if (waiting == "start") out += " (start)";
  }
  if (!waiting.empty() && ((waiting != "hold" && waiting != "start") || next.empty())) {
    if (!out.empty()) out += ", ";
    out += "waiting for " + waiting;
  }
  return out.empty() ? "-" : out;
}

std::string variantText(const Json& r) { return text(r, "variant") + " vs " + text(r, "baseline"); }

std::string headline(const Json& r) { return text(r, "route") + " (" + text(r, "id") + ")"; }

// "1% 10m -> [5% 30m] -> 25% 1h gate -> 100% 1h", the current stage in brackets.
std::string planText(const Json& r) {
  const Json& stages = member(r, "stages");
  if (!stages.is_array() || stages.empty()) return "-";
  const Json& cur = member(r, "stage");
  const int64_t current = cur.is_number_integer() ? cur.get<int64_t>() : 0;
  std::string out;
  int64_t i = 0;
  for (const Json& s : stages) {
    ++i;
    std::string step = percentText(s, "percent");
    // "1.00%" -> "1%": the plan reads like the config.
    const Json& p = member(s, "percent");
    if (p.is_number()) step = weightText(p.get<double>()) + "%";
    const Json& hold = member(s, "hold_ms");
    if (hold.is_number_unsigned()) step += " " + durationText(hold.get<uint64_t>());
    if (member(s, "gate").is_boolean() && member(s, "gate").get<bool>()) step += " gate";
    if (i == current) step = "[" + step + "]";
    if (!out.empty()) out += " -> ";
    out += step;
  }
  return out;
}

std::string checksTable(const Json& checks) {
  Table t("lrrrll");
  t.row({"CHECK", "EVIDENCE", "THRESHOLD", "EVIDENCE/THRESHOLD", "FAILED", "SUMMARY"});
  for (const Json& c : checks) {
    std::string ratio = "-";
    const Json& rj = member(c, "ratio");
    const Json& ej = member(c, "evidence");
    const Json& tj = member(c, "threshold");
    if (rj.is_number()) {
      ratio = numText(rj.get<double>());
    } else if (ej.is_number() && tj.is_number() && tj.get<double>() > 0) {
      ratio = numText(ej.get<double>() / tj.get<double>());
    }
    const Json& failed = member(c, "failed");
    t.row({text(c, "name"), text(c, "evidence"), text(c, "threshold"), ratio,
           failed.is_boolean() ? (failed.get<bool>() ? "FAILED" : "no") : "-", str(c, "summary")});
  }
  return t.render("  ");
}

constexpr size_t kHistoryShown = 5;

std::string historyTable(const Json& history) {
  Table t("lllrrll");
  t.row({"AT", "EVENT", "STATE", "STAGE", "PERCENT", "REASON"});
  size_t shown = 0;
  for (auto it = history.rbegin(); it != history.rend() && shown < kHistoryShown; ++it, ++shown) {
    const Json& e = *it;
    t.row({text(e, "at"), text(e, "event"), text(e, "state"), text(e, "stage"),
           percentText(e, "percent"), str(e, "reason")});
  }
  return t.render("  ");
}

std::string rolloutDetails(const Json& r) {
  std::string out = "\n" + headline(r) + ": " + variantText(r) + ", " + text(r, "state") + "\n";
  out += wrapText(planText(r), "  stages    ", 12);
  std::string analysis;
  const Json& interval = member(r, "interval_ms");
  const Json& warmup = member(r, "warmup_ms");
  if (interval.is_number_unsigned()) {
    analysis += "judged every " + durationText(interval.get<uint64_t>());
  }
  if (warmup.is_number_unsigned()) {
    analysis += (analysis.empty() ? "" : ", ") + std::string("warm-up ") +
                durationText(warmup.get<uint64_t>());
  }
  if (member(r, "confidence").is_number()) {
    analysis += (analysis.empty() ? "" : ", ") + std::string("confidence ") + text(r, "confidence");
  }
  if (member(r, "intervals").is_number()) {
    analysis += (analysis.empty() ? "" : ", ") + text(r, "intervals") + " intervals judged";
  }
  if (member(r, "on_failure").is_string()) {
    analysis +=
        (analysis.empty() ? "" : "; ") + std::string("on failure: ") + text(r, "on_failure");
  }
  if (!analysis.empty()) out += wrapText(analysis, "  analysis  ", 12);
  // SPEC §14: judged through Prometheus, where this replica stands with the fleet.
  const Json& fleet = member(r, "fleet");
  if (fleet.is_object()) {
    std::string line = "through Prometheus at " + text(fleet, "prometheus_url") + ", lag " +
                       (member(fleet, "lag_ms").is_number_unsigned()
                            ? durationText(member(fleet, "lag_ms").get<uint64_t>())
                            : std::string("-")) +
                       "; " + uintText(fleet, "intervals_evaluated") + " of " +
                       uintText(fleet, "intervals_due") + " due intervals evaluated";
    const Json& caught_up = member(fleet, "caught_up");
    if (caught_up.is_boolean() && !caught_up.get<bool>()) line += ", catching up";
    const std::string hold = str(r, "hold_reason");
    if (!hold.empty()) line += "; " + hold;
    out += wrapText(line, "  fleet     ", 12);
  }
  out += "  evidence  " + uintText(r, "seen") + " judged requests in this stage, " +
         uintText(r, "needed") + " needed\n";
  const Json& checks = member(r, "checks");
  if (checks.is_array() && !checks.empty()) {
    out += checksTable(checks);
  } else {
    out += "  (no checks evaluated yet)\n";
  }
  const std::string verdict = str(r, "verdict");
  out += wrapText(verdict.empty() ? "-" : verdict, "  verdict   ", 12);
  const Json& history = member(r, "history");
  if (history.is_array() && !history.empty()) {
    out += history.size() > kHistoryShown
               ? strFormat("  history (latest %zu of %zu, newest first)\n", kHistoryShown,
                           history.size())
               : std::string("  history (newest first)\n");
    out += historyTable(history);
  }
  return out;
}

bool unreserved(unsigned char c) {
  return std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~';
}

double fraction(uint64_t n, uint64_t total) {
  return total == 0 ? 0.0 : static_cast<double>(n) / static_cast<double>(total);
}

}  // namespace

bool isRolloutAction(std::string_view word) {
  return std::find(kRolloutActions.begin(), kRolloutActions.end(), word) != kRolloutActions.end();
}

std::string rolloutPath(std::string_view route, std::string_view action) {
  std::string out = "/rollouts";
  if (route.empty()) return out;
  out += '/';
  for (const char ch : route) {
    const auto c = static_cast<unsigned char>(ch);
    out += unreserved(c) ? std::string(1, ch) : strFormat("%%%02X", c);
  }
  if (!action.empty()) {
    out += '/';
    out += action;
  }
  return out;
}

std::string reasonBody(std::string_view reason) {
  Json j = Json::object();
  j["reason"] = std::string(reason);
  // Invalid UTF-8 in an argument is replaced rather than thrown on.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string durationText(uint64_t ms) {
  if (ms == 0) return "0s";
  if (ms % 1000 != 0) {
    return ms < 1000 ? std::to_string(ms) + "ms"
                     : weightText(static_cast<double>(ms) / 1000.0) + "s";
  }
  uint64_t s = ms / 1000;
  const uint64_t h = s / 3600;
  const uint64_t m = s % 3600 / 60;
  s %= 60;
  std::string out;
  if (h > 0) out += std::to_string(h) + "h";
  if (m > 0 || (h > 0 && s > 0)) out += std::to_string(m) + "m";
  if (s > 0) out += std::to_string(s) + "s";
  return out;
}

std::variant<std::string, CtlError> formatRolloutStatus(std::string_view json_text) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) j = Json::array({j});
  if (!j.is_array()) {
    return failure("the admin endpoint's /rollouts answer is not JSON (an array or an object):\n" +
                   std::string(json_text.substr(0, 2000)));
  }
  if (j.empty()) return std::string("no rollouts (no route has a [routes.rollout] block)\n");
  Table t("llllrrllr");
  t.row(
      {"ROUTE", "ROLLOUT", "VARIANT", "STATE", "STAGE", "PERCENT", "SINCE", "NEXT", "SEEN/NEEDED"});
  for (const Json& r : j) {
    t.row({text(r, "route"), text(r, "id"), variantText(r), text(r, "state"), stageText(r),
           percentText(r, "percent"), text(r, "since"), nextText(r),
           uintText(r, "seen") + "/" + uintText(r, "needed")});
  }
  std::string out = "rollouts\n" + t.render("  ");
  for (const Json& r : j) out += rolloutDetails(r);
  return out;
}

std::variant<std::string, CtlError> formatRolloutAction(std::string_view json_text) {
  const Json r = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!r.is_object()) {
    return failure("the admin endpoint's answer is not a JSON object:\n" +
                   std::string(json_text.substr(0, 2000)));
  }
  std::string out = headline(r) + ": " + text(r, "state") + ", stage " + stageText(r) + ", " +
                    percentText(r, "percent") + " of traffic to " + text(r, "variant");
  const std::string next = nextText(r);
  if (next != "-") out += "; next: " + next;
  out += "\n";
  const std::string verdict = str(r, "verdict");
  if (!verdict.empty()) out += wrapText(verdict, "verdict: ", 2);
  return out;
}

std::string rolloutErrorText(std::string_view body) {
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (member(j, "error").is_string()) return member(j, "error").get<std::string>();
  std::string b(body);
  while (!b.empty() && (b.back() == '\n' || b.back() == '\r' || b.back() == ' ')) b.pop_back();
  return b;
}

std::variant<PreviewResult, CtlError> previewRollout(const config::Route& route,
                                                     const PreviewOptions& options) {
  if (!route.rollout) {
    return failure("route \"" + route.name + "\" has no rollout ([routes.rollout] block)");
  }
  const config::Rollout& ro = *route.rollout;
  if (ro.stages.empty()) return failure("route \"" + route.name + "\": the rollout has no stages");
  PreviewResult r;
  r.route = route.name;
  r.salt = std::string(effectiveSalt(route));
  r.id = ro.id;
  r.variant = ro.variant;
  r.baseline = ro.baseline;
  r.keys = options.keys;
  r.seed = options.seed;
  for (size_t i = 0; i < kN; ++i) r.used[i] = route.pools[i] != nullptr;
  r.used[static_cast<size_t>(ro.variant)] = true;

  PreviewRow before;
  before.kind = PreviewRow::Kind::Before;
  before.weights = proxy::weightsWithShare(route, ro.variant, 0.0);
  r.rows.push_back(before);
  for (size_t i = 0; i < ro.stages.size(); ++i) {
    PreviewRow row;
    row.kind = PreviewRow::Kind::Stage;
    row.stage = i + 1;
    row.percent = ro.stages[i].percent;
    row.hold_ms = ro.stages[i].hold_ms;
    row.manual_gate = ro.stages[i].manual_gate;
    row.weights = proxy::weightsWithShare(route, ro.variant, row.percent);
    r.rows.push_back(row);
  }
  PreviewRow rollback;
  rollback.kind = PreviewRow::Kind::Rollback;
  rollback.weights = proxy::weightsWithShare(route, ro.variant, 0.0);
  r.rows.push_back(rollback);

  const size_t variant = static_cast<size_t>(ro.variant);
  SimulationKeys keys(options.seed);
  for (uint64_t k = 0; k < options.keys; ++k) {
    const std::string key = keys.next();
    size_t first = 0;
    size_t prev = 0;
    for (size_t i = 0; i < r.rows.size(); ++i) {
      PreviewRow& row = r.rows[i];
      const auto v = static_cast<size_t>(proxy::pickWeighted(r.salt, row.weights, key));
      ++row.counts[v];
      if (i == 0) {
        first = v;
      } else if (v != prev) {
        ++row.moves[prev][v];
        ++row.moved;
        if (row.kind == PreviewRow::Kind::Stage && v != variant) ++r.moved_elsewhere;
      }
      if (row.kind == PreviewRow::Kind::Rollback && v != first) ++r.not_returned;
      prev = v;
    }
  }
  return r;
}

std::string formatPreview(const PreviewResult& r) {
  const char* variant = config::variantName(r.variant);
  std::string out = strFormat(
      "route %s: rollout %s of %s (baseline %s), %s random keys (seed %llu), salt "
      "\"%s\"\n",
      r.route.c_str(), r.id.c_str(), variant, config::variantName(r.baseline),
      groupDigits(r.keys).c_str(), static_cast<unsigned long long>(r.seed), r.salt.c_str());
  out += wrapText(
      "each row: the weights at the stage's share and the share of keys each variant "
      "gets; moved: keys whose variant differs from the row above",
      "", 0);
  out += "\n";
  std::string align = "lrlll";
  std::vector<std::string> head = {"stage", "percent", "hold", "gate", "weights"};
  for (size_t i = 0; i < kN; ++i) {
    if (!r.used[i]) continue;
    head.push_back(config::kVariantNames[i]);
    align += 'r';
  }
  head.push_back("moved");
  head.push_back("from -> to");
  align += "rl";
  Table t(align);
  t.row(head);
  for (const PreviewRow& row : r.rows) {
    std::vector<std::string> cells;
    switch (row.kind) {
      case PreviewRow::Kind::Before: cells.push_back("before"); break;
      case PreviewRow::Kind::Stage: cells.push_back(std::to_string(row.stage)); break;
      case PreviewRow::Kind::Rollback: cells.push_back("rollback"); break;
    }
    cells.push_back(percent(row.percent / 100.0));
    cells.push_back(row.kind == PreviewRow::Kind::Stage ? durationText(row.hold_ms) : "");
    cells.push_back(row.manual_gate ? "manual" : "");
    std::string weights;
    for (size_t i = 0; i < kN; ++i) {
      if (!r.used[i]) continue;
      if (!weights.empty()) weights += " ";
      weights += std::string(config::kVariantNames[i]) + "=" + weightText(row.weights[i]);
    }
    cells.push_back(weights);
    for (size_t i = 0; i < kN; ++i) {
      if (r.used[i]) cells.push_back(percent(fraction(row.counts[i], r.keys)));
    }
    if (row.kind == PreviewRow::Kind::Before) {
      cells.push_back("");
      cells.push_back("");
    } else {
      cells.push_back(groupDigits(row.moved) + " (" + percent(fraction(row.moved, r.keys)) + ")");
      std::string moves;
      for (size_t from = 0; from < kN; ++from) {
        for (size_t to = 0; to < kN; ++to) {
          if (row.moves[from][to] == 0) continue;
          if (!moves.empty()) moves += ", ";
          moves += strFormat("%s -> %s %s", config::kVariantNames[from], config::kVariantNames[to],
                             groupDigits(row.moves[from][to]).c_str());
        }
      }
      cells.push_back(moves.empty() ? "-" : moves);
    }
    t.row(std::move(cells));
  }
  out += t.render("  ");

  out += "\n";
  if (r.moved_elsewhere == 0) {
    out += strFormat(
        "as the share rises, keys only move into %s, never out of it or between the "
        "others\n",
        variant);
  } else {
    out += strFormat(
        "UNEXPECTED: %s key moves between stages did not go into %s (the splitter "
        "is broken)\n",
        groupDigits(r.moved_elsewhere).c_str(), variant);
  }
  if (r.not_returned == 0) {
    out += strFormat(
        "on a rollback (share 0) every key returns to the variant it had before the "
        "rollout: %s of %s\n",
        groupDigits(r.keys).c_str(), groupDigits(r.keys).c_str());
  } else {
    out += strFormat(
        "UNEXPECTED: after a rollback %s keys have another variant than before the "
        "rollout (the splitter is broken)\n",
        groupDigits(r.not_returned).c_str());
  }
  return out;
}

}  // namespace sy::ctl
