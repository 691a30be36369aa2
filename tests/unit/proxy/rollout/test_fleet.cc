// Rollouts across replicas (SPEC §14): the PromQL and the HTTP API's answers
// (proxy/rollout/prometheus_api.h), the interval grid, and the fleet's fold (fleet.h): replicas
// fed the same intervals and events, in whatever order they learn of them, end with the same
// history. No sockets, no sleeps: answers are literal JSON, time is passed in.

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <doctest.h>

#include "proxy/rollout/fleet.h"
#include "proxy/rollout/prometheus_api.h"

namespace sy::proxy {
namespace {

constexpr int64_t kSec = 1000;
constexpr int64_t kT0 = 1767225600000;  // 2026-01-01T00:00:00Z

config::Rollout fleetSettings() {
  config::Rollout s;
  s.id = "checkout-2.14";
  s.variant = config::Variant::Canary;
  s.baseline = config::Variant::Blue;
  s.stages = {{10.0, 20 * kSec, false}, {50.0, 20 * kSec, false}, {100.0, 20 * kSec, false}};
  s.analysis.interval_ms = 10 * kSec;
  s.analysis.warmup_ms = 0;
  s.analysis.min_requests = 100;
  s.analysis.prometheus = true;
  s.analysis.prometheus_url = "http://prometheus:9090";
  s.analysis.lag_ms = 30 * kSec;
  return s;
}

IntervalEvidence healthy(uint64_t variant_requests = 200, uint64_t baseline_requests = 1800) {
  IntervalEvidence e;
  e.variant = {variant_requests, 0};
  e.baseline = {baseline_requests, 1};
  return e;
}

std::vector<std::string> events(const RolloutEngine& engine) {
  std::vector<std::string> out;
  for (const RolloutRecord& r : engine.history()) {
    out.push_back(kRolloutEventNames[static_cast<size_t>(r.event)]);
  }
  return out;
}

// Same events at the same times, stages and shares.
void checkSameHistory(const RolloutEngine& a, const RolloutEngine& b) {
  REQUIRE(a.history().size() == b.history().size());
  for (size_t i = 0; i < a.history().size(); ++i) {
    const RolloutRecord& x = a.history()[i];
    const RolloutRecord& y = b.history()[i];
    INFO("record " << i);
    CHECK(x.event == y.event);
    CHECK(x.at_ms == y.at_ms);
    CHECK(x.state == y.state);
    CHECK(x.stage == y.stage);
    CHECK(x.percent == y.percent);
    CHECK(x.reason == y.reason);
  }
  CHECK(a.state() == b.state());
  CHECK(a.stage() == b.stage());
  CHECK(a.percent() == b.percent());
}

// ---- Queries ------------------------------------------------------------------------------------

TEST_CASE("PromQL: label values are quoted and escaped; durations and times") {
  CHECK(promqlString("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(rolloutSelector("shop", "2.14") == "{route=\"shop\",rollout=\"2.14\"}");
  CHECK(promDuration(30000) == "30s");
  CHECK(promDuration(1500) == "1500ms");
  CHECK(promTime(1767225600000) == "1767225600.000");
  CHECK(promTime(1767225600123) == "1767225600.123");
}

TEST_CASE(
    "the evidence query: per replica, the counter at T_k minus one interval earlier, "
    "summed, each series tagged; pinned with @ or not") {
  const std::string q = evidenceQuery("shop", "r1", 30000, kT0);
  const std::string judged =
      "label_replace(sum by (variant) ((switchyard_rollout_judged_requests_total"
      "{route=\"shop\",rollout=\"r1\"} @ 1767225600.000 - "
      "switchyard_rollout_judged_requests_total{route=\"shop\",rollout=\"r1\"} offset 30s @ "
      "1767225600.000) >= 0 or (switchyard_rollout_judged_requests_total"
      "{route=\"shop\",rollout=\"r1\"} @ 1767225600.000 and ignoring(variant, le) "
      "(switchyard_rollout_counted_since_seconds{route=\"shop\",rollout=\"r1\"} @ "
      "1767225600.000 >= 1767225570.000))), \"series\", \"judged\", \"\", \"\")";
  CHECK(q.rfind(judged, 0) == 0);
  for (const char* tag :
       {"\"errors\"", "\"latency\"", "\"shadow_compared\"", "\"shadow_mismatched\""}) {
    CHECK(q.find(tag) != std::string::npos);
  }
  CHECK(q.find("sum by (variant, le) ((switchyard_rollout_latency_seconds_bucket") !=
        std::string::npos);
  CHECK(q.find("increase(") == std::string::npos);
  const std::string range = evidenceQuery("shop", "r1", 30000, std::nullopt);
  CHECK(range.find(" @ ") == std::string::npos);
  CHECK(range.find("offset 30s)") != std::string::npos);
  CHECK(range.find(">= time() - 30.000)") != std::string::npos);
}

TEST_CASE("the start and events queries") {
  CHECK(startQuery("shop", "r1", 86400000) ==
        "min(min_over_time(switchyard_rollout_start_seconds{route=\"shop\",rollout=\"r1\"}"
        "[86400s]))");
  CHECK(eventsQuery("shop", "r1", 600000) ==
        "last_over_time(switchyard_rollout_operator_event_time_seconds"
        "{route=\"shop\",rollout=\"r1\"}[600s])");
}

TEST_CASE("API targets percent-encode the query") {
  CHECK(instantQueryTarget("sum(x{a=\"b c\"}) @ 1", kT0) ==
        "/api/v1/query?query=sum%28x%7Ba%3D%22b%20c%22%7D%29%20%40%201&time=1767225600.000");
  CHECK(rangeQueryTarget("up", kT0, kT0 + 60 * kSec, 30 * kSec) ==
        "/api/v1/query_range?query=up&start=1767225600.000&end=1767225660.000&step=30.000");
}

// ---- Answers ------------------------------------------------------------------------------------

TEST_CASE("answers: vector, matrix, scalar, empty, NaN") {
  const PromAnswer v = parsePromAnswer(200, R"({"status":"success","data":{"resultType":"vector",
      "result":[{"metric":{"variant":"canary","series":"judged"},"value":[1767225600,"42"]},
                {"metric":{"variant":"blue","series":"judged"},"value":[1767225600.5,"NaN"]}]}})");
  REQUIRE(v.ok);
  REQUIRE(v.series.size() == 2);
  CHECK(v.series[0].labels.at("variant") == "canary");
  REQUIRE(v.series[0].points.size() == 1);
  CHECK(v.series[0].points[0].first == kT0);
  CHECK(v.series[0].points[0].second == 42.0);
  CHECK(v.series[1].points[0].first == kT0 + 500);
  CHECK(std::isnan(v.series[1].points[0].second));

  const PromAnswer m = parsePromAnswer(200, R"({"status":"success","data":{"resultType":"matrix",
      "result":[{"metric":{"series":"shadow_compared"},
                 "values":[[1767225600,"1"],[1767225630,"+Inf"]]}]}})");
  REQUIRE(m.ok);
  REQUIRE(m.series.size() == 1);
  REQUIRE(m.series[0].points.size() == 2);
  CHECK(m.series[0].points[1].first == kT0 + 30 * kSec);
  CHECK(std::isinf(m.series[0].points[1].second));

