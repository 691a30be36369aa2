#include "proxy/rollout/analysis.h"

#include <math.h>  // lgamma_r (glibc): std::lgamma writes the global signgam

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

namespace sy::proxy {
namespace {

// The alternatives of every mixture: "the variant is m times worse than tolerated". The grid is
// geometric (about a factor 1.5 apart) from 1.25, the smallest degradation worth detecting within
// a rollout, to 32, an incident that must fail within the first interval or two even at a 1%
// share; a geometric grid keeps any true ratio in [1.25, 32] within ~25% of an alternative, so the
// mixture's growth rate is close to the best single alternative's. Equal weights cost
// log(10) = 2.3 nats (a factor 10 in evidence) against knowing the right alternative in advance.
constexpr std::array<double, 10> kMultipliers = {1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 32};

// The latency threshold is a plug-in estimate: the test is valid given the true quantile, and an
// estimate that falls below it makes a variant at the tolerance look worse than it is. How much
// that costs grows with the variant's requests judged against one estimate: with 200 baseline
// requests (the 10 / (1 - q) minimum) and 5,000 variant requests in an interval, a single low
// estimate is enough to fail a variant at the tolerance, and at 100% the estimate is frozen for
// the whole stage. So the window also takes >= 4x the interval's variant requests when the ring
// holds them: the estimate's noise then adds at most about a sixth to the variance of the
// interval's evidence. In staged simulations (tests) this brought the false failures of a
// variant exactly at the tolerance from 1.3-1.7% to <= 0.2% at 300-1,000 requests per interval
// (the budget is 0.5%), at the cost of older baseline figures when the baseline's share is small.
constexpr uint64_t kBaselineWindowFactor = 4;

constexpr double kMinRate = 1e-6;             // floor of every tolerated rate
constexpr double kMaxAlternative = 1 - 1e-9;  // ceiling of every alternative rate
constexpr double kMaxEvidence = 1e300;        // reported e-values are capped here (never inf)

// log(mean over the grid of exp(llr_j)), with log-sum-exp.
template <size_t N>
double logMixture(const std::array<double, N>& llr) {
  const double top = *std::max_element(llr.begin(), llr.end());
  double sum = 0;
  for (double l : llr) sum += std::exp(l - top);
  return top + std::log(sum) - std::log(static_cast<double>(N));
}

double evidenceOf(double log_evidence) {
  if (std::isnan(log_evidence)) return 1.0;
  return std::exp(std::min(log_evidence, std::log(kMaxEvidence)));
}

// One interval of a one-sample test: `events` of `trials` against the tolerated rate p0;
// alternative j is p1 = m_j x p0. An interval without information changes nothing.
template <size_t N>
void addOneSample(std::array<double, N>& llr, double p0, uint64_t trials, uint64_t events) {
  if (trials == 0) return;
  p0 = std::max(p0, kMinRate);
  if (!(p0 < 1.0)) return;
  const double x = static_cast<double>(std::min(events, trials));
  const double rest = static_cast<double>(trials) - x;
  const double log_p0 = std::log(p0);
  const double log_q0 = std::log1p(-p0);
  for (size_t j = 0; j < N; ++j) {
    const double p1 = std::min(kMultipliers[j] * p0, kMaxAlternative);
    llr[j] += x * (std::log(p1) - log_p0) + rest * (std::log1p(-p1) - log_q0);
  }
}

double logBeta(double a, double b) {
  int sign = 0;
  return ::lgamma_r(a, &sign) + ::lgamma_r(b, &sign) - ::lgamma_r(a + b, &sign);
}

// --- Text for people ---

std::string trimZeros(std::string s) {
  if (s.find('.') == std::string::npos || s.find('e') != std::string::npos) return s;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

std::string printed(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// 3120 -> "3,120".
std::string grouped(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// A fraction as a percentage with one or two significant decimals: "2.4%", "0.75%", "0%".
std::string percent(double fraction) {
  const double pct = fraction * 100;
  if (!(pct > 0)) return "0%";
  if (pct < 0.001) return "<0.001%";
  if (pct < 1) return trimZeros(printed("%.2g", pct)) + "%";
  return trimZeros(printed("%.1f", pct)) + "%";
}

// An e-value or threshold: "0.05", "3.2", "1,412", "3.1e+15".
std::string evidenceText(double e) {
  if (e < 10) return trimZeros(printed("%.2g", e));
  if (e < 1e12) return grouped(static_cast<uint64_t>(std::llround(e)));
  return printed("%.1e", e);
}

// A latency, always in ms or s so that figures compare at a glance: "0.85 ms", "212 ms", "12.3 s".
std::string durationText(uint64_t us) {
  const double ms = static_cast<double>(us) / 1000;
  if (ms < 10) return trimZeros(printed("%.2g", ms)) + " ms";
  if (ms < 10000) return printed("%.0f", ms) + " ms";
  return trimZeros(printed("%.3g", ms / 1000)) + " s";
}

// "p95", "p99.9".
std::string quantileText(double q) { return "p" + trimZeros(printed("%.2f", q * 100)); }

std::string verdictText(double evidence, double threshold, bool failed) {
  return "evidence " + evidenceText(evidence) + (failed ? " >= " : " < ") + evidenceText(threshold);
}

double rate(uint64_t events, uint64_t trials) {
  return trials == 0 ? 0.0 : static_cast<double>(events) / static_cast<double>(trials);
}

}  // namespace

bool criticalBreach(const ArmCounts& variant_in_stage, double critical_error_ratio) {
  return variant_in_stage.requests >= 20 &&
         static_cast<double>(variant_in_stage.errors) >=
             critical_error_ratio * static_cast<double>(variant_in_stage.requests);
}

// Robbins' mixture: with a uniform prior, M_n(p) = B(x+1, n-x+1) / (p^x (1-p)^(n-x)) is a
// nonnegative martingale with mean 1 under the true p, so {p : M_n(p) < 1/delta} holds the true p
// at every n at once with probability >= 1 - delta (Ville). M_n is smallest at x/n (where it is
// <= 1) and increases above it, so the bound is found by bisection on [x/n, 1].
double rateUpperBound(uint64_t events, uint64_t trials, double delta) {
  if (trials == 0) return 1.0;
  const double x = static_cast<double>(std::min(events, trials));
  const double n = static_cast<double>(trials);
  const double log_beta = logBeta(x + 1, n - x + 1);  // - log B(1,1) = 0
  const double limit = std::log(1 / delta);
  auto inside = [&](double p) {
    const double log_m =
        log_beta - (x > 0 ? x * std::log(p) : 0.0) - (n - x > 0 ? (n - x) * std::log1p(-p) : 0.0);
    return log_m < limit;
  };
  if (x == n) return 1.0;  // M_n(1) = 1 / (n + 1) < 1 / delta
  double lo = x / n;
  double hi = 1.0;
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    (inside(mid) ? lo : hi) = mid;
  }
  return hi;
}

RolloutAnalyzer::RolloutAnalyzer(const config::RolloutAnalysis& settings, config::Variant variant,
                                 config::Variant baseline)
    : settings_(settings), variant_(variant), baseline_(baseline) {
  static_assert(kMultipliers.size() == kGrid);
  // Rounded to 12 decimals: 1 - 0.99 is 0.010000000000000009 in binary, and people read the
  // thresholds (200, not 199.99999999999983).
  const double alpha = std::round((1 - settings_.confidence) * 1e12) / 1e12;
  const int checks = 2 + (settings_.shadow_mismatch ? 1 : 0);
  alpha_e_ = alpha / checks;
  reset();
}

void RolloutAnalyzer::reset() {
  intervals_ = 0;
  failed_ = false;
  error_ = CheckState{};
  latency_ = CheckState{};
  shadow_ = CheckState{};
  error_.tolerated = settings_.error_absolute;
  latency_.tolerated =
      std::min(settings_.latency_relative * (1 - settings_.latency_quantile), 0.999);
  shadow_.tolerated = settings_.shadow_mismatch.value_or(0.0);
  bound_errors_ = 0;
  bound_requests_ = 0;
  bound_ = 1.0;
  ring_.clear();
  ring_next_ = 0;
}

bool RolloutAnalyzer::failed() const { return failed_; }
uint64_t RolloutAnalyzer::intervals() const { return intervals_; }

void RolloutAnalyzer::addInterval(const IntervalEvidence& interval) {
  ++intervals_;
  if (!error_.failed) addErrors(interval);
  if (!latency_.failed) addLatency(interval);
  if (settings_.shadow_mismatch && !shadow_.failed) addShadow(interval);
  failed_ = error_.failed || latency_.failed || shadow_.failed;
}

double RolloutAnalyzer::baselineUpperBound() {
  if (error_.baseline_requests != bound_requests_ || error_.baseline_events != bound_errors_) {
    bound_requests_ = error_.baseline_requests;
    bound_errors_ = error_.baseline_events;
    bound_ = rateUpperBound(bound_errors_, bound_requests_, alpha_e_ / 2);
  }
  return bound_;
}

void RolloutAnalyzer::addErrors(const IntervalEvidence& interval) {
  CheckState& c = error_;
  const uint64_t nv = interval.variant.requests;
  const uint64_t nb = interval.baseline.requests;
  const uint64_t ev = std::min(interval.variant.errors, nv);
  const uint64_t eb = std::min(interval.baseline.errors, nb);
  c.variant_requests += nv;
  c.variant_events += ev;
  c.baseline_requests += nb;
  c.baseline_events += eb;
  const double r = settings_.error_relative;
  // U_b (and U_ref, the same figure: intervals without baseline traffic add nothing to it).
  const double upper = baselineUpperBound();

  // Ratio test.
  if (nv > 0 && nb > 0) {
    if (ev + eb > 0) {
      // ev ~ Binomial(e, theta); theta_j / theta0 = m (r nv + nb) / (rho nv + nb) and
      // (1 - theta_j) / (1 - theta0) = (r nv + nb) / (rho nv + nb), rho = r m.
      const double dv = static_cast<double>(nv);
      const double db = static_cast<double>(nb);
      const double e = static_cast<double>(ev + eb);
      const double log_null = std::log(r * dv + db);
      for (size_t j = 0; j < kGrid; ++j) {
        const double log_shift = log_null - std::log(r * kMultipliers[j] * dv + db);
        c.llr[j] += static_cast<double>(ev) * std::log(kMultipliers[j]) + e * log_shift;
      }
    }
  } else if (nv > 0 && c.baseline_requests > 0) {
    addOneSample(c.llr, r * upper, nv, ev);  // the 100% stage: against r x U_ref
  }

  // Absolute test.
  if (c.baseline_requests > 0)
    addOneSample(c.absolute_llr, upper + settings_.error_absolute, nv, ev);

  const double pb = rate(c.baseline_events, c.baseline_requests);
  c.tolerated = c.baseline_requests > 0 ? std::max(r * pb, pb + settings_.error_absolute)
                                        : settings_.error_absolute;
  if (logMixture(c.llr) >= std::log(1 / alpha_e_) &&
      logMixture(c.absolute_llr) >= std::log(2 / alpha_e_)) {
    c.failed = true;
  }
}

void RolloutAnalyzer::addLatency(const IntervalEvidence& interval) {
  CheckState& c = latency_;
  uint64_t baseline_total = 0;
  for (uint64_t n : interval.baseline_latency) baseline_total += n;
  if (baseline_total > 0) {
    if (ring_.size() < kLatencyRing) {
      ring_.push_back(interval.baseline_latency);
    } else {
      ring_[ring_next_] = interval.baseline_latency;
      ring_next_ = (ring_next_ + 1) % kLatencyRing;
    }
  }
  uint64_t variant_total = 0;
  for (uint64_t n : interval.variant_latency) variant_total += n;
  if (variant_total == 0 || ring_.empty()) return;

  // The baseline's quantile from its newest intervals holding >= 10 / (1 - q) requests, and
  // >= 4x the variant's requests of this interval when the ring has them (see
  // kBaselineWindowFactor); all of the ring when it has fewer.
  const double q = settings_.latency_quantile;
  const uint64_t needed = latencyBaselineNeeded();
  LatencyHistogram sum{};
  uint64_t total = 0;
  const uint64_t wanted = std::max(needed, kBaselineWindowFactor * variant_total);
  for (size_t k = 0; k < ring_.size() && total < wanted; ++k) {
    // Newest first: the one before ring_next_ (or the last pushed while filling).
    const size_t newest =
        ring_.size() < kLatencyRing ? ring_.size() - 1 : ring_next_ + kLatencyRing - 1;
    const LatencyHistogram& h = ring_[(newest - k) % kLatencyRing];
    for (size_t b = 0; b < kLatencyBuckets; ++b) {
      sum[b] += h[b];
      total += h[b];
    }
  }
  if (total < needed) return;
  const auto target = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total) - 1e-9));
  size_t bucket = 0;
  for (uint64_t cumulative = 0; bucket < kLatencyBuckets; ++bucket) {
    cumulative += sum[bucket];
    if (cumulative >= target) break;
  }
  bucket = std::min(bucket, kLatencyBuckets - 1);

