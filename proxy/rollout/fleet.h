#pragma once
// A rollout judged through Prometheus (SPEC §14), as a pure fold: its state is what the stage
// engine (rollout.h, unchanged) reaches when it is given, in one order every replica agrees on,
// the start, each interval's evidence summed over the fleet, and the operator events any replica
// took. No I/O and no clock: the manager feeds it what Prometheus answered.
//
// Order. The engine runs on the interval grid: it starts at `start` and ticks only at T_k (the
// end of interval k) with the evidence summed through interval k, so every record it makes by
// itself is dated T_k and is the same on every replica. An operator event is taken by one
// replica at wall time `at` after the `slot` intervals it had evaluated then; every replica
// applies it after interval `slot` and before interval `slot + 1` (ties by time, replica, seq).
// A replica that learns of an event whose slot it has already passed rebuilds the engine from
// the start (cheap: the engine is pure and the inputs are kept), so the fleet converges on the
// same history.
//
// Thread: main (the manager's).

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "proxy/rollout/prometheus_api.h"
#include "proxy/rollout/rollout.h"

namespace sy::proxy {

class FleetRollout {
 public:
  // `replica`: this process's random id, which marks the events it takes.
  FleetRollout(const config::Rollout& settings, std::string replica)
      : settings_(settings), replica_(std::move(replica)) {}

  // A reload with the same id: the fold starts over with the new settings.
  void updateSettings(RolloutEngine& engine, const config::Rollout& settings) {
    // Evidence of intervals of another length is no evidence: it is read again.
    if (settings.analysis.interval_ms != settings_.analysis.interval_ms) evidence_.clear();
    settings_ = settings;
    rebuild(engine);
  }

  // The fleet's start (T_0); until it is known the engine stays pending.
  const std::optional<int64_t>& start() const { return start_; }
  // Sets the start and starts `engine` (pending until now) at it.
  void setStart(RolloutEngine& engine, int64_t start_ms);

  // Intervals evaluated so far (the engine has seen 1..evaluated()).
  uint64_t evaluated() const { return position_; }
  // Adds the evidence of interval evaluated() + 1 and ticks the engine at its end. Returns the
  // records the engine made (already applied).
  std::vector<RolloutRecord> addInterval(RolloutEngine& engine, const IntervalEvidence& interval);

  // Merges the events read back from Prometheus. The ones this process already has (its own,
  // or read before) are skipped; new ones at the current slot are applied, later ones wait for
  // their slot, and one at a slot already passed rebuilds the engine. Returns the records that
  // are new in the engine's history (for the log and the notifications).
  std::vector<RolloutRecord> mergeEvents(RolloutEngine& engine,
                                         const std::vector<FleetEvent>& events);

  // An operator's call on this replica: applied at once (at the current slot) and returned, to
  // be exported; nullopt with `refusal` as RolloutEngine::command().
  std::optional<FleetEvent> command(RolloutEngine& engine, RolloutCommand command, int64_t now_ms,
                                    bool to_last, const std::string& reason, std::string& refusal,
                                    std::vector<RolloutRecord>& taken);

  const std::string& replica() const { return replica_; }
  // The events this process took, oldest first (exported as metrics).
  const std::vector<FleetEvent>& ownEvents() const { return own_; }

 private:
  // Applies the events of the current slot (position_) not applied yet.
  void applyDue(RolloutEngine& engine, std::vector<RolloutRecord>& taken);
  void applyEvent(RolloutEngine& engine, const FleetEvent& e, std::vector<RolloutRecord>& taken);
  // Ticks the engine at `now_ms` with the cumulative evidence until it has nothing to do.
  void tickAt(RolloutEngine& engine, int64_t now_ms, std::vector<RolloutRecord>& taken);
  void rebuild(RolloutEngine& engine);

  config::Rollout settings_;
  std::string replica_;
  std::optional<int64_t> start_;
  std::vector<IntervalEvidence> evidence_;
  uint64_t position_ = 0;           // intervals the engine has seen (== evidence_.size())
  IntervalEvidence cumulative_;     // their sum
  std::vector<FleetEvent> events_;  // every known event, in fleet order
  std::set<std::pair<std::string, uint64_t>> known_;    // (replica, seq) of events_
  std::set<std::pair<std::string, uint64_t>> applied_;  // those applied to the engine
  std::vector<FleetEvent> own_;
  uint64_t next_seq_ = 1;
};

}  // namespace sy::proxy