  const PromAnswer s = parsePromAnswer(
      200, R"({"status":"success","data":{"resultType":"scalar","result":[1767225600,"7"]}})");
  REQUIRE(s.ok);
  REQUIRE(s.series.size() == 1);
  CHECK(s.series[0].points.at(0).second == 7.0);

  const PromAnswer e =
      parsePromAnswer(200, R"({"status":"success","data":{"resultType":"vector","result":[]}})");
  CHECK(e.ok);
  CHECK(e.series.empty());
}

TEST_CASE("answers: errors say why") {
  const PromAnswer bad = parsePromAnswer(
      400, R"({"status":"error","errorType":"bad_data","error":"parse error at char 3"})");
  CHECK_FALSE(bad.ok);
  CHECK(bad.error == "HTTP 400: parse error at char 3");
  const PromAnswer html = parsePromAnswer(502, "<html>bad gateway</html>");
  CHECK_FALSE(html.ok);
  CHECK(html.error == "HTTP 502 (not a JSON answer)");
  CHECK_FALSE(parsePromAnswer(200, "").ok);
  CHECK_FALSE(parsePromAnswer(200, R"({"status":"success"})").ok);
  CHECK_FALSE(
      parsePromAnswer(200, R"({"status":"success","data":{"resultType":"string","result":[]}})")
          .ok);
  // Wrong types anywhere are errors or skipped, never an exception.
  CHECK_FALSE(
      parsePromAnswer(200, R"({"status":"success","data":{"resultType":7,"result":[]}})").ok);
  CHECK_FALSE(parsePromAnswer(200, R"({"status":1,"error":2})").ok);
  const PromAnswer odd = parsePromAnswer(200, R"({"status":"success","data":{"resultType":
      "vector","result":[1,{"metric":[],"value":["x",3]},{"metric":{"a":1,"b":"c"},
      "value":[1767225600,{}]},{"values":7}]}})");
  REQUIRE(odd.ok);
  REQUIRE(odd.series.size() == 3);
  CHECK(odd.series[0].points.empty());
  CHECK(odd.series[1].labels == PromLabels{{"b", "c"}});
  CHECK(std::isnan(odd.series[1].points.at(0).second));
}