  // latency.absolute: slow means slower than the quantile by more than this too. The first
  // slow bucket is the one after the bucket holding the threshold, so every request counted
  // slow is slower than the threshold whatever its place in its bucket.
  const uint64_t threshold_us =
      latencyBucketUpperUs(bucket) + settings_.latency_absolute_ms * uint64_t{1000};
  const size_t first_slow = latencyBucket(threshold_us) + 1;
  uint64_t slow = 0;
  uint64_t baseline_slow = 0;
  for (size_t b = first_slow; b < kLatencyBuckets; ++b) {
    slow += interval.variant_latency[b];
    baseline_slow += interval.baseline_latency[b];
  }
  c.variant_requests += variant_total;
  c.variant_events += slow;
  c.baseline_requests += baseline_total;
  c.baseline_events += baseline_slow;
  c.threshold_us = threshold_us;
  addOneSample(c.llr, c.tolerated, variant_total, slow);
  if (logMixture(c.llr) >= std::log(1 / alpha_e_)) c.failed = true;
}

void RolloutAnalyzer::addShadow(const IntervalEvidence& interval) {
  CheckState& c = shadow_;
  const uint64_t n = interval.shadow_compared;
  const uint64_t x = std::min(interval.shadow_mismatched, n);
  c.variant_requests += n;
  c.variant_events += x;
  addOneSample(c.llr, c.tolerated, n, x);
  if (logMixture(c.llr) >= std::log(1 / alpha_e_)) c.failed = true;
}

