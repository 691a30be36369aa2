#include "proxy/rollout/rollout.h"

#include <ctime>
#include <utility>

namespace sy::proxy {
namespace {

// `unix_ms` in UTC, as strftime writes it with `format`.
std::string utcTime(int64_t unix_ms, const char* format) {
  const time_t t = static_cast<time_t>(unix_ms / 1000);
  tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof(buf), format, &tm);
  return buf;
}

// "10:42:17" (UTC), for verdicts.
std::string clockTime(int64_t unix_ms) { return utcTime(unix_ms, "%H:%M:%S"); }

std::string percentText(double percent) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%g%%", percent);
  return buf;
}

IntervalEvidence minus(const IntervalEvidence& a, const IntervalEvidence& b) {
  // Counters only grow; a smaller value means they were not the same counters (cannot happen
  // within a process), so clamp rather than wrap.
  auto sub = [](uint64_t x, uint64_t y) { return x >= y ? x - y : 0; };
  IntervalEvidence d;
  d.variant = {sub(a.variant.requests, b.variant.requests),
               sub(a.variant.errors, b.variant.errors)};
  d.baseline = {sub(a.baseline.requests, b.baseline.requests),
                sub(a.baseline.errors, b.baseline.errors)};
  for (size_t i = 0; i < kLatencyBuckets; ++i) {
    d.variant_latency[i] = sub(a.variant_latency[i], b.variant_latency[i]);
    d.baseline_latency[i] = sub(a.baseline_latency[i], b.baseline_latency[i]);
  }
  d.shadow_compared = sub(a.shadow_compared, b.shadow_compared);
  d.shadow_mismatched = sub(a.shadow_mismatched, b.shadow_mismatched);
  return d;
}

bool sameAnalysis(const config::RolloutAnalysis& a, const config::RolloutAnalysis& b) {
  return a.interval_ms == b.interval_ms && a.warmup_ms == b.warmup_ms &&
         a.confidence == b.confidence && a.min_requests == b.min_requests &&
         a.error_relative == b.error_relative && a.error_absolute == b.error_absolute &&
         a.latency_quantile == b.latency_quantile && a.latency_relative == b.latency_relative &&
         a.latency_absolute_ms == b.latency_absolute_ms && a.shadow_mismatch == b.shadow_mismatch &&
         a.critical_error_ratio == b.critical_error_ratio;
}

}  // namespace

std::string formatTime(int64_t unix_ms) { return utcTime(unix_ms, "%Y-%m-%dT%H:%M:%SZ"); }

std::optional<RolloutState> parseRolloutState(std::string_view name) {
  for (size_t i = 0; i < kRolloutStates; ++i) {
    if (name == kRolloutStateNames[i]) return static_cast<RolloutState>(i);
  }
  return std::nullopt;
}

std::optional<RolloutEvent> parseRolloutEvent(std::string_view name) {
  for (size_t i = 0; i < kRolloutEvents; ++i) {
    if (name == kRolloutEventNames[i]) return static_cast<RolloutEvent>(i);
  }
  return std::nullopt;
}

RolloutEngine::RolloutEngine(std::string route, config::Rollout settings)
    : route_(std::move(route)),
      settings_(std::move(settings)),
      analyzer_(settings_.analysis, settings_.variant, settings_.baseline) {}

void RolloutEngine::updateSettings(config::Rollout settings) {
  const bool same_arms =
      settings.variant == settings_.variant && settings.baseline == settings_.baseline;
  const bool same_analysis = sameAnalysis(settings.analysis, settings_.analysis);
  settings_ = std::move(settings);
  if (!same_arms || !same_analysis) {
    analyzer_ = RolloutAnalyzer(settings_.analysis, settings_.variant, settings_.baseline);
    restartWindows();
  }
  stage_ = clampedStage(stage_);
  if (active() || state_ == RolloutState::Complete) {
    const double percent = stagePercent(stage_);
    if (percent != percent_) restartWindows();  // a new share: a new warm-up
    percent_ = percent;
  }
}

uint32_t RolloutEngine::clampedStage(uint32_t stage) const {
  // Fewer stages than the one we are in (a reload, or a restart with a shorter list): the last
  // one is the current one.
  return std::min(stage, static_cast<uint32_t>(settings_.stages.size()));
}

