#pragma once
// The rollout's checks (SPEC §11): pure functions from per-interval evidence to a verdict. No
// clock, no I/O, no randomness; the stage engine (rollout.h) feeds it one interval at a time and
// the unit tests feed it simulated intervals.
//
// Method. Every check is an anytime-valid sequential test: its statistic is an e-process, a
// nonnegative process whose expectation stays <= 1 at every interval while the variant is within
// its tolerance, so by Ville's inequality P(it ever reaches 1/alpha) <= alpha however long the
// rollout runs and however often it is looked at. The statistic is a mixture sequential
// probability ratio: for each of a fixed grid of alternatives ("the variant is m times worse than
// tolerated") the likelihood ratio against the tolerance is accumulated over the intervals
// (in log space), and the grid is averaged with equal weights. alpha = 1 - confidence is split
// equally among the statistical checks that are on (error ratio, latency, and shadow mismatch
// when configured), so the whole rollout keeps P(failing a good variant) <= 1 - confidence.
//
//   error_ratio   tolerated: variant <= max(relative x baseline, baseline + absolute). The null is
//                 a union, so the check is an intersection-union test: it fails only when both
//                 tests below reject, each at level alpha_e (alpha_e = alpha / checks on):
//     ratio       conditional on the interval's total errors, the variant's share of them is
//                 Binomial(errors, theta) with theta <= theta0 = r nv / (r nv + nb) while
//                 p_v <= r p_b (nv, nb: the interval's judged requests; Poisson approximation of
//                 rare errors). Alternatives: rho = r x m for m in the grid. This compares the
//                 two over the same intervals, so an incident that hits both does not fail the
//                 variant. When the baseline has no traffic in an interval (the 100% stage), the
//                 interval is judged one-sample against r x U_ref, U_ref the upper confidence
//                 bound of the baseline's rate over the intervals before that had baseline
//                 traffic.
//     absolute    one-sample: the variant's errors against p0 = U_b + absolute, with U_b an
//                 anytime-valid upper confidence bound of the baseline's error rate (Robbins'
//                 beta-binomial mixture confidence sequence at level alpha_e / 2) over the judged
//                 intervals so far; threshold 2 / alpha_e, so P(reject) <= alpha_e / 2 (test) +
//                 alpha_e / 2 (bound wrong).
//   latency       "slow" = slower than the baseline's `quantile` (estimated from the baseline's
//                 histogram of the latest intervals holding >= 10 / (1 - quantile) requests,
//                 and >= 4x the interval's variant requests when the last 64 intervals with
//                 baseline traffic hold that many, so that the estimate's noise stays small
//                 next to the variant's; rounded up to the bucket's upper edge, which favours
//                 the variant); one-sample: the variant's slow requests against
//                 p0 = relative x (1 - quantile). The quantile is a plug-in estimate, so this
//                 check's guarantee is approximate (analysis.cc, kBaselineWindowFactor).
//   shadow        one-sample: mismatching comparisons against p0 = shadow_mismatch.
//   critical      not statistical: >= 20 judged variant requests in the stage and >= the
//                 critical share of them errors fails at once (criticalBreach()).
//
// Thread: any (pure).

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/snapshot.h"
#include "proxy/observe/latency_buckets.h"