uint64_t RolloutAnalyzer::latencyBaselineNeeded() const {
  return static_cast<uint64_t>(std::ceil(10 / (1 - settings_.latency_quantile) - 1e-9));
}

// The figures every check reports as they stand; the evidence of its (first) mixture.
CheckResult RolloutAnalyzer::baseResult(CheckKind kind, const CheckState& c) const {
  CheckResult r;
  r.kind = kind;
  r.threshold = 1 / alpha_e_;
  r.evidence = evidenceOf(logMixture(c.llr));
  r.failed = c.failed;
  r.variant_requests = c.variant_requests;
  r.variant_events = c.variant_events;
  r.baseline_requests = c.baseline_requests;
  r.baseline_events = c.baseline_events;
  r.tolerated = c.tolerated;
  r.threshold_us = c.threshold_us;
  return r;
}

CheckResult RolloutAnalyzer::errorResult() const {
  const CheckState& c = error_;
  CheckResult r = baseResult(CheckKind::ErrorRatio, c);
  // The absolute test's e-value scaled to the same threshold (its own is 2 / alpha_e), so that
  // evidence >= threshold exactly when both tests reject.
  r.evidence = std::min(evidenceOf(logMixture(c.llr)),
                        evidenceOf(logMixture(c.absolute_llr) - std::log(2.0)));
  const std::string variant = config::variantName(variant_);
  if (c.variant_requests == 0) {
    r.summary = variant + ": no judged requests yet";
    return r;
  }
  const std::string baseline_rate = c.baseline_requests == 0
                                        ? std::string("(no requests)")
                                        : percent(rate(c.baseline_events, c.baseline_requests));
  r.summary = variant + " 5xx " + percent(rate(c.variant_events, c.variant_requests)) + " vs " +
              config::variantName(baseline_) + " " + baseline_rate + " over " +
              grouped(c.variant_requests) + " requests, tolerated " + percent(c.tolerated) + ": " +
              verdictText(r.evidence, r.threshold, r.failed);
  return r;
}