void RolloutEngine::restartWindows() {
  judge_from_ms_ = 0;  // the next tick starts the warm-up
  interval_open_ = false;
  stage_base_set_ = false;
  stage_judged_ = 0;
}

double RolloutEngine::stagePercent(uint32_t stage) const {
  if (stage == 0 || settings_.stages.empty()) return 0.0;
  const size_t i = std::min<size_t>(stage, settings_.stages.size()) - 1;
  return settings_.stages[i].percent;
}

bool RolloutEngine::active() const {
  return state_ == RolloutState::Running || state_ == RolloutState::Holding ||
         state_ == RolloutState::WaitingGate || state_ == RolloutState::Paused;
}

void RolloutEngine::apply(RolloutRecord record, bool replayed) {
  const bool share_changed =
      record.percent != percent_ || record.stage != stage_ || record.event == RolloutEvent::Retry;
  state_ = record.state;
  stage_ = clampedStage(record.stage);
  // While the rollout holds a stage, its share is the stage's as configured now (a reload with
  // the same id may have changed it); otherwise what the record says (0 after a rollback).
  percent_ = active() || state_ == RolloutState::Complete ? stagePercent(stage_) : record.percent;
  stage_started_ms_ = record.stage_started_ms;
  if (record.event == RolloutEvent::Pause) paused_at_ms_ = record.at_ms;
  if (record.event == RolloutEvent::Retry) analyzer_.reset();
  if (share_changed || replayed) {
    // A new share: the requests of the next `warmup` are not judged, and the stage's counts
    // start over. After a restart the counters of this process start from zero: the same.
    restartWindows();
    if (!replayed) {
      judge_from_ms_ = record.at_ms + static_cast<int64_t>(settings_.analysis.warmup_ms);
    }
  }
  history_.push_back(std::move(record));
}

RolloutRecord RolloutEngine::makeRecord(int64_t now_ms, RolloutEvent event, RolloutState state,
                                        uint32_t stage, std::string reason) const {
  RolloutRecord r;
  r.at_ms = now_ms;
  r.event = event;
  r.state = state;
  r.stage = stage;
  r.percent = percent_;
  r.stage_started_ms = stage_started_ms_;
  r.reason = std::move(reason);
  r.checks = analyzer_.checks();
  return r;
}

RolloutRecord RolloutEngine::moveTo(int64_t now_ms, RolloutEvent event, uint32_t stage,
                                    std::string reason) const {
  RolloutRecord r = makeRecord(now_ms, event, RolloutState::Running, stage, std::move(reason));
  r.percent = stagePercent(stage);
  r.stage_started_ms = now_ms;
  return r;
}

std::string RolloutEngine::checksLine() const {
  std::string line;
  for (const CheckResult& c : analyzer_.checks()) {
    if (!line.empty()) line += "; ";
    line += c.summary;
  }
  return line;
}

std::optional<RolloutRecord> RolloutEngine::proposeStart(int64_t now_ms) const {
  if (state_ != RolloutState::Pending || settings_.stages.empty()) return std::nullopt;
  if (settings_.start_unix_ms && now_ms < *settings_.start_unix_ms) return std::nullopt;
  RolloutRecord r =
      moveTo(now_ms, RolloutEvent::Start, 1,
             settings_.start_unix_ms ? "start time " + formatTime(*settings_.start_unix_ms)
                                     : "first load of " + settings_.id);
  r.verdict = "stage 1: " + std::string(config::variantName(settings_.variant)) + " at " +
              percentText(r.percent);
  return r;
}

