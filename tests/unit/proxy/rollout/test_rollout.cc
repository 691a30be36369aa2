// The rollout's state machine and journal (SPEC §11, proxy/rollout/rollout.h, journal.h). The
// engine is driven with synthetic cumulative evidence at synthetic times (wall-clock
// milliseconds passed in): no sockets, no sleeps. Every record the engine proposes is applied,
// as the manager does after journaling it.

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <doctest.h>

#include "proxy/rollout/journal.h"
#include "proxy/rollout/rollout.h"

namespace sy::proxy {
namespace {

constexpr int64_t kSec = 1000;
constexpr int64_t kT0 = 1767225600000;  // 2026-01-01T00:00:00Z

// Three stages of one minute each (10%, 50%, 100%); intervals of 10 s after a warm-up of 20 s;
// 100 judged requests of the variant needed per stage.
config::Rollout rolloutSettings() {
  config::Rollout s;
  s.id = "checkout-2.14";
  s.variant = config::Variant::Canary;
  s.baseline = config::Variant::Blue;
  s.on_failure = config::RolloutFailure::Rollback;
  s.stages = {{10.0, 60 * kSec, false}, {50.0, 60 * kSec, false}, {100.0, 60 * kSec, false}};
  s.analysis.interval_ms = 10 * kSec;
  s.analysis.warmup_ms = 20 * kSec;
  s.analysis.min_requests = 100;
  return s;
}

// Ticks and applies until the engine proposes nothing more; returns what was applied.
std::vector<RolloutRecord> drive(RolloutEngine& engine, int64_t now,
                                 const IntervalEvidence& evidence) {
  std::vector<RolloutRecord> applied;
  for (int i = 0; i < 16; ++i) {
    std::optional<RolloutRecord> r = engine.tick(now, evidence);
    if (!r) return applied;
    applied.push_back(*r);
    engine.apply(std::move(*r));
  }
  FAIL("the engine keeps proposing records at one instant");
  return applied;
}

std::optional<RolloutRecord> command(RolloutEngine& engine, RolloutCommand c, int64_t now,
                                     bool to_last = false) {
  std::string refusal;
  std::optional<RolloutRecord> r = engine.command(c, now, to_last, "", refusal);
  if (r) CHECK(refusal.empty());
  return r;
}

// Applies the command's record; fails the test when it is refused.
void take(RolloutEngine& engine, RolloutCommand c, int64_t now, bool to_last = false) {
  std::string refusal;
  std::optional<RolloutRecord> r = engine.command(c, now, to_last, "test", refusal);
  REQUIRE_MESSAGE(r.has_value(), refusal);
  engine.apply(std::move(*r));
}

// The refusal text of `c` now, or "" when the engine would take it.
std::string refusal(const RolloutEngine& engine, RolloutCommand c, int64_t now) {
  std::string text;
  std::optional<RolloutRecord> r = engine.command(c, now, false, "", text);
  if (r) return "";
  CHECK(!text.empty());
  return text;
}

// The data plane as the engine sees it: cumulative counters that only grow. Each simulated
// second carries `rate` requests split by the engine's current share, with the arms' error
// rates and latencies; then the engine is driven at the new time.
struct Sim {
  explicit Sim(config::Rollout settings, int64_t start = kT0)
      : engine("checkout", std::move(settings)), now(start) {}
  Sim(RolloutEngine e, int64_t start) : engine(std::move(e)), now(start) {}

  RolloutEngine engine;
  int64_t now;
  IntervalEvidence total;
  uint64_t rate = 100;  // requests per second on the route
  double variant_error = 0.005;
  double baseline_error = 0.005;
  uint64_t variant_us = 10000;
  uint64_t baseline_us = 10000;
  std::vector<RolloutRecord> applied;

  // Drives at the current time without new traffic.
  void drive() {
    for (RolloutRecord& r : sy::proxy::drive(engine, now, total)) applied.push_back(std::move(r));
  }

  void addArm(ArmCounts& arm, LatencyHistogram& latency, uint64_t n, double error_rate,
              double& carry, uint64_t us) {
    arm.requests += n;
    carry += static_cast<double>(n) * error_rate;
    const double whole = std::floor(carry + 1e-9);
    arm.errors += static_cast<uint64_t>(whole);
    carry -= whole;
    latency[latencyBucket(us)] += n;
  }

  // One second of traffic, then drive.
  void second() {
    now += kSec;
    const auto nv =
        static_cast<uint64_t>(std::llround(static_cast<double>(rate) * engine.percent() / 100.0));
    const uint64_t nb = rate - nv;
    addArm(total.variant, total.variant_latency, nv, variant_error, variant_carry_, variant_us);
    addArm(total.baseline, total.baseline_latency, nb, baseline_error, baseline_carry_,
           baseline_us);
    drive();
  }

  void runUntil(int64_t t) {
    while (now < t) second();
  }

  // Runs until `t` or until an event of this kind is applied; returns whether it was.
  bool runUntilEvent(RolloutEvent event, int64_t t) {
    const size_t before = applied.size();
    while (now < t) {
      second();
      for (size_t i = before; i < applied.size(); ++i) {
        if (applied[i].event == event) return true;
      }
    }
    return false;
  }

  std::vector<RolloutEvent> events() const {
    std::vector<RolloutEvent> out;
    for (const RolloutRecord& r : applied) out.push_back(r.event);
    return out;
  }

  size_t count(RolloutEvent event) const {
    return static_cast<size_t>(std::count_if(
        applied.begin(), applied.end(), [&](const RolloutRecord& r) { return r.event == event; }));
  }

