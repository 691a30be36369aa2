#include "proxy/rollout/fleet.h"

#include <algorithm>
#include <cstddef>

namespace sy::proxy {
namespace {

// The engine acts at most this often per tick (as the manager's kRecordsPerRound).
constexpr int kRecordsPerTick = 4;
constexpr size_t kMaxReasonBytes = 200;

void add(IntervalEvidence& sum, const IntervalEvidence& e) {
  sum.variant.requests += e.variant.requests;
  sum.variant.errors += e.variant.errors;
  sum.baseline.requests += e.baseline.requests;
  sum.baseline.errors += e.baseline.errors;
  for (size_t i = 0; i < kLatencyBuckets; ++i) {
    sum.variant_latency[i] += e.variant_latency[i];
    sum.baseline_latency[i] += e.baseline_latency[i];
  }
  sum.shadow_compared += e.shadow_compared;
  sum.shadow_mismatched += e.shadow_mismatched;
}

bool sameRecord(const RolloutRecord& a, const RolloutRecord& b) {
  return a.at_ms == b.at_ms && a.event == b.event && a.state == b.state && a.stage == b.stage &&
         a.percent == b.percent;
}

}  // namespace

void FleetRollout::tickAt(RolloutEngine& engine, int64_t now_ms,
                          std::vector<RolloutRecord>& taken) {
  for (int i = 0; i < kRecordsPerTick; ++i) {
    std::optional<RolloutRecord> r = engine.tick(now_ms, cumulative_);
    if (!r) break;
    taken.push_back(*r);
    engine.apply(std::move(*r));
  }
}

void FleetRollout::applyEvent(RolloutEngine& engine, const FleetEvent& e,
                              std::vector<RolloutRecord>& taken) {
  applied_.emplace(e.replica, e.seq);
  std::string refusal;
  // Refused here means refused everywhere (same state at the same slot): skipped.
  std::optional<RolloutRecord> r = engine.command(e.command, e.at_ms, e.to_last, e.reason, refusal);
  if (!r) return;
  taken.push_back(*r);
  engine.apply(std::move(*r));
}

void FleetRollout::applyDue(RolloutEngine& engine, std::vector<RolloutRecord>& taken) {
  if (!start_) return;
  for (const FleetEvent& e : events_) {
    if (e.slot > position_) break;  // events_ is in fleet order: slot first
    if (applied_.count({e.replica, e.seq})) continue;
    applyEvent(engine, e, taken);
  }
}

void FleetRollout::setStart(RolloutEngine& engine, int64_t start_ms) {
  start_ = start_ms;
  rebuild(engine);
}

std::vector<RolloutRecord> FleetRollout::addInterval(RolloutEngine& engine,
                                                     const IntervalEvidence& interval) {
  std::vector<RolloutRecord> taken;
  if (!start_) return taken;
  evidence_.push_back(interval);
  ++position_;
  add(cumulative_, interval);
  tickAt(engine, intervalEndMs(*start_, settings_.analysis.interval_ms, position_), taken);
  applyDue(engine, taken);
  return taken;
}

std::vector<RolloutRecord> FleetRollout::mergeEvents(RolloutEngine& engine,
                                                     const std::vector<FleetEvent>& events) {
  std::vector<RolloutRecord> taken;
  bool late = false;
  bool added = false;
  for (const FleetEvent& e : events) {
    if (!known_.emplace(e.replica, e.seq).second) continue;
    events_.push_back(e);
    added = true;
    // Late: its slot is passed, or it belongs before an event of its slot already applied.
    if (e.slot < position_) late = true;
    for (const FleetEvent& a : events_) {
      if (a.slot == e.slot && applied_.count({a.replica, a.seq}) && fleetEventBefore(e, a)) {
        late = true;
      }
    }
  }
  if (!added) return taken;
  std::sort(events_.begin(), events_.end(), fleetEventBefore);
  if (!late || !start_) {
    applyDue(engine, taken);
    return taken;
  }
  const std::vector<RolloutRecord> before = engine.history();
  rebuild(engine);
  const std::vector<RolloutRecord>& after = engine.history();
  size_t common = 0;
  while (common < before.size() && common < after.size() &&
         sameRecord(before[common], after[common])) {
    ++common;
  }
  taken.assign(after.begin() + static_cast<std::ptrdiff_t>(common), after.end());
  return taken;
}

std::optional<FleetEvent> FleetRollout::command(RolloutEngine& engine, RolloutCommand command,
                                                int64_t now_ms, bool to_last,
                                                const std::string& reason, std::string& refusal,
                                                std::vector<RolloutRecord>& taken) {
  if (!start_) {
    refusal = "the rollout's start is not known yet (it is read from Prometheus)";
    return std::nullopt;
  }
  // The reason travels as a label: kept short, and the same on every replica.
  const std::string why = reason.substr(0, kMaxReasonBytes);
  std::optional<RolloutRecord> r = engine.command(command, now_ms, to_last, why, refusal);
  if (!r) return std::nullopt;
  FleetEvent e;
  e.replica = replica_;
  e.seq = next_seq_++;
  e.command = command;
  e.slot = position_;
  e.at_ms = now_ms;
  e.to_last = to_last;
  e.reason = why;
  known_.emplace(e.replica, e.seq);
  applied_.emplace(e.replica, e.seq);
  events_.push_back(e);
  std::sort(events_.begin(), events_.end(), fleetEventBefore);
  own_.push_back(e);
  taken.push_back(*r);
  engine.apply(std::move(*r));
  return e;
}

void FleetRollout::rebuild(RolloutEngine& engine) {
  engine = RolloutEngine(engine.route(), settings_);
  applied_.clear();
  position_ = 0;
  cumulative_ = IntervalEvidence{};
  if (!start_) return;
  std::vector<RolloutRecord> taken;  // the history holds them
  if (std::optional<RolloutRecord> r = engine.proposeStart(*start_)) engine.apply(std::move(*r));
  tickAt(engine, *start_, taken);
  applyDue(engine, taken);
  for (const IntervalEvidence& interval : evidence_) {
    ++position_;
    add(cumulative_, interval);
    tickAt(engine, intervalEndMs(*start_, settings_.analysis.interval_ms, position_), taken);
    applyDue(engine, taken);
  }
}

}  // namespace sy::proxy
