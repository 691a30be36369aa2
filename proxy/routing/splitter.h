#pragma once
// key -> variant: overrides, then deterministic weighted hashing of (salt, key), then the
// fallback. Pure: no I/O, no clocks; randomness is passed in by the caller. The running proxy
// and `switchyard-ctl explain/simulate` call exactly these functions, so they cannot disagree.
//
// Thread: any (pure functions over an immutable Route).

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/snapshot.h"
#include "proxy/http/client_ip.h"
#include "proxy/http/http_message.h"

namespace sy::proxy {

class SegmentMatcher;

struct SplitDecision {
  enum class Reason : uint8_t {
    Override,          // override_index says which (a segment override: segment_index too)
    RolloutSegment,    // in segment_index, which the route's rollout sends to its variant now
    Key,               // key_source_index says which source (route.keys.size() = assign_cookie)
    AssignedCookie,    // no key: a fresh id was made the key; respond with Set-Cookie
    FallbackRandom,    // no key, fallback = "random"
    FallbackClientIp,  // no key, fallback = "client_ip"
    FallbackVariant,   // no key, fallback names a variant
  };
  config::Variant variant = config::Variant::Blue;
  Reason reason = Reason::Key;
  int override_index = -1;
  int key_source_index = -1;
  int segment_index = -1;  // the segment that decided (Override by segment, RolloutSegment)
  // The split key when the request has one (hashed unless an override decided), else the
  // fallback's hashed value ("" when nothing was hashed).
  std::string key;
  uint64_t hash = 0;        // the winning variant's hash of (salt, variant, key), for explain
  bool set_cookie = false;  // Reason::AssignedCookie: the response carries Set-Cookie: name=key
};

// Decides the variant of one request on `route`: overrides in order, then the segments the
// route's rollout sends to its variant now (Route::rollout_segments), then the split key's hash,
// then the fallback. `random_a`/`random_b` are fresh random values (used for fallback = "random"
// and to mint assign_cookie ids). `segments` answers segment conditions (its key is set to the
// route's split key here); null: the request is in no segment.
SplitDecision decide(const config::Route& route, const Headers& headers, const ClientIp& client,
                     uint64_t random_a, uint64_t random_b, SegmentMatcher* segments = nullptr);

// Weighted rendezvous hashing over the variants with weight > 0 (see splitter.cc for why it
// has the minimal-disruption properties of SPEC §4). Requires at least one weight > 0.
config::Variant pickWeighted(std::string_view salt,
                             const std::array<double, config::kWeightedVariants>& weights,
                             std::string_view key);

// The route's weights while its rollout gives `variant` `percent` % of the hashed traffic
// (SPEC §11): the variant's weight becomes percent / (100 - percent) x the sum of the others,
// which stay as configured; 0 % gives it weight 0, 100 % leaves it alone weighted. Only the
// variant's weight changes, so raising the share moves keys only into it and a rollback returns
// every key to the variant it had before.
std::array<double, config::kWeightedVariants> weightsWithShare(const config::Route& route,
                                                               config::Variant variant,
                                                               double percent);

// The segments (bit i = Snapshot::segments[i]) that a rollout at `stage` (1-based) with
// `percent` sends to its variant (Route::rollout_segments, SPEC §13): those listed by stages
// 1..stage, none while the share is 0 (pending, rolled back, aborted).
uint64_t rolloutSegments(const config::Rollout& rollout, uint32_t stage, double percent);

// One variant's term in pickWeighted()'s comparison: h_v = XXH3 of (salt, variant name, key),
// u_v in (0,1) from its top 52 bits, and score_v = -weight / log(u_v). pickWeighted() is built
// on this function, so `switchyard-ctl explain` can print every variant's score from the very
// arithmetic the proxy uses. Any weight is accepted; pickWeighted() only compares variants whose
// weight is > 0.
struct VariantScore {
  uint64_t hash = 0;
  double u = 0.0;
  double score = 0.0;
};
VariantScore variantScore(std::string_view salt, config::Variant variant, double weight,
                          std::string_view key);

// Whether `key` falls in the shadow sample of `percent` (0..100). Monotone in percent: a key
// sampled at p is sampled at every p' >= p.
bool shadowSampled(std::string_view salt, std::string_view key, double percent);

// RFC 6265 cookie lookup over every Cookie header; quoted values are unquoted.
std::optional<std::string_view> findCookie(const Headers& headers, std::string_view name);

}  // namespace sy::proxy