std::optional<RolloutRecord> RolloutEngine::tick(int64_t now_ms,
                                                 const IntervalEvidence& cumulative) {
  if (state_ == RolloutState::Pending) return proposeStart(now_ms);
  if (!active()) return std::nullopt;
  const config::RolloutAnalysis& a = settings_.analysis;
  if (judge_from_ms_ == 0) judge_from_ms_ = now_ms + static_cast<int64_t>(a.warmup_ms);
  const char* variant = config::variantName(settings_.variant);

  // The critical breaker looks at the whole stage, warm-up included: a variant failing half
  // its requests is not given time.
  if (!stage_base_set_) {
    stage_base_ = cumulative.variant;
    stage_base_set_ = true;
  }
  const ArmCounts in_stage{cumulative.variant.requests - stage_base_.requests,
                           cumulative.variant.errors - stage_base_.errors};
  auto fail = [&](std::string why) {
    const bool rollback = settings_.on_failure == config::RolloutFailure::Rollback;
    RolloutRecord r = makeRecord(now_ms, RolloutEvent::Fail, RolloutState::Failed, stage_,
                                 "the analysis failed the variant");
    if (rollback) r.percent = 0.0;
    r.verdict = why + (rollback ? " -> rolled back at " : " -> paused at ") + clockTime(now_ms);
    return r;
  };
  if (criticalBreach(in_stage, a.critical_error_ratio)) {
    char buf[160];
    snprintf(
        buf, sizeof(buf), "%s 5xx %.1f%% of %llu requests in stage %u >= critical %g%%", variant,
        100.0 * static_cast<double>(in_stage.errors) / static_cast<double>(in_stage.requests),
        static_cast<unsigned long long>(in_stage.requests), stage_, 100.0 * a.critical_error_ratio);
    return fail(buf);
  }

  // Judged intervals: after the warm-up, every `interval`, the counters' deltas.
  if (!interval_open_) {
    if (now_ms >= judge_from_ms_) {
      interval_base_ = cumulative;
      interval_end_ms_ = now_ms + static_cast<int64_t>(a.interval_ms);
      interval_open_ = true;
    }
  } else if (now_ms >= interval_end_ms_) {
    const IntervalEvidence delta = minus(cumulative, interval_base_);
    analyzer_.addInterval(delta);
    stage_judged_ += delta.variant.requests;
    interval_base_ = cumulative;
    interval_end_ms_ += static_cast<int64_t>(a.interval_ms);
    if (interval_end_ms_ <= now_ms) interval_end_ms_ = now_ms + static_cast<int64_t>(a.interval_ms);
    if (analyzer_.failed()) {
      for (const CheckResult& c : analyzer_.checks()) {
        if (c.failed) return fail(c.summary);
      }
    }
  }

  // (Stage 0 while active only comes from a journal edited by hand: hold it there.)
  if (state_ == RolloutState::Paused || state_ == RolloutState::WaitingGate || stage_ == 0) {
    return std::nullopt;
  }
  const config::RolloutStage& stage = settings_.stages[stage_ - 1];
  if (now_ms < stage_started_ms_ + static_cast<int64_t>(stage.hold_ms)) return std::nullopt;
  if (stage_judged_ < a.min_requests) {
    if (state_ == RolloutState::Holding) return std::nullopt;
    RolloutRecord r = makeRecord(now_ms, RolloutEvent::Hold, RolloutState::Holding, stage_,
                                 "not enough judged requests");
    r.verdict = "stage " + std::to_string(stage_) + " hold passed with " +
                std::to_string(stage_judged_) + " of " + std::to_string(a.min_requests) +
                " judged requests of " + variant + ": holding";
    return r;
  }
  const std::string passed = "stage " + std::to_string(stage_) + " passed (" +
                             std::to_string(stage_judged_) + " judged requests" +
                             (analyzer_.intervals() > 0 ? "; " + checksLine() : "") + ")";
  if (stage.manual_gate) {
    RolloutRecord r =
        makeRecord(now_ms, RolloutEvent::Gate, RolloutState::WaitingGate, stage_, "manual gate");
    r.verdict = passed + " -> waiting for promote";
    return r;
  }
  if (stage_ >= settings_.stages.size()) {
    RolloutRecord r = makeRecord(now_ms, RolloutEvent::Complete, RolloutState::Complete, stage_,
                                 "last stage passed");
    r.verdict = passed + " -> complete at " + clockTime(now_ms);
    return r;
  }
  RolloutRecord r = moveTo(now_ms, RolloutEvent::Advance, stage_ + 1, "stage passed");
  r.verdict = passed + " -> stage " + std::to_string(stage_ + 1) + " at " + percentText(r.percent) +
              " at " + clockTime(now_ms);
  return r;
}