TEST_CASE("the latency buckets' le labels are the analysis's upper edges in seconds") {
  CHECK(latencyLe(kExportedLatencyFirst) == "0.000063");
  CHECK(latencyLe(kExportedLatencyLast) == "67.108863");
  CHECK(latencyBucketUpperUs(kExportedLatencyFirst) == 63);
  // Every exported bucket maps back to itself.
  for (size_t b = kExportedLatencyFirst; b <= kExportedLatencyLast; ++b) {
    INFO(b);
    CHECK(latencyBucket(static_cast<uint64_t>(std::llround(std::stod(latencyLe(b)) * 1e6))) == b);
  }
}

TEST_CASE(
    "evidence from the query's series: counts rounded, buckets made per-bucket and "
    "monotone, errors capped, other variants ignored") {
  std::vector<PromLabels> labels = {
      {{"series", "judged"}, {"variant", "canary"}},
      {{"series", "errors"}, {"variant", "canary"}},
      {{"series", "judged"}, {"variant", "blue"}},
      {{"series", "errors"}, {"variant", "blue"}},
      {{"series", "judged"}, {"variant", "green"}},
      {{"series", "latency"}, {"variant", "canary"}, {"le", latencyLe(40)}},
      {{"series", "latency"}, {"variant", "canary"}, {"le", latencyLe(41)}},
      {{"series", "latency"}, {"variant", "canary"}, {"le", latencyLe(42)}},
      {{"series", "latency"}, {"variant", "canary"}, {"le", "+Inf"}},
      {{"series", "shadow_compared"}},
      {{"series", "shadow_mismatched"}},
  };
  const std::vector<double> values = {99.6, 3.2, 900, 1000, 77, 10, 9.4, 30, 31, 5, 8};
  std::vector<std::pair<const PromLabels*, double>> series;
  for (size_t i = 0; i < labels.size(); ++i) series.emplace_back(&labels[i], values[i]);
  const IntervalEvidence e =
      evidenceFromSeries(series, config::Variant::Canary, config::Variant::Blue);
  CHECK(e.variant.requests == 100);
  CHECK(e.variant.errors == 3);
  CHECK(e.baseline.requests == 900);
  CHECK(e.baseline.errors == 900);  // capped at the requests
  CHECK(e.variant_latency[40] == 10);
  CHECK(e.variant_latency[41] == 0);  // 9 < 10: made non-decreasing
  CHECK(e.variant_latency[42] == 20);
  CHECK(e.variant_latency[kExportedLatencyLast + 1] == 1);  // +Inf: just above the last edge
  uint64_t baseline_latency = 0;
  for (uint64_t n : e.baseline_latency) baseline_latency += n;
  CHECK(baseline_latency == 0);
  CHECK(e.shadow_compared == 5);
  CHECK(e.shadow_mismatched == 5);  // capped at the comparisons
}