 private:
  double variant_carry_ = 0.0;
  double baseline_carry_ = 0.0;
};

// A Sim whose rollout started (on_load) at kT0.
Sim started(config::Rollout settings = rolloutSettings()) {
  Sim sim(std::move(settings));
  sim.drive();
  REQUIRE(sim.applied.size() == 1);
  REQUIRE(sim.applied[0].event == RolloutEvent::Start);
  return sim;
}

// --- Start ---

TEST_CASE("rollout: on_load starts at stage 1 with the stage's percent") {
  RolloutEngine engine("checkout", rolloutSettings());
  CHECK(engine.state() == RolloutState::Pending);
  CHECK(engine.stage() == 0);
  CHECK(engine.percent() == 0.0);
  CHECK(engine.waitingFor() == "start");

  std::optional<RolloutRecord> start = engine.proposeStart(kT0);
  REQUIRE(start.has_value());
  CHECK(start->event == RolloutEvent::Start);
  CHECK(start->state == RolloutState::Running);
  CHECK(start->stage == 1);
  CHECK(start->percent == 10.0);
  CHECK(start->at_ms == kT0);
  CHECK(start->stage_started_ms == kT0);
  CHECK(engine.state() == RolloutState::Pending);  // proposing changes nothing

  const std::vector<RolloutRecord> applied = drive(engine, kT0, IntervalEvidence{});
  REQUIRE(applied.size() == 1);
  CHECK(applied[0].event == RolloutEvent::Start);
  CHECK(engine.state() == RolloutState::Running);
  CHECK(engine.stage() == 1);
  CHECK(engine.percent() == 10.0);
  CHECK(engine.history().size() == 1);
  CHECK(engine.waitingFor() == "hold");
  CHECK(engine.nextTransitionMs() == kT0 + 60 * kSec);
  CHECK_FALSE(engine.proposeStart(kT0 + kSec).has_value());  // started already
}

TEST_CASE("rollout: a start time in the future stays pending until it passes") {
  config::Rollout s = rolloutSettings();
  const int64_t start = kT0 + 3600 * kSec;
  s.start_unix_ms = start;
  RolloutEngine engine("checkout", s);

  CHECK_FALSE(engine.proposeStart(kT0).has_value());
  CHECK_FALSE(engine.proposeStart(start - 1).has_value());
  CHECK(drive(engine, kT0, IntervalEvidence{}).empty());
  CHECK(drive(engine, start - 1, IntervalEvidence{}).empty());
  CHECK(engine.state() == RolloutState::Pending);
  CHECK(engine.percent() == 0.0);
  CHECK(engine.nextTransitionMs() == start);
  CHECK(engine.verdict().find("pending until 2026-01-01T01:00:00Z") != std::string::npos);

  REQUIRE(engine.proposeStart(start).has_value());
  const std::vector<RolloutRecord> applied = drive(engine, start, IntervalEvidence{});
  REQUIRE(applied.size() == 1);
  CHECK(applied[0].event == RolloutEvent::Start);
  CHECK(applied[0].at_ms == start);
  CHECK(applied[0].stage_started_ms == start);
  CHECK(engine.state() == RolloutState::Running);
  CHECK(engine.stage() == 1);
  CHECK(engine.percent() == 10.0);
}

TEST_CASE("rollout: a start time already past starts at once") {
  config::Rollout s = rolloutSettings();
  s.start_unix_ms = kT0 - 3600 * kSec;
  RolloutEngine engine("checkout", s);
  const std::vector<RolloutRecord> applied = drive(engine, kT0, IntervalEvidence{});
  REQUIRE(applied.size() == 1);
  CHECK(applied[0].event == RolloutEvent::Start);
  CHECK(engine.state() == RolloutState::Running);
}

// --- Warm-up and intervals ---

TEST_CASE("rollout: requests of the warm-up are not judged; intervals every interval_ms after") {
  Sim sim = started();
  // 100 requests/s at 10%: 10 variant requests per second.
  sim.runUntil(kT0 + 20 * kSec);  // the warm-up: judged from kT0 + 20 s
  CHECK(sim.engine.stageJudged() == 0);
  CHECK(sim.engine.intervals() == 0);
  CHECK(sim.total.variant.requests == 200);  // the traffic was there

  sim.runUntil(kT0 + 29 * kSec);  // the first interval is open, not over
  CHECK(sim.engine.stageJudged() == 0);
  CHECK(sim.engine.intervals() == 0);

  sim.runUntil(kT0 + 30 * kSec);  // the first interval: (20 s, 30 s]
  CHECK(sim.engine.intervals() == 1);
  CHECK(sim.engine.stageJudged() == 100);

  sim.runUntil(kT0 + 39 * kSec);
  CHECK(sim.engine.intervals() == 1);
  sim.runUntil(kT0 + 40 * kSec);
  CHECK(sim.engine.intervals() == 2);
  CHECK(sim.engine.stageJudged() == 200);
  CHECK(sim.engine.state() == RolloutState::Running);
  CHECK(sim.applied.size() == 1);  // nothing but the start
}

// --- A healthy variant ---

TEST_CASE("rollout: a healthy variant advances through every stage, then completes") {
  Sim sim = started();
  // Hold 60 s per stage; the judged requests (400 per stage) are plenty.
  sim.runUntil(kT0 + 59 * kSec);
  CHECK(sim.engine.stage() == 1);
  CHECK(sim.engine.percent() == 10.0);

  sim.runUntil(kT0 + 60 * kSec);
  CHECK(sim.engine.stage() == 2);
  CHECK(sim.engine.percent() == 50.0);
  CHECK(sim.engine.state() == RolloutState::Running);
  REQUIRE(sim.applied.size() == 2);
  CHECK(sim.applied[1].event == RolloutEvent::Advance);
  CHECK(sim.applied[1].stage_started_ms == kT0 + 60 * kSec);
  CHECK(sim.applied[1].verdict.find("stage 1 passed") != std::string::npos);
  // A new share: the stage's counts and the warm-up start over.
  CHECK(sim.engine.stageJudged() == 0);

  sim.runUntil(kT0 + 119 * kSec);
  CHECK(sim.engine.stage() == 2);
  sim.runUntil(kT0 + 120 * kSec);
  CHECK(sim.engine.stage() == 3);
  CHECK(sim.engine.percent() == 100.0);

  sim.runUntil(kT0 + 180 * kSec);
  CHECK(sim.engine.state() == RolloutState::Complete);
  CHECK(sim.engine.stage() == 3);
  CHECK(sim.engine.percent() == 100.0);
  CHECK(sim.engine.waitingFor() == "");
  CHECK(sim.events() == std::vector<RolloutEvent>{RolloutEvent::Start, RolloutEvent::Advance,
                                                  RolloutEvent::Advance, RolloutEvent::Complete});
  CHECK(sim.applied.back().verdict.find("complete at") != std::string::npos);

  // Complete keeps its share; nothing more happens by itself.
  sim.runUntil(kT0 + 600 * kSec);
  CHECK(sim.applied.size() == 4);
  CHECK(sim.engine.state() == RolloutState::Complete);
  CHECK(sim.engine.percent() == 100.0);
  for (const CheckResult& c : sim.engine.checks()) CHECK_FALSE(c.failed);
}

// --- Too little traffic ---

TEST_CASE("rollout: too few judged requests hold the stage once, then it advances") {
  Sim sim = started();
  sim.rate = 10;  // 1 variant request per second at 10%: 10 per interval
  sim.runUntil(kT0 + 60 * kSec);
  CHECK(sim.engine.stageJudged() == 40);  // intervals ending at 30, 40, 50, 60 s
  CHECK(sim.engine.state() == RolloutState::Holding);
  CHECK(sim.engine.stage() == 1);
  CHECK(sim.engine.percent() == 10.0);
  CHECK(sim.engine.waitingFor() == "requests");
  REQUIRE(sim.applied.size() == 2);
  CHECK(sim.applied[1].event == RolloutEvent::Hold);
  CHECK(sim.applied[1].state == RolloutState::Holding);
  CHECK(sim.applied[1].verdict.find("40 of 100") != std::string::npos);

  // Still too few: no second hold event, however many ticks.
  sim.runUntil(kT0 + 90 * kSec);
  CHECK(sim.engine.stageJudged() == 70);
  CHECK(sim.engine.state() == RolloutState::Holding);
  CHECK(sim.count(RolloutEvent::Hold) == 1);
  CHECK(sim.applied.size() == 2);
  CHECK(sim.engine.verdict().find("70 of 100") != std::string::npos);

  // Enough traffic: the interval ending at 100 s brings it to 170 judged requests.
  sim.rate = 100;
  sim.runUntil(kT0 + 99 * kSec);
  CHECK(sim.engine.state() == RolloutState::Holding);
  sim.runUntil(kT0 + 100 * kSec);
  CHECK(sim.engine.stage() == 2);
  CHECK(sim.engine.state() == RolloutState::Running);
  CHECK(sim.engine.percent() == 50.0);
  CHECK(sim.events() ==
        std::vector<RolloutEvent>{RolloutEvent::Start, RolloutEvent::Hold, RolloutEvent::Advance});
  CHECK(sim.count(RolloutEvent::Hold) == 1);
}

// --- Manual gate ---

TEST_CASE("rollout: a manual gate waits for promote") {
  config::Rollout s = rolloutSettings();
  s.stages[0].manual_gate = true;
  Sim sim = started(s);
  sim.runUntil(kT0 + 60 * kSec);
  CHECK(sim.engine.state() == RolloutState::WaitingGate);
  CHECK(sim.engine.stage() == 1);
  CHECK(sim.engine.percent() == 10.0);
  CHECK(sim.engine.waitingFor() == "promote");
  REQUIRE(sim.applied.size() == 2);
  CHECK(sim.applied[1].event == RolloutEvent::Gate);
  CHECK(sim.applied[1].verdict.find("waiting for promote") != std::string::npos);

  // The gate stays closed by itself.
  sim.runUntil(kT0 + 300 * kSec);
  CHECK(sim.engine.state() == RolloutState::WaitingGate);
  CHECK(sim.count(RolloutEvent::Gate) == 1);
  CHECK(sim.applied.size() == 2);

  SUBCASE("promote opens it: the next stage") {
    std::optional<RolloutRecord> r = command(sim.engine, RolloutCommand::Promote, sim.now);
    REQUIRE(r.has_value());
    CHECK(r->event == RolloutEvent::Promote);
    CHECK(r->state == RolloutState::Running);
    CHECK(r->stage == 2);
    CHECK(r->percent == 50.0);
    CHECK(r->stage_started_ms == sim.now);
    sim.engine.apply(std::move(*r));
    CHECK(sim.engine.state() == RolloutState::Running);
    CHECK(sim.engine.stage() == 2);
    CHECK(sim.engine.percent() == 50.0);
    // Then the rest runs by itself.
    const int64_t promoted = sim.now;
    sim.runUntil(promoted + 60 * kSec);
    CHECK(sim.engine.stage() == 3);
    sim.runUntil(promoted + 120 * kSec);
    CHECK(sim.engine.state() == RolloutState::Complete);
  }

  SUBCASE("promote with to_last jumps to the last stage") {
    take(sim.engine, RolloutCommand::Promote, sim.now, /*to_last=*/true);
    CHECK(sim.engine.state() == RolloutState::Running);
    CHECK(sim.engine.stage() == 3);
    CHECK(sim.engine.percent() == 100.0);

    SUBCASE("promote at the last stage completes") {
      std::optional<RolloutRecord> r = command(sim.engine, RolloutCommand::Promote, sim.now + 1);
      REQUIRE(r.has_value());
      CHECK(r->event == RolloutEvent::Promote);
      CHECK(r->state == RolloutState::Complete);
      CHECK(r->stage == 3);
      CHECK(r->percent == 100.0);
      sim.engine.apply(std::move(*r));
      CHECK(sim.engine.state() == RolloutState::Complete);
      CHECK(sim.engine.percent() == 100.0);
    }
  }
}

TEST_CASE("rollout: a gate at the last stage also waits; promote then completes") {
  config::Rollout s = rolloutSettings();
  s.stages[2].manual_gate = true;
  Sim sim = started(s);
  sim.runUntil(kT0 + 180 * kSec);
  CHECK(sim.engine.stage() == 3);
  CHECK(sim.engine.state() == RolloutState::WaitingGate);
  take(sim.engine, RolloutCommand::Promote, sim.now);
  CHECK(sim.engine.state() == RolloutState::Complete);
  CHECK(sim.engine.percent() == 100.0);
}

// --- A bad variant ---

TEST_CASE("rollout: a variant with far more errors than the baseline fails the rollout") {
  config::Rollout s = rolloutSettings();
  bool rollback = true;
  SUBCASE("on_failure rollback") { rollback = true; }
  SUBCASE("on_failure pause") { rollback = false; }
  s.on_failure = rollback ? config::RolloutFailure::Rollback : config::RolloutFailure::Pause;
  Sim sim = started(s);
  sim.variant_error = 0.10;  // vs the baseline's 0.5%
  sim.baseline_error = 0.005;
  REQUIRE(sim.runUntilEvent(RolloutEvent::Fail, kT0 + 60 * kSec));
  CHECK(sim.now > kT0 + 20 * kSec);  // judged after the warm-up, not by the critical breaker
  CHECK(sim.engine.state() == RolloutState::Failed);
  CHECK(sim.engine.stage() == 1);
  CHECK(sim.engine.waitingFor() == "retry");
  const RolloutRecord& fail = sim.applied.back();
  CHECK(fail.event == RolloutEvent::Fail);
  CHECK(fail.state == RolloutState::Failed);
  CHECK(fail.verdict.find("5xx") != std::string::npos);
  bool error_check_failed = false;
  for (const CheckResult& c : sim.engine.checks()) {
    if (c.kind == CheckKind::ErrorRatio) error_check_failed = c.failed;
  }
  CHECK(error_check_failed);
  if (rollback) {
    CHECK(fail.percent == 0.0);
    CHECK(sim.engine.percent() == 0.0);
    CHECK(fail.verdict.find("rolled back at") != std::string::npos);
  } else {
    CHECK(fail.percent == 10.0);
    CHECK(sim.engine.percent() == 10.0);
    CHECK(fail.verdict.find("paused at") != std::string::npos);
  }
  // Failed is final until an operator acts.
  const size_t records = sim.applied.size();
  sim.runUntil(sim.now + 300 * kSec);
  CHECK(sim.applied.size() == records);
  CHECK(sim.engine.state() == RolloutState::Failed);
}

TEST_CASE("rollout: a variant as bad as the baseline's incident does not fail") {
  // Both arms at 10% errors over the same intervals: compared with each other, not a number.
  Sim sim = started();
  sim.variant_error = 0.10;
  sim.baseline_error = 0.10;
  sim.runUntil(kT0 + 180 * kSec);
  CHECK(sim.engine.state() == RolloutState::Complete);
  CHECK(sim.count(RolloutEvent::Fail) == 0);
}

TEST_CASE("rollout: the critical breaker fails at once, even during the warm-up") {
  Sim sim(rolloutSettings());
  // Traffic before the start is not the stage's.
  sim.total.variant = {100, 0};
  sim.drive();
  REQUIRE(sim.engine.state() == RolloutState::Running);

  SUBCASE("19 requests all failing: not yet") {
    sim.now += kSec;
    sim.total.variant.requests += 19;
    sim.total.variant.errors += 19;
    sim.drive();
    CHECK(sim.engine.state() == RolloutState::Running);
    sim.now += kSec;
    sim.total.variant.requests += 1;  // 20 with 19 errors: >= 50%
    sim.drive();
    CHECK(sim.engine.state() == RolloutState::Failed);
  }

  SUBCASE("20 requests half failing") {
    sim.now += 5 * kSec;
    sim.total.variant.requests += 20;
    sim.total.variant.errors += 10;
    sim.drive();
    CHECK(sim.engine.state() == RolloutState::Failed);
    CHECK(sim.engine.intervals() == 0);  // in the warm-up: nothing was judged
    CHECK(sim.engine.percent() == 0.0);
    REQUIRE(sim.applied.size() == 2);
    CHECK(sim.applied[1].event == RolloutEvent::Fail);
    CHECK(sim.applied[1].verdict.find("critical") != std::string::npos);
    CHECK(sim.applied[1].verdict.find("5xx") != std::string::npos);
    CHECK(sim.applied[1].verdict.find("rolled back at") != std::string::npos);
  }

  SUBCASE("20 requests with 9 errors: below the critical share") {
    sim.now += 5 * kSec;
    sim.total.variant.requests += 20;
    sim.total.variant.errors += 9;
    sim.drive();
    CHECK(sim.engine.state() == RolloutState::Running);
  }
}

// --- Operator's controls ---

TEST_CASE("rollout: pause freezes the hold clock; resume continues it") {
  Sim sim = started();
  sim.runUntil(kT0 + 30 * kSec);
  std::optional<RolloutRecord> pause = command(sim.engine, RolloutCommand::Pause, sim.now);
  REQUIRE(pause.has_value());
  CHECK(pause->event == RolloutEvent::Pause);
  CHECK(pause->state == RolloutState::Paused);
  CHECK(pause->stage == 1);
  CHECK(pause->percent == 10.0);
  sim.engine.apply(std::move(*pause));
  CHECK(sim.engine.state() == RolloutState::Paused);
  CHECK(sim.engine.percent() == 10.0);
  CHECK(sim.engine.waitingFor() == "resume");
  CHECK(sim.engine.nextTransitionMs() == 0);

  // Paused well past the hold: nothing happens by itself.
  sim.runUntil(kT0 + 90 * kSec);
  CHECK(sim.engine.state() == RolloutState::Paused);
  CHECK(sim.engine.stage() == 1);
  CHECK(sim.applied.size() == 1);

  std::optional<RolloutRecord> resume = command(sim.engine, RolloutCommand::Resume, sim.now);
  REQUIRE(resume.has_value());
  CHECK(resume->event == RolloutEvent::Resume);
  CHECK(resume->state == RolloutState::Running);
  CHECK(resume->stage == 1);
  CHECK(resume->percent == 10.0);
  // 30 s ran before the pause, 60 s were paused: the stage started 60 s later than it did.
  CHECK(resume->stage_started_ms == kT0 + 60 * kSec);
  sim.engine.apply(std::move(*resume));
  CHECK(sim.engine.state() == RolloutState::Running);
  CHECK(sim.engine.nextTransitionMs() == kT0 + 120 * kSec);

  // 30 s of hold are left.
  sim.runUntil(kT0 + 119 * kSec);
  CHECK(sim.engine.stage() == 1);
  CHECK(sim.engine.state() == RolloutState::Running);
  sim.runUntil(kT0 + 120 * kSec);
  CHECK(sim.engine.stage() == 2);
  CHECK(sim.events() == std::vector<RolloutEvent>{RolloutEvent::Start, RolloutEvent::Advance});
}

TEST_CASE("rollout: abort rolls back from any state that holds a share") {
  Sim sim = started();
  std::string state;
  SUBCASE("running") { state = "running"; }
  SUBCASE("holding") {
    sim.rate = 0;
    sim.runUntil(kT0 + 60 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::Holding);
  }
  SUBCASE("waiting_gate") {
    config::Rollout s = rolloutSettings();
    s.stages[0].manual_gate = true;
    sim = started(s);
    sim.runUntil(kT0 + 60 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::WaitingGate);
  }
  SUBCASE("paused") {
    take(sim.engine, RolloutCommand::Pause, sim.now + kSec);
    sim.now += kSec;
    REQUIRE(sim.engine.state() == RolloutState::Paused);
  }
  SUBCASE("complete") {
    sim.runUntil(kT0 + 180 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::Complete);
  }
  SUBCASE("failed with on_failure pause (keeps its share)") {
    config::Rollout s = rolloutSettings();
    s.on_failure = config::RolloutFailure::Pause;
    sim = started(s);
    sim.variant_error = 0.6;  // the critical breaker
    sim.runUntil(kT0 + 5 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::Failed);
    REQUIRE(sim.engine.percent() == 10.0);
  }
  REQUIRE(sim.engine.percent() > 0.0);
  const uint32_t stage = sim.engine.stage();
  std::optional<RolloutRecord> abort = command(sim.engine, RolloutCommand::Abort, sim.now + 1);
  REQUIRE(abort.has_value());
  CHECK(abort->event == RolloutEvent::Abort);
  CHECK(abort->state == RolloutState::Aborted);
  CHECK(abort->percent == 0.0);
  CHECK(abort->stage == stage);
  CHECK(abort->verdict.find("rolled back at") != std::string::npos);
  sim.engine.apply(std::move(*abort));
  CHECK(sim.engine.state() == RolloutState::Aborted);
  CHECK(sim.engine.percent() == 0.0);
  CHECK(sim.engine.waitingFor() == "retry");

  // Aborted: nothing by itself, and a second abort is refused.
  const size_t records = sim.engine.history().size();
  sim.runUntil(sim.now + 300 * kSec);
  CHECK(sim.engine.history().size() == records);
  CHECK(sim.engine.percent() == 0.0);
  const std::string refused = refusal(sim.engine, RolloutCommand::Abort, sim.now);
  CHECK(refused.find("cannot") != std::string::npos);
  CHECK(refused.find("aborted") != std::string::npos);
}

TEST_CASE("rollout: retry after failed or aborted starts over at stage 1 with fresh evidence") {
  Sim sim = started();
  SUBCASE("after failed") {
    sim.variant_error = 0.10;
    REQUIRE(sim.runUntilEvent(RolloutEvent::Fail, kT0 + 60 * kSec));
    CHECK(sim.engine.percent() == 0.0);
  }
  SUBCASE("after aborted") {
    sim.runUntil(kT0 + 70 * kSec);  // stage 2
    REQUIRE(sim.engine.stage() == 2);
    take(sim.engine, RolloutCommand::Abort, sim.now);
    REQUIRE(sim.engine.state() == RolloutState::Aborted);
  }
  CHECK(sim.engine.intervals() > 0);
  sim.variant_error = 0.005;
  sim.now += kSec;
  std::optional<RolloutRecord> retry = command(sim.engine, RolloutCommand::Retry, sim.now);
  REQUIRE(retry.has_value());
  CHECK(retry->event == RolloutEvent::Retry);
  CHECK(retry->state == RolloutState::Running);
  CHECK(retry->stage == 1);
  CHECK(retry->percent == 10.0);
  CHECK(retry->stage_started_ms == sim.now);
  CHECK(retry->verdict.find("fresh evidence") != std::string::npos);
  sim.engine.apply(std::move(*retry));
  CHECK(sim.engine.state() == RolloutState::Running);
  CHECK(sim.engine.stage() == 1);
  CHECK(sim.engine.percent() == 10.0);
  CHECK(sim.engine.intervals() == 0);
  CHECK(sim.engine.stageJudged() == 0);
  for (const CheckResult& c : sim.engine.checks()) CHECK_FALSE(c.failed);

  // A fresh warm-up, then the healthy variant goes all the way.
  const int64_t retried = sim.now;
  sim.runUntil(retried + 20 * kSec);
  CHECK(sim.engine.intervals() == 0);
  sim.runUntil(retried + 180 * kSec);
  CHECK(sim.engine.state() == RolloutState::Complete);
  CHECK(sim.engine.percent() == 100.0);
}

TEST_CASE("rollout: commands not allowed in the state are refused") {
  using C = RolloutCommand;
  auto allowed = [](const RolloutEngine& e, C c, int64_t now) {
    return refusal(e, c, now).empty();
  };
  auto refusedWithCannot = [](const RolloutEngine& e, C c, int64_t now) {
    const std::string text = refusal(e, c, now);
    return !text.empty() && text.find("cannot") != std::string::npos;
  };

  SUBCASE("pending") {
    config::Rollout s = rolloutSettings();
    s.start_unix_ms = kT0 + 3600 * kSec;
    RolloutEngine e("checkout", s);
    CHECK(refusedWithCannot(e, C::Pause, kT0));
    CHECK(refusedWithCannot(e, C::Resume, kT0));
    CHECK(refusedWithCannot(e, C::Promote, kT0));
    CHECK(refusedWithCannot(e, C::Retry, kT0));
  }
  SUBCASE("running") {
    Sim sim = started();
    CHECK(allowed(sim.engine, C::Pause, kT0 + 1));
    CHECK(refusedWithCannot(sim.engine, C::Resume, kT0 + 1));
    CHECK(allowed(sim.engine, C::Promote, kT0 + 1));
    CHECK(allowed(sim.engine, C::Abort, kT0 + 1));
    CHECK(refusedWithCannot(sim.engine, C::Retry, kT0 + 1));
    CHECK(refusal(sim.engine, C::Resume, kT0 + 1) == "cannot resume: the rollout is running");
  }
  SUBCASE("holding") {
    Sim sim = started();
    sim.rate = 0;
    sim.runUntil(kT0 + 60 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::Holding);
    CHECK(allowed(sim.engine, C::Pause, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Resume, sim.now));
    CHECK(allowed(sim.engine, C::Promote, sim.now));
    CHECK(allowed(sim.engine, C::Abort, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Retry, sim.now));
  }
  SUBCASE("waiting_gate") {
    config::Rollout s = rolloutSettings();
    s.stages[0].manual_gate = true;
    Sim sim = started(s);
    sim.runUntil(kT0 + 60 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::WaitingGate);
    CHECK(allowed(sim.engine, C::Pause, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Resume, sim.now));
    CHECK(allowed(sim.engine, C::Promote, sim.now));
    CHECK(allowed(sim.engine, C::Abort, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Retry, sim.now));
  }
  SUBCASE("paused") {
    Sim sim = started();
    take(sim.engine, C::Pause, kT0 + kSec);
    CHECK(refusedWithCannot(sim.engine, C::Pause, kT0 + 2 * kSec));
    CHECK(allowed(sim.engine, C::Resume, kT0 + 2 * kSec));
    CHECK(refusedWithCannot(sim.engine, C::Promote, kT0 + 2 * kSec));
    CHECK(refusal(sim.engine, C::Promote, kT0 + 2 * kSec).find("resume first") !=
          std::string::npos);
    CHECK(allowed(sim.engine, C::Abort, kT0 + 2 * kSec));
    CHECK(refusedWithCannot(sim.engine, C::Retry, kT0 + 2 * kSec));
  }
  SUBCASE("failed, rolled back") {
    Sim sim = started();
    sim.variant_error = 0.6;
    sim.runUntil(kT0 + 5 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::Failed);
    REQUIRE(sim.engine.percent() == 0.0);
    CHECK(refusedWithCannot(sim.engine, C::Pause, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Resume, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Promote, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Abort, sim.now));  // nothing to roll back
    CHECK(allowed(sim.engine, C::Retry, sim.now));
  }
  SUBCASE("aborted") {
    Sim sim = started();
    take(sim.engine, C::Abort, kT0 + kSec);
    CHECK(refusedWithCannot(sim.engine, C::Pause, kT0 + 2 * kSec));
    CHECK(refusedWithCannot(sim.engine, C::Resume, kT0 + 2 * kSec));
    CHECK(refusedWithCannot(sim.engine, C::Promote, kT0 + 2 * kSec));
    CHECK(refusedWithCannot(sim.engine, C::Abort, kT0 + 2 * kSec));
    CHECK(allowed(sim.engine, C::Retry, kT0 + 2 * kSec));
  }
  SUBCASE("complete") {
    Sim sim = started();
    sim.runUntil(kT0 + 180 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::Complete);
    CHECK(refusedWithCannot(sim.engine, C::Pause, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Resume, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Promote, sim.now));
    CHECK(allowed(sim.engine, C::Abort, sim.now));
    CHECK(refusedWithCannot(sim.engine, C::Retry, sim.now));
  }
}

TEST_CASE("rollout: a refused command changes nothing") {
  Sim sim = started();
  take(sim.engine, RolloutCommand::Pause, kT0 + kSec);
  const size_t records = sim.engine.history().size();
  std::string text;
  CHECK_FALSE(
      sim.engine.command(RolloutCommand::Pause, kT0 + 2 * kSec, false, "again", text).has_value());
  CHECK(text == "cannot pause: the rollout is paused");
  CHECK(sim.engine.history().size() == records);
  CHECK(sim.engine.state() == RolloutState::Paused);
}

TEST_CASE("rollout: the operator's reason is recorded") {
  Sim sim = started();
  std::string text;
  std::optional<RolloutRecord> r =
      sim.engine.command(RolloutCommand::Pause, kT0 + kSec, false, "checking a dashboard", text);
  REQUIRE(r.has_value());
  CHECK(r->reason == "checking a dashboard");
  r = sim.engine.command(RolloutCommand::Pause, kT0 + kSec, false, "", text);
  REQUIRE(r.has_value());
  CHECK(r->reason == "operator: pause");
}

// --- Replay ---

// Replays `records` into a fresh engine, as a restarted proxy does.
RolloutEngine replay(const config::Rollout& settings, const std::vector<RolloutRecord>& records) {
  RolloutEngine fresh("checkout", settings);
  for (const RolloutRecord& r : records) fresh.apply(r, /*replayed=*/true);
  return fresh;
}

TEST_CASE("rollout: replaying the records restores state, stage and percent") {
  config::Rollout s = rolloutSettings();
  s.stages[1].manual_gate = true;
  Sim sim = started(s);
  sim.rate = 10;
  sim.runUntil(kT0 + 60 * kSec);  // holding
  REQUIRE(sim.engine.state() == RolloutState::Holding);

  SUBCASE("holding") {}
  SUBCASE("running at stage 2") {
    sim.rate = 100;
    sim.runUntil(kT0 + 100 * kSec);
    REQUIRE(sim.engine.stage() == 2);
    REQUIRE(sim.engine.state() == RolloutState::Running);
  }
  SUBCASE("waiting_gate") {
    sim.rate = 100;
    sim.runUntil(kT0 + 160 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::WaitingGate);
  }
  SUBCASE("paused") {
    take(sim.engine, RolloutCommand::Pause, sim.now + kSec);
    REQUIRE(sim.engine.state() == RolloutState::Paused);
  }
  SUBCASE("complete") {
    sim.rate = 100;
    sim.runUntil(kT0 + 160 * kSec);
    take(sim.engine, RolloutCommand::Promote, sim.now);
    sim.runUntil(sim.now + 60 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::Complete);
  }
  SUBCASE("failed") {
    sim.rate = 100;
    sim.variant_error = 0.10;
    REQUIRE(sim.runUntilEvent(RolloutEvent::Fail, kT0 + 200 * kSec));
  }
  SUBCASE("aborted") { take(sim.engine, RolloutCommand::Abort, sim.now + kSec); }
  SUBCASE("retried") {
    take(sim.engine, RolloutCommand::Abort, sim.now + kSec);
    take(sim.engine, RolloutCommand::Retry, sim.now + 2 * kSec);
  }

  const RolloutEngine restored = replay(s, sim.engine.history());
  CHECK(restored.state() == sim.engine.state());
  CHECK(restored.stage() == sim.engine.stage());
  CHECK(restored.percent() == sim.engine.percent());
  CHECK(restored.history().size() == sim.engine.history().size());
  CHECK(restored.nextTransitionMs() == sim.engine.nextTransitionMs());
  CHECK(restored.waitingFor() == sim.engine.waitingFor());
}

TEST_CASE("rollout: replaying through the journal's JSON restores the same rollout") {
  Sim sim = started();
  sim.runUntil(kT0 + 70 * kSec);
  take(sim.engine, RolloutCommand::Pause, sim.now);
  std::vector<RolloutRecord> parsed;
  for (const RolloutRecord& r : sim.engine.history()) {
    std::optional<RolloutRecord> p = parseRecord(recordJson(r, true).dump());
    REQUIRE(p.has_value());
    parsed.push_back(std::move(*p));
  }
  const RolloutEngine restored = replay(rolloutSettings(), parsed);
  CHECK(restored.state() == RolloutState::Paused);
  CHECK(restored.stage() == 2);
  CHECK(restored.percent() == 50.0);
  CHECK(restored.history().size() == 3);
}

TEST_CASE("rollout: after a replay the next tick starts a new warm-up") {
  Sim sim = started();
  sim.runUntil(kT0 + 70 * kSec);  // stage 2 since 60 s, judged from 80 s
  REQUIRE(sim.engine.stage() == 2);

  const int64_t restart = kT0 + 75 * kSec;
  // A new process: its counters start from zero.
  Sim after(replay(rolloutSettings(), sim.engine.history()), restart);
  REQUIRE(after.engine.state() == RolloutState::Running);
  REQUIRE(after.engine.stage() == 2);
  after.drive();  // the first tick: judged from restart + warm-up
  CHECK(after.applied.empty());

  // Not at 80 s (as before the restart): the warm-up counts from the restart.
  after.runUntil(restart + 20 * kSec + 10 * kSec - kSec);
  CHECK(after.engine.intervals() == 0);
  CHECK(after.engine.stageJudged() == 0);
  after.runUntil(restart + 30 * kSec);
  CHECK(after.engine.intervals() == 1);
  CHECK(after.engine.stageJudged() == 500);  // 10 s at 50 of 100 requests/s
  CHECK(after.engine.stage() == 2);

  // The hold kept its origin (60 s): the stage passes at 120 s.
  after.runUntil(kT0 + 119 * kSec);
  CHECK(after.engine.stage() == 2);
  after.runUntil(kT0 + 120 * kSec);
  CHECK(after.engine.stage() == 3);
}

// --- Reloads with the same id ---

TEST_CASE("rollout: updateSettings with fewer stages clamps to the last") {
  Sim sim = started();
  sim.runUntil(kT0 + 130 * kSec);
  REQUIRE(sim.engine.stage() == 3);
  REQUIRE(sim.engine.percent() == 100.0);

  config::Rollout s = rolloutSettings();
  s.stages.pop_back();  // 10%, 50%
  sim.engine.updateSettings(s);
  CHECK(sim.engine.stage() == 2);
  CHECK(sim.engine.percent() == 50.0);
  CHECK(sim.engine.state() == RolloutState::Running);

  // It goes on from there: the last stage's hold passes, complete.
  sim.runUntil(kT0 + 180 * kSec);
  CHECK(sim.engine.state() == RolloutState::Complete);
  CHECK(sim.engine.stage() == 2);
  CHECK(sim.engine.percent() == 50.0);
}

TEST_CASE("rollout: updateSettings with a changed stage percent changes the share") {
  Sim sim = started();
  sim.runUntil(kT0 + 40 * kSec);
  REQUIRE(sim.engine.intervals() == 2);
  config::Rollout s = rolloutSettings();

  SUBCASE("active") {
    s.stages[0].percent = 20.0;
    sim.engine.updateSettings(s);
    CHECK(sim.engine.percent() == 20.0);
    CHECK(sim.engine.stage() == 1);
    CHECK(sim.engine.intervals() == 2);  // same analysis: the evidence is kept
  }
  SUBCASE("paused") {
    take(sim.engine, RolloutCommand::Pause, sim.now);
    s.stages[0].percent = 20.0;
    sim.engine.updateSettings(s);
    CHECK(sim.engine.percent() == 20.0);
  }
  SUBCASE("rolled back: stays at 0") {
    take(sim.engine, RolloutCommand::Abort, sim.now);
    s.stages[0].percent = 20.0;
    sim.engine.updateSettings(s);
    CHECK(sim.engine.percent() == 0.0);
  }
  SUBCASE("a changed analysis starts the evidence over") {
    s.analysis.min_requests = 200;
    sim.engine.updateSettings(s);
    CHECK(sim.engine.intervals() == 0);
    CHECK(sim.engine.stageJudged() == 0);
    CHECK(sim.engine.percent() == 10.0);
  }
}

TEST_CASE("rollout: updateSettings with a changed latency.absolute judges with the new slack") {
  // The variant is 3 ms slower than the baseline: within a slack of 5 ms, beyond a slack of 0.
  config::Rollout s = rolloutSettings();
  s.analysis.latency_absolute_ms = 5;

  SUBCASE("control: with no slack from the start, the latency check fails the variant") {
    s.analysis.latency_absolute_ms = 0;
    Sim sim = started(s);
    sim.variant_us = 13000;
    CHECK(sim.runUntilEvent(RolloutEvent::Fail, kT0 + 60 * kSec));
  }

  SUBCASE("the slack reloaded from 5 ms to 0") {
    Sim sim = started(s);
    sim.variant_us = 13000;
    sim.runUntil(kT0 + 40 * kSec);
    REQUIRE(sim.engine.state() == RolloutState::Running);
    REQUIRE(sim.engine.intervals() == 2);
    s.analysis.latency_absolute_ms = 0;
    sim.engine.updateSettings(s);
    // A changed analysis: its evidence starts over, judged by the new settings.
    CHECK(sim.engine.intervals() == 0);
    CHECK(sim.runUntilEvent(RolloutEvent::Fail, kT0 + 120 * kSec));
    CHECK(sim.engine.state() == RolloutState::Failed);
  }
}

TEST_CASE(
    "rollout: a replay into a config with fewer stages clamps to the last, as a reload does") {
  Sim sim = started();
  sim.runUntil(kT0 + 130 * kSec);
  REQUIRE(sim.engine.stage() == 3);

  // Restarted with the same id and a config whose stages are now 10% and 50%.
  config::Rollout s = rolloutSettings();
  s.stages.pop_back();
  Sim after(replay(s, sim.engine.history()), kT0 + 135 * kSec);
  CHECK(after.engine.state() == RolloutState::Running);
  CHECK(after.engine.percent() == 50.0);
  // Beyond the stages, tick() and nextTransitionMs() would index settings.stages out of range.
  REQUIRE(after.engine.stage() == 2);
  CHECK(after.engine.nextTransitionMs() == kT0 + 180 * kSec);
  after.runUntil(kT0 + 180 * kSec);
  CHECK(after.engine.state() == RolloutState::Complete);
  CHECK(after.engine.percent() == 50.0);
}

// --- Journal ---

RolloutRecord sampleRecord() {
  RolloutRecord r;
  r.at_ms = kT0 + 12345;
  r.event = RolloutEvent::Advance;
  r.state = RolloutState::Running;
  r.stage = 2;
  r.percent = 12.5;
  r.stage_started_ms = kT0 + 6789;
  r.reason = "stage passed \"quoted\"\nand a new line";
  r.verdict = "stage 1 passed (400 judged requests; canary 5xx 0.5% vs blue 0.5%) -> stage 2";
  CheckResult c;
  c.kind = CheckKind::ErrorRatio;
  c.evidence = 2.5;
  c.threshold = 200;
  c.summary = "canary 5xx 0.5% vs blue 0.5%";
  r.checks.push_back(c);
  return r;
}

TEST_CASE("journal: recordJson and parseRecord round-trip a record") {
  for (size_t e = 0; e < kRolloutEvents; ++e) {
    for (size_t s = 0; s < kRolloutStates; ++s) {
      RolloutRecord r = sampleRecord();
      r.event = static_cast<RolloutEvent>(e);
      r.state = static_cast<RolloutState>(s);
      const std::string line = recordJson(r, /*with_checks=*/true).dump();
      CHECK(line.find('\n') == std::string::npos);  // one journal line
      std::optional<RolloutRecord> p = parseRecord(line);
      REQUIRE(p.has_value());
      CHECK(p->event == r.event);
      CHECK(p->state == r.state);
      CHECK(p->stage == r.stage);
      CHECK(p->percent == r.percent);
      CHECK(p->at_ms == r.at_ms);
      CHECK(p->stage_started_ms == r.stage_started_ms);
      CHECK(p->reason == r.reason);
      CHECK(p->verdict == r.verdict);
    }
  }
  const nlohmann::ordered_json j = recordJson(sampleRecord(), true);
  CHECK(j["at"] == "2026-01-01T00:00:12Z");
  CHECK(j["event"] == "advance");
  CHECK(j["state"] == "running");
  REQUIRE(j["checks"].size() == 1);
  CHECK(j["checks"][0]["name"] == "error_ratio");
  CHECK_FALSE(recordJson(sampleRecord(), false).contains("checks"));
}

TEST_CASE("journal: parseRecord takes `at` when at_ms is missing") {
  std::optional<RolloutRecord> p =
      parseRecord(R"({"at":"2026-01-01T00:00:10Z","event":"start","state":"running"})");
  REQUIRE(p.has_value());
  CHECK(p->at_ms == kT0 + 10 * kSec);
  CHECK(p->stage_started_ms == p->at_ms);
}

TEST_CASE("journal: parseRecord rejects what is not a record") {
  const std::string full = recordJson(sampleRecord(), true).dump();
  SUBCASE("garbage") {
    CHECK_FALSE(parseRecord("").has_value());
    CHECK_FALSE(parseRecord("hello").has_value());
    CHECK_FALSE(parseRecord("[1, 2, 3]").has_value());
    CHECK_FALSE(parseRecord("42").has_value());
    CHECK_FALSE(parseRecord("{}").has_value());
    CHECK_FALSE(parseRecord(R"({"event":"explode","state":"running"})").has_value());
    CHECK_FALSE(parseRecord(R"({"event":"start","state":"sleeping"})").has_value());
    CHECK_FALSE(parseRecord(R"({"event":"start","state":"running","at_ms":"soon"})").has_value());
  }
  SUBCASE("a line cut short") {
    for (size_t cut : {full.size() - 1, full.size() / 2, size_t{1}}) {
      CHECK_FALSE(parseRecord(std::string_view(full).substr(0, cut)).has_value());
    }
  }
  SUBCASE("an event or state of the wrong type") {
    // "Nullopt for a line that is not a record" (journal.h): not an exception.
    std::optional<RolloutRecord> p;
    CHECK_NOTHROW(p = parseRecord(R"({"event":1,"state":"running"})"));
    CHECK_FALSE(p.has_value());
    CHECK_NOTHROW(p = parseRecord(R"({"event":"start","state":["running"]})"));
    CHECK_FALSE(p.has_value());
  }
}

// A temporary directory, removed at the end.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sy-rollout-test-XXXXXX";
    const char* made = mkdtemp(tmpl);
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

RolloutRecord numbered(int i) {
  RolloutRecord r = sampleRecord();
  r.at_ms = kT0 + i * kSec;
  r.stage = static_cast<uint32_t>(i);
  r.reason = "record " + std::to_string(i);
  return r;
}

TEST_CASE("journal: open creates the file, append adds lines that a second open reads back") {
  TempDir dir;
  const std::string state_dir = dir.path() + "/state";  // created too
  const std::string expected = state_dir + "/rollouts/checkout/checkout-2.14.jsonl";
  std::vector<RolloutRecord> records;
  std::string error;
  {
    auto journal = RolloutJournal::open(state_dir, "checkout", "checkout-2.14", records, error);
    REQUIRE_MESSAGE(journal != nullptr, error);
    CHECK(journal->path() == expected);
    CHECK(records.empty());
    struct stat st {};
    REQUIRE(stat(expected.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(st.st_size == 0);
    for (int i = 1; i <= 3; ++i) CHECK_MESSAGE(journal->append(numbered(i), error), error);
  }
  const std::string text = readFile(expected);
  CHECK(std::count(text.begin(), text.end(), '\n') == 3);
  CHECK(text.back() == '\n');
  CHECK(text.find("\"checks\"") != std::string::npos);  // the evidence at that moment

  records.push_back(numbered(99));  // open() replaces what was there
  auto journal = RolloutJournal::open(state_dir, "checkout", "checkout-2.14", records, error);
  REQUIRE_MESSAGE(journal != nullptr, error);
  REQUIRE(records.size() == 3);
  for (int i = 1; i <= 3; ++i) {
    CHECK(records[i - 1].reason == "record " + std::to_string(i));
    CHECK(records[i - 1].at_ms == kT0 + i * kSec);
    CHECK(records[i - 1].stage == static_cast<uint32_t>(i));
  }
  // Appending after a reopen goes to the end.
  CHECK(journal->append(numbered(4), error));
  journal.reset();
  journal = RolloutJournal::open(state_dir, "checkout", "checkout-2.14", records, error);
  REQUIRE(journal != nullptr);
  REQUIRE(records.size() == 4);
  CHECK(records[3].reason == "record 4");
}

TEST_CASE("journal: a last line cut short is skipped and the next append starts a new line") {
  TempDir dir;
  std::vector<RolloutRecord> records;
  std::string error;
  std::string path;
  {
    auto journal = RolloutJournal::open(dir.path(), "checkout", "r1", records, error);
    REQUIRE_MESSAGE(journal != nullptr, error);
    path = journal->path();
    CHECK(journal->append(numbered(1), error));
    CHECK(journal->append(numbered(2), error));
  }
  // A crash in the middle of the third line.
  const std::string third = recordJson(numbered(3), true).dump();
  const std::string partial = third.substr(0, third.size() / 2);
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << partial;
  }
  {
    auto journal = RolloutJournal::open(dir.path(), "checkout", "r1", records, error);
    REQUIRE_MESSAGE(journal != nullptr, error);
    REQUIRE(records.size() == 2);
    CHECK(records[0].reason == "record 1");
    CHECK(records[1].reason == "record 2");
    CHECK(journal->append(numbered(4), error));
  }
  const std::string text = readFile(path);
  CHECK(text.find(partial + "\n" + recordJson(numbered(4), true).dump() + "\n") !=
        std::string::npos);
  auto journal = RolloutJournal::open(dir.path(), "checkout", "r1", records, error);
  REQUIRE(journal != nullptr);
  REQUIRE(records.size() == 3);
  CHECK(records[0].reason == "record 1");
  CHECK(records[1].reason == "record 2");
  CHECK(records[2].reason == "record 4");
}

TEST_CASE("journal: open fails with an error when the state dir cannot hold it") {
  TempDir dir;
  const std::string file = dir.path() + "/a-file";
  { std::ofstream(file) << "x"; }
  std::vector<RolloutRecord> records;
  std::string error;
  CHECK(RolloutJournal::open(file, "checkout", "r1", records, error) == nullptr);
  CHECK_FALSE(error.empty());
}

}  // namespace
}  // namespace sy::proxy