CheckResult RolloutAnalyzer::latencyResult() const {
  const CheckState& c = latency_;
  CheckResult r = baseResult(CheckKind::Latency, c);
  const std::string variant = config::variantName(variant_);
  const std::string baseline = config::variantName(baseline_);
  const std::string quantile = quantileText(settings_.latency_quantile);
  if (c.variant_requests == 0) {
    r.summary = variant + ": no latency judged yet (needs " + grouped(latencyBaselineNeeded()) +
                " " + baseline + " requests for its " + quantile + ")";
    return r;
  }
  r.summary = variant + " " + percent(rate(c.variant_events, c.variant_requests)) +
              " slower than " + baseline + "'s " + quantile +
              (settings_.latency_absolute_ms > 0
                   ? " + " + durationText(settings_.latency_absolute_ms * 1000)
                   : std::string()) +
              " (" + durationText(c.threshold_us) + ") over " + grouped(c.variant_requests) +
              " requests, tolerated " + percent(c.tolerated) + ": " +
              verdictText(r.evidence, r.threshold, r.failed);
  return r;
}

CheckResult RolloutAnalyzer::shadowResult() const {
  const CheckState& c = shadow_;
  CheckResult r = baseResult(CheckKind::ShadowMismatch, c);
  const std::string variant = config::variantName(variant_);
  if (c.variant_requests == 0) {
    r.summary = variant + ": no shadow comparisons yet";
    return r;
  }
  r.summary = variant + " shadow mismatches " +
              percent(rate(c.variant_events, c.variant_requests)) + " of " +
              grouped(c.variant_requests) + " comparisons, tolerated " + percent(c.tolerated) +
              ": " + verdictText(r.evidence, r.threshold, r.failed);
  return r;
}

std::vector<CheckResult> RolloutAnalyzer::checks() const {
  std::vector<CheckResult> out;
  out.push_back(errorResult());
  out.push_back(latencyResult());
  if (settings_.shadow_mismatch) out.push_back(shadowResult());
  return out;
}

}  // namespace sy::proxy