TEST_CASE("a range answer's steps become one interval each, by time") {
  const PromAnswer a = parsePromAnswer(200, R"({"status":"success","data":{"resultType":"matrix",
      "result":[{"metric":{"variant":"canary","series":"judged"},
                 "values":[[1767225610,"5"],[1767225630,"7"]]},
                {"metric":{"variant":"canary","series":"errors"},
                 "values":[[1767225630,"1"]]}]}})");
  REQUIRE(a.ok);
  const auto by_time = evidenceByTime(a, config::Variant::Canary, config::Variant::Blue);
  REQUIRE(by_time.size() == 2);
  CHECK(by_time.at(kT0 + 10 * kSec).variant.requests == 5);
  CHECK(by_time.at(kT0 + 10 * kSec).variant.errors == 0);
  CHECK(by_time.at(kT0 + 30 * kSec).variant.requests == 7);
  CHECK(by_time.at(kT0 + 30 * kSec).variant.errors == 1);
  CHECK_FALSE(by_time.count(kT0 + 20 * kSec));  // no traffic: no entry
}

// ---- Intervals ----------------------------------------------------------------------------------

TEST_CASE("interval k ends at start + k x interval and is due at its end + lag") {
  CHECK(intervalEndMs(kT0, 30 * kSec, 0) == kT0);
  CHECK(intervalEndMs(kT0, 30 * kSec, 3) == kT0 + 90 * kSec);
  CHECK(evaluableIntervals(kT0, kT0, 30 * kSec, 10 * kSec) == 0);
  CHECK(evaluableIntervals(kT0 + 39999, kT0, 30 * kSec, 10 * kSec) == 0);
  CHECK(evaluableIntervals(kT0 + 40 * kSec, kT0, 30 * kSec, 10 * kSec) == 1);
  CHECK(evaluableIntervals(kT0 + 70 * kSec - 1, kT0, 30 * kSec, 10 * kSec) == 1);
  CHECK(evaluableIntervals(kT0 + 70 * kSec, kT0, 30 * kSec, 10 * kSec) == 2);
  CHECK(evaluableIntervals(kT0 - 5 * kSec, kT0, 30 * kSec, 10 * kSec) == 0);  // before start
  CHECK(evaluableIntervals(kT0 + 10 * 3600 * kSec, kT0, 30 * kSec, 10 * kSec) == 1199);
}

// ---- Operator events ----------------------------------------------------------------------------

