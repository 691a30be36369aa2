#pragma once
// The latency histogram of the rollout evidence (SPEC §11): log-linear buckets of microseconds,
// exact below 16 µs, then 8 buckets per power of two (each at most 12.5% wide), up to about
// 4.7 hours; longer times land in the last bucket. Fine enough to compare a variant's requests
// with the baseline's 95th percentile; cheap enough to record per request (a count-leading-zeros
// and two shifts, no loop, no floating point).
//
// Thread: any (pure).

#include <bit>
#include <cstddef>
#include <cstdint>

namespace sy::proxy {

inline constexpr size_t kLatencyBuckets = 256;

inline size_t latencyBucket(uint64_t us) {
  if (us < 16) return static_cast<size_t>(us);
  const unsigned exponent = 63u - static_cast<unsigned>(std::countl_zero(us));  // >= 4
  const size_t sub = static_cast<size_t>((us >> (exponent - 3)) & 7u);
  const size_t bucket = 16 + (exponent - 4) * 8 + sub;
  return bucket < kLatencyBuckets ? bucket : kLatencyBuckets - 1;
}

// The largest value (µs) bucket `b` holds.
inline uint64_t latencyBucketUpperUs(size_t b) {
  if (b < 16) return b;
  const unsigned exponent = 4 + static_cast<unsigned>((b - 16) / 8);
  const uint64_t sub = (b - 16) % 8;
  return ((9 + sub) << (exponent - 3)) - 1;
}

}  // namespace sy::proxy