std::optional<RolloutRecord> RolloutEngine::command(RolloutCommand command, int64_t now_ms,
                                                    bool to_last, std::string_view reason,
                                                    std::string& refusal) const {
  static constexpr const char* kVerbs[] = {"pause", "resume", "promote", "abort", "retry"};
  const std::string verb = kVerbs[static_cast<size_t>(command)];
  const std::string why = reason.empty() ? "operator: " + verb : std::string(reason);
  auto refuse = [&](const char* extra = "") {
    refusal = "cannot " + verb + ": the rollout is " +
              kRolloutStateNames[static_cast<size_t>(state_)] + extra;
    return std::nullopt;
  };
  const bool progressing = state_ == RolloutState::Running || state_ == RolloutState::Holding ||
                           state_ == RolloutState::WaitingGate;
  switch (command) {
    case RolloutCommand::Pause: {
      if (!progressing) return refuse();
      RolloutRecord r = makeRecord(now_ms, RolloutEvent::Pause, RolloutState::Paused, stage_, why);
      r.verdict = "paused at stage " + std::to_string(stage_) + " (" + percentText(percent_) + ")";
      return r;
    }
    case RolloutCommand::Resume: {
      if (state_ != RolloutState::Paused) return refuse();
      RolloutRecord r =
          makeRecord(now_ms, RolloutEvent::Resume, RolloutState::Running, stage_, why);
      // The hold clock stood still while paused.
      r.stage_started_ms = stage_started_ms_ + (now_ms - paused_at_ms_);
      r.verdict = "resumed at stage " + std::to_string(stage_);
      return r;
    }
    case RolloutCommand::Promote: {
      if (!progressing) return refuse(state_ == RolloutState::Paused ? " (resume first)" : "");
      const uint32_t last = static_cast<uint32_t>(settings_.stages.size());
      if (stage_ >= last) {
        RolloutRecord r =
            makeRecord(now_ms, RolloutEvent::Promote, RolloutState::Complete, stage_, why);
        r.verdict = "promoted -> complete at " + clockTime(now_ms);
        return r;
      }
      const uint32_t next = to_last ? last : stage_ + 1;
      RolloutRecord r = moveTo(now_ms, RolloutEvent::Promote, next, why);
      r.verdict = "promoted -> stage " + std::to_string(next) + " at " + percentText(r.percent) +
                  " at " + clockTime(now_ms);
      return r;
    }
    case RolloutCommand::Abort: {
      const bool holds_share = active() || state_ == RolloutState::Pending ||
                               state_ == RolloutState::Complete ||
                               (state_ == RolloutState::Failed && percent_ > 0.0);
      if (!holds_share) return refuse();
      RolloutRecord r = makeRecord(now_ms, RolloutEvent::Abort, RolloutState::Aborted, stage_, why);
      r.percent = 0.0;
      r.verdict = "aborted -> rolled back at " + clockTime(now_ms);
      return r;
    }
    case RolloutCommand::Retry: {
      if (state_ != RolloutState::Failed && state_ != RolloutState::Aborted) return refuse();
      RolloutRecord r = moveTo(now_ms, RolloutEvent::Retry, 1, why);
      r.verdict = "retry: stage 1 at " + percentText(r.percent) + " with fresh evidence";
      return r;
    }
  }
  return std::nullopt;
}

int64_t RolloutEngine::nextTransitionMs() const {
  if (state_ == RolloutState::Pending) return settings_.start_unix_ms.value_or(0);
  if (state_ != RolloutState::Running || stage_ == 0) return 0;
  return stage_started_ms_ + static_cast<int64_t>(settings_.stages[stage_ - 1].hold_ms);
}

std::string RolloutEngine::waitingFor() const {
  switch (state_) {
    case RolloutState::Pending: return "start";
    case RolloutState::Running: return "hold";
    case RolloutState::Holding: return "requests";
    case RolloutState::WaitingGate: return "promote";
    case RolloutState::Paused: return "resume";
    case RolloutState::Failed:
    case RolloutState::Aborted: return "retry";
    case RolloutState::Complete: return "";
  }
  return "";
}

std::string RolloutEngine::verdict() const {
  if (state_ == RolloutState::Pending) {
    return settings_.start_unix_ms ? "pending until " + formatTime(*settings_.start_unix_ms)
                                   : "pending";
  }
  if (state_ == RolloutState::Holding) {
    return "holding: " + std::to_string(stage_judged_) + " of " +
           std::to_string(settings_.analysis.min_requests) + " judged requests of " +
           config::variantName(settings_.variant) + " in stage " + std::to_string(stage_);
  }
  if (state_ == RolloutState::Running && analyzer_.intervals() > 0) {
    return "stage " + std::to_string(stage_) + " at " + percentText(percent_) + ": " + checksLine();
  }
  return history_.empty() ? "" : history_.back().verdict;
}

}  // namespace sy::proxy