TEST_CASE("events: read from their series, ordered by slot, time, replica, seq") {
  const PromAnswer a = parsePromAnswer(200, R"({"status":"success","data":{"resultType":"vector",
      "result":[
        {"metric":{"replica":"b","seq":"1","event":"resume","slot":"5","to":"","reason":""},
         "value":[1767225700,"1767225655.5"]},
        {"metric":{"replica":"a","seq":"2","event":"promote","slot":"3","to":"last",
                   "reason":"ship it"},"value":[1767225700,"1767225640"]},
        {"metric":{"replica":"a","seq":"1","event":"pause","slot":"3","to":"","reason":""},
         "value":[1767225700,"1767225635"]},
        {"metric":{"replica":"c","seq":"x","event":"pause","slot":"1"},
         "value":[1767225700,"1767225601"]},
        {"metric":{"replica":"c","seq":"1","event":"explode","slot":"1"},
         "value":[1767225700,"1767225601"]}]}})");
  REQUIRE(a.ok);
  const std::vector<FleetEvent> ev = eventsFromAnswer(a);
  REQUIRE(ev.size() == 3);  // the malformed ones are skipped
  CHECK(ev[0].command == RolloutCommand::Pause);
  CHECK(ev[0].at_ms == kT0 + 35 * kSec);
  CHECK(ev[1].command == RolloutCommand::Promote);
  CHECK(ev[1].to_last);
  CHECK(ev[1].reason == "ship it");
  CHECK(ev[2].command == RolloutCommand::Resume);
  CHECK(ev[2].slot == 5);
  CHECK(ev[2].at_ms == kT0 + 55500);

  FleetEvent x{"a", 1, RolloutCommand::Pause, 3, kT0, false, ""};
  FleetEvent y = x;
  y.replica = "b";
  CHECK(fleetEventBefore(x, y));  // same slot and time: by replica
  y = x;
  y.slot = 2;
  y.at_ms = kT0 + 1000;
  CHECK(fleetEventBefore(y, x));  // the slot first, whatever the time
}

// ---- The fold -----------------------------------------------------------------------------------

TEST_CASE("fleet: records are dated on the interval grid and advance like the local engine") {
  RolloutEngine engine("shop", fleetSettings());
  FleetRollout fleet(fleetSettings(), "a");
  CHECK(engine.state() == RolloutState::Pending);
  fleet.setStart(engine, kT0);
  CHECK(engine.state() == RolloutState::Running);
  CHECK(engine.percent() == 10.0);
  CHECK(engine.history().at(0).at_ms == kT0);
  for (int k = 1; k <= 2; ++k) fleet.addInterval(engine, healthy());
  // Stage 1's hold (20 s) passed at T_2 with 400 judged requests: advance, dated T_2.
  CHECK(engine.stage() == 2);
  CHECK(engine.history().back().event == RolloutEvent::Advance);
  CHECK(engine.history().back().at_ms == kT0 + 20 * kSec);
  CHECK(fleet.evaluated() == 2);
}

TEST_CASE("fleet: a canary failing its requests is rolled back at an interval's end") {
  RolloutEngine engine("shop", fleetSettings());
  FleetRollout fleet(fleetSettings(), "a");
  fleet.setStart(engine, kT0);
  IntervalEvidence bad = healthy();
  bad.variant.errors = 150;  // 75%: the critical breaker
  const std::vector<RolloutRecord> taken = fleet.addInterval(engine, bad);
  REQUIRE(taken.size() == 1);
  CHECK(taken[0].event == RolloutEvent::Fail);
  CHECK(taken[0].at_ms == kT0 + 10 * kSec);
  CHECK(engine.state() == RolloutState::Failed);
  CHECK(engine.percent() == 0.0);
}

TEST_CASE(
    "fleet: an operator call is applied once on its replica, and at its slot on another "
    "that learns of it late") {
  RolloutEngine ea("shop", fleetSettings());
  RolloutEngine eb("shop", fleetSettings());
  FleetRollout a(fleetSettings(), "a");
  FleetRollout b(fleetSettings(), "b");
  a.setStart(ea, kT0);
  b.setStart(eb, kT0);
  a.addInterval(ea, healthy());
  b.addInterval(eb, healthy());
  // Replica a pauses after interval 1 (at T_1 + lag + 2 s).
  std::string refusal;
  std::vector<RolloutRecord> taken;
  const std::optional<FleetEvent> pause =
      a.command(ea, RolloutCommand::Pause, kT0 + 42 * kSec, false, "", refusal, taken);
  REQUIRE(pause);
  CHECK(pause->slot == 1);
  CHECK(pause->replica == "a");
  CHECK(pause->seq == 1);
  CHECK(ea.state() == RolloutState::Paused);
  REQUIRE(a.ownEvents().size() == 1);
  // Replica b evaluates interval 2 before it reads the pause: stage 1's hold passes, b advances.
  b.addInterval(eb, healthy());
  CHECK(eb.stage() == 2);
  // The pause belongs after interval 1: b rebuilds and ends paused in stage 1, as a does.
  const std::vector<RolloutRecord> news = b.mergeEvents(eb, {*pause});
  CHECK_FALSE(news.empty());
  a.addInterval(ea, healthy());
  CHECK(eb.state() == RolloutState::Paused);
  CHECK(eb.stage() == 1);
  checkSameHistory(ea, eb);
  // Replica a reads its own pause back: nothing changes (not applied twice).
  CHECK(a.mergeEvents(ea, {*pause}).empty());
  CHECK(events(ea) == std::vector<std::string>{"start", "pause"});
  // Commands refused where the state does not allow them, as locally.
  CHECK_FALSE(a.command(ea, RolloutCommand::Pause, kT0 + 60 * kSec, false, "", refusal, taken));
  CHECK(refusal.find("paused") != std::string::npos);
}

