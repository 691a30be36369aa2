#pragma once
// One route's rollout as a state machine (SPEC §11): stages, holds, gates, the checks, and the
// operator's controls. No I/O and no clock: time comes in as wall-clock milliseconds and the
// evidence as cumulative counter samples, so unit tests drive it directly.
//
// Every change of state is first *proposed* as a RolloutRecord, which the caller appends to the
// journal (flushed) and only then *applies*; apply() is the only method that changes the state,
// and replaying a journal is applying its records in order. So what the journal says is what the
// proxy did, and a restarted proxy is in the state and stage of the last record.
//
// Thread: main.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/snapshot.h"
#include "proxy/rollout/analysis.h"

namespace sy::proxy {

enum class RolloutState : uint8_t {
  Pending,      // the start time is not reached
  Running,      // the stage's hold runs
  Holding,      // the hold passed, waiting for min_requests judged requests
  WaitingGate,  // the hold passed, waiting for `promote`
  Paused,       // frozen by an operator
  Failed,       // rolled back (or paused) by the analysis
  Aborted,      // rolled back by an operator
  Complete,     // the last stage's hold passed
};
inline constexpr size_t kRolloutStates = 8;
inline constexpr std::array<const char*, kRolloutStates> kRolloutStateNames = {
    "pending", "running", "holding", "waiting_gate", "paused", "failed", "aborted", "complete"};

enum class RolloutEvent : uint8_t {
  Start,
  Advance,
  Hold,
  Gate,
  Pause,
  Resume,
  Promote,
  Abort,
  Fail,
  Complete,
  Retry
};
inline constexpr size_t kRolloutEvents = 11;
inline constexpr std::array<const char*, kRolloutEvents> kRolloutEventNames = {
    "start",   "advance", "hold", "gate",     "pause", "resume",
    "promote", "abort",   "fail", "complete", "retry"};

std::optional<RolloutState> parseRolloutState(std::string_view name);
std::optional<RolloutEvent> parseRolloutEvent(std::string_view name);

// One event: a journal line and an entry of the history. Carries the whole state after the
// event, so applying it needs nothing else.
struct RolloutRecord {
  int64_t at_ms = 0;  // wall clock
  RolloutEvent event = RolloutEvent::Start;
  RolloutState state = RolloutState::Running;  // after the event
  uint32_t stage = 0;                          // 1-based; 0 = before the first stage
  double percent = 0.0;                        // the variant's share after the event
  int64_t stage_started_ms = 0;     // origin of the stage's hold clock (moved on by pauses)
  std::string reason;               // the operator's, or the engine's
  std::string verdict;              // the decision in words
  std::vector<CheckResult> checks;  // the evidence at that moment (not read back on replay)
};

enum class RolloutCommand : uint8_t { Pause, Resume, Promote, Abort, Retry };

class RolloutEngine {
 public:
  RolloutEngine(std::string route, config::Rollout settings);

  const std::string& route() const { return route_; }
  const config::Rollout& settings() const { return settings_; }
  // A reload with the same id: new stages and tolerances, same state. The analysis keeps its
  // evidence when the analysis settings are unchanged.
  void updateSettings(config::Rollout settings);

  // The variant's share now (what the route's weights must give it).
  double percent() const { return percent_; }
  RolloutState state() const { return state_; }
  uint32_t stage() const { return stage_; }
  const std::vector<RolloutRecord>& history() const { return history_; }

  // The only mutator of the state. `replayed`: read back from the journal at start (the
  // evidence restarts: the counters of this process start at zero).
  void apply(RolloutRecord record, bool replayed = false);

  // The first record of a rollout nobody has seen yet (start = "on_load", or the start time
  // has passed): Start at stage 1. Nullopt while pending.
  std::optional<RolloutRecord> proposeStart(int64_t now_ms) const;

  // Feeds the cumulative evidence counters of this route (variant, baseline, shadow) at
  // `now_ms`: judges the intervals that ended, and returns what should happen next by itself
  // (start, fail, hold, gate, advance, complete), or nullopt. Call it again after applying a
  // record: one record per call.
  std::optional<RolloutRecord> tick(int64_t now_ms, const IntervalEvidence& cumulative);

  // An operator's call. Nullopt with `refusal` set when it is not allowed in this state (409).
  // `to_last`: promote straight to the last stage (?to=100).
  std::optional<RolloutRecord> command(RolloutCommand command, int64_t now_ms, bool to_last,
                                       std::string_view reason, std::string& refusal) const;

  // For /rollouts.
  std::vector<CheckResult> checks() const { return analyzer_.checks(); }
  uint64_t intervals() const { return analyzer_.intervals(); }
  uint64_t stageJudged() const { return stage_judged_; }
  // When the engine next acts by itself (0 = not by itself), and what it waits for now:
  // "", "start", "hold", "requests", "promote", "resume", "retry".
  int64_t nextTransitionMs() const;
  std::string waitingFor() const;
  // The latest decision in words.
  std::string verdict() const;

 private:
  RolloutRecord makeRecord(int64_t now_ms, RolloutEvent event, RolloutState state, uint32_t stage,
                           std::string reason) const;
  RolloutRecord moveTo(int64_t now_ms, RolloutEvent event, uint32_t stage,
                       std::string reason) const;
  double stagePercent(uint32_t stage) const;
  bool active() const;  // running, holding, waiting_gate or paused
  uint32_t clampedStage(uint32_t stage) const;
  // The share changed (or the counters restarted): the warm-up starts again at the next tick,
  // and the stage's counts start over.
  void restartWindows();
  std::string checksLine() const;

  std::string route_;
  config::Rollout settings_;
  RolloutState state_ = RolloutState::Pending;
  uint32_t stage_ = 0;
  double percent_ = 0.0;
  int64_t stage_started_ms_ = 0;
  int64_t paused_at_ms_ = 0;
  std::vector<RolloutRecord> history_;

  // Evidence (not journaled): the analysis, and where the current interval and stage began.
  RolloutAnalyzer analyzer_;
  int64_t judge_from_ms_ = 0;  // intervals start after the warm-up that follows a change
  int64_t interval_end_ms_ = 0;
  bool interval_open_ = false;
  IntervalEvidence interval_base_;  // the cumulative counters when the interval began
  bool stage_base_set_ = false;
  ArmCounts stage_base_;  // the variant's cumulative counters when the stage began
  uint64_t stage_judged_ = 0;
};

// RFC 3339 UTC, e.g. "2026-12-02T10:42:17Z".
std::string formatTime(int64_t unix_ms);

}  // namespace sy::proxy