namespace sy::proxy {

using LatencyHistogram = std::array<uint64_t, kLatencyBuckets>;

// One arm's judged requests in one interval (or summed over several).
struct ArmCounts {
  uint64_t requests = 0;
  uint64_t errors = 0;
};

// What the data plane saw in one judged interval (deltas of VariantCounters / ShadowCounters).
struct IntervalEvidence {
  ArmCounts variant;
  ArmCounts baseline;
  LatencyHistogram variant_latency{};  // time to the upstream's response head
  LatencyHistogram baseline_latency{};
  uint64_t shadow_compared = 0;
  uint64_t shadow_mismatched = 0;
};

enum class CheckKind : uint8_t { ErrorRatio, Latency, ShadowMismatch };
inline constexpr std::array<const char*, 3> kCheckNames = {"error_ratio", "latency",
                                                           "shadow_mismatch"};

// One check's standing after the intervals seen so far.
struct CheckResult {
  CheckKind kind = CheckKind::ErrorRatio;
  double evidence = 1.0;   // the e-value (for error_ratio: the smaller of its two tests')
  double threshold = 1.0;  // evidence >= threshold fails the check
  bool failed = false;     // evidence >= threshold (sticky: once failed, stays failed)
  // Figures for people (over all judged intervals so far):
  uint64_t variant_requests = 0;   // error_ratio, latency: judged; shadow: comparisons
  uint64_t variant_events = 0;     // errors / slow requests / mismatches
  uint64_t baseline_requests = 0;  // error_ratio, latency (0 for shadow)
  uint64_t baseline_events = 0;
  double tolerated = 0.0;     // the tolerated rate at the latest interval (a fraction)
  uint64_t threshold_us = 0;  // latency: the baseline's quantile at the latest interval
  // e.g. "canary 5xx 2.4% vs blue 0.5% over 3,120 requests: evidence 1,412 >= 100"
  std::string summary;
};

class RolloutAnalyzer {
 public:
  // `variant` and `baseline` name the arms in summaries.
  RolloutAnalyzer(const config::RolloutAnalysis& settings, config::Variant variant,
                  config::Variant baseline);

  // Adds one judged interval (after warm-up) to every check.
  void addInterval(const IntervalEvidence& interval);
  // Forgets all evidence (retry: start again with fresh evidence).
  void reset();

  // The checks that are on, in CheckKind order (shadow only when configured).
  std::vector<CheckResult> checks() const;
  // True once any check failed.
  bool failed() const;
  uint64_t intervals() const;

 private:
  // The mixture's grid of alternatives ("m times worse than tolerated"), analysis.cc.
  static constexpr size_t kGrid = 10;
  using LogRatios = std::array<double, kGrid>;  // log likelihood ratio per alternative
  static constexpr size_t kLatencyRing = 64;    // baseline histograms kept for the quantile

  // One check's accumulated state. Once failed, a check is frozen: its evidence and figures
  // stay those of the interval that failed it (the verdict's explanation).
  struct CheckState {
    LogRatios llr{};           // error_ratio: the ratio test
    LogRatios absolute_llr{};  // error_ratio only: the absolute test
    bool failed = false;
    uint64_t variant_requests = 0;
    uint64_t variant_events = 0;
    uint64_t baseline_requests = 0;
    uint64_t baseline_events = 0;
    double tolerated = 0.0;
    uint64_t threshold_us = 0;
  };

  void addErrors(const IntervalEvidence& interval);
  void addLatency(const IntervalEvidence& interval);
  void addShadow(const IntervalEvidence& interval);
  double baselineUpperBound();  // U_b over all judged baseline requests so far (cached)
  CheckResult baseResult(CheckKind kind, const CheckState& c) const;
  // Baseline requests the latency threshold needs: 10 / (1 - quantile).
  uint64_t latencyBaselineNeeded() const;
  CheckResult errorResult() const;
  CheckResult latencyResult() const;
  CheckResult shadowResult() const;

  config::RolloutAnalysis settings_;
  config::Variant variant_;
  config::Variant baseline_;
  double alpha_e_ = 0.01;  // alpha split among the statistical checks that are on
  uint64_t intervals_ = 0;
  bool failed_ = false;
  CheckState error_;
  CheckState latency_;
  CheckState shadow_;
  // U_b cache: the bound for (errors, requests) as last computed.
  uint64_t bound_errors_ = 0;
  uint64_t bound_requests_ = 0;
  double bound_ = 1.0;
  // The newest baseline latency histograms (intervals with baseline requests), oldest first
  // from ring_next_ once the ring is full.
  std::vector<LatencyHistogram> ring_;
  size_t ring_next_ = 0;
};

// SPEC §11 critical_error_ratio: >= 20 judged variant requests and errors/requests >= ratio.
bool criticalBreach(const ArmCounts& variant_in_stage, double critical_error_ratio);

// Anytime-valid upper confidence bound for a Bernoulli rate after `events` of `trials`
// (Robbins' Beta(1,1)-binomial mixture confidence sequence): with probability >= 1 - delta it
// holds at every trial count at once. 1.0 when trials == 0.
double rateUpperBound(uint64_t events, uint64_t trials, double delta);

}  // namespace sy::proxy