TEST_CASE(
    "fleet: a replica that starts late rebuilds the same history from the past intervals "
    "and events") {
  RolloutEngine ea("shop", fleetSettings());
  FleetRollout a(fleetSettings(), "a");
  a.setStart(ea, kT0);
  std::vector<IntervalEvidence> intervals;
  std::vector<FleetEvent> exported;
  std::string refusal;
  std::vector<RolloutRecord> taken;
  for (int k = 1; k <= 9; ++k) {
    IntervalEvidence e = healthy(100 + k, 1000 + k);
    intervals.push_back(e);
    a.addInterval(ea, e);
    if (k == 3) {
      exported.push_back(
          *a.command(ea, RolloutCommand::Pause, kT0 + 45 * kSec, false, "look", refusal, taken));
    }
    if (k == 5) {
      exported.push_back(
          *a.command(ea, RolloutCommand::Resume, kT0 + 65 * kSec, false, "", refusal, taken));
    }
  }
  // The newcomer reads the events first, then every past interval in one batch.
  RolloutEngine ec("shop", fleetSettings());
  FleetRollout c(fleetSettings(), "c");
  c.setStart(ec, kT0);
  c.mergeEvents(ec, exported);
  for (const IntervalEvidence& e : intervals) c.addInterval(ec, e);
  checkSameHistory(ea, ec);
  // Stage 1 passed at T_2; paused after T_3, resumed after T_5 (the hold clock stood still
  // 20 s), so stage 2's hold passed at T_6 and stage 3's at T_8.
  CHECK(events(ec) ==
        std::vector<std::string>{"start", "advance", "pause", "resume", "advance", "complete"});
  CHECK(ec.history().at(2).reason == "look");
  CHECK(ec.history().at(4).at_ms == kT0 + 60 * kSec);
}

TEST_CASE("fleet: two replicas' calls in the same slot apply in the fleet's order everywhere") {
  RolloutEngine ea("shop", fleetSettings());
  RolloutEngine eb("shop", fleetSettings());
  FleetRollout a(fleetSettings(), "a");
  FleetRollout b(fleetSettings(), "b");
  a.setStart(ea, kT0);
  b.setStart(eb, kT0);
  std::string refusal;
  std::vector<RolloutRecord> taken;
  // Both pause in slot 0; b's is earlier. Each applies its own first, then learns of the other.
  const FleetEvent pb =
      *b.command(eb, RolloutCommand::Pause, kT0 + 1 * kSec, false, "b", refusal, taken);
  const FleetEvent pa =
      *a.command(ea, RolloutCommand::Pause, kT0 + 2 * kSec, false, "a", refusal, taken);
  a.mergeEvents(ea, {pb});
  b.mergeEvents(eb, {pa});
  checkSameHistory(ea, eb);
  // b's pause won; a's was refused (already paused) on both.
  REQUIRE(ea.history().size() == 2);
  CHECK(ea.history()[1].reason == "b");
}

}  // namespace
}  // namespace sy::proxy
