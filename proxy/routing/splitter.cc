// The split: overrides, then weighted rendezvous hashing, then the fallback (SPEC §4.2-4.4).
//
// Why weighted rendezvous hashing (Highest Random Weight, logarithmic method)
// -------------------------------------------------------------------------
// For each weighted variant v with w_v > 0 we hash (salt, 0x00, variant name, 0x00, key) with
// XXH3-64 (seed 0) to h_v, map it to u_v in the open interval (0,1) and score it as
//     score_v = -w_v / log(u_v)
// The highest score wins; an exact tie goes to the lowest variant index. This gives every
// property SPEC §4.3 asks for, by construction rather than by tuning:
//   - Deterministic: XXH3's output is specified bit for bit on every platform and endianness,
//     the arithmetic is IEEE-754 double (no -ffast-math, no FMA contraction in ISO C++ mode),
//     and nothing depends on process state, so every process on every machine agrees.
//   - Exact shares: -log(u_v) is Exp(1), so score_v = w_v / E_v and the winner is the variant
//     with the smallest E_v / w_v ~ Exp(w_v). The minimum of independent exponentials falls on
//     v with probability w_v / sum(w) exactly. Weights are doubles, so the granularity is far
//     finer than the 0.01% the SPEC asks for (a ring or bucket table would cap it).
//   - Minimal disruption: score_v depends only on w_v and the key, never on the other weights.
//     Raising w_c raises only score_c, so a key can only move into c; lowering it can only move
//     keys out of c. Two variants whose weights stay put keep their scores, so no key ever moves
//     between them. A variant set to 0 drops out of the comparison; set back to the same weight
//     its scores are the same numbers again, so it gets exactly its old keys back.
// Plain "hash mod 10000 into cumulative weight ranges" fails minimal disruption (renormalising
// after one change shifts every boundary, moving keys between unchanged variants) and caps the
// granularity, which is why we pay three hashes and three logs per decision (~100 ns).
//
// u_v uses the top 52 bits: u = ((h >> 12) + 0.5) * 2^-52. Every step is exact in a double, so
// u is strictly inside (0,1) and log(u) is finite and negative. (With 53 bits the midpoint
// (2^53 - 1) + 0.5 rounds to 2^53, giving u = 1 and a score of -inf for one hash in 2^53.)
// The one thing outside XXH3 is libm's log(). glibc's is accurate to about half an ULP, but it
// picks an FMA or a plain code path per CPU, so two machines could in principle disagree in the
// last bit for some inputs. That flips a key only when its two best scores also agree to one
// part in 1e16, i.e. never in practice; the golden values in test_splitter.cc pin the rest.
//
// Hashing does not allocate: the parts are copied into a small stack buffer and hashed in one
// shot; longer inputs use XXH3's streaming state on the stack, which yields the same hash.

#include "proxy/routing/splitter.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <bit>
#include <cmath>
#include <cstring>

#include "proxy/routing/client_address.h"
#include "proxy/routing/segments.h"

// Header-only XXH3: inlined for speed, and the streaming state's layout is then ours, not the
// shared library's (XXH3_state_t is only ABI-stable under XXH_INLINE_ALL / static linking).
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace sy::proxy {
namespace {

using config::Variant;

// Covers salt + variant name + key for ordinary keys (session ids, user ids, UUIDs).
constexpr size_t kStackHashBuffer = 256;

uint64_t hashParts(std::string_view salt, std::string_view name, std::string_view key) {
  const size_t total = salt.size() + 1 + name.size() + 1 + key.size();
  if (total <= kStackHashBuffer) {
    char buf[kStackHashBuffer];
    char* p = buf;
    // memcpy with a null source is undefined even for size 0; empty views may have one.
    if (!salt.empty()) std::memcpy(p, salt.data(), salt.size());
    p += salt.size();
    *p++ = '\0';
    std::memcpy(p, name.data(), name.size());
    p += name.size();
    *p++ = '\0';
    if (!key.empty()) std::memcpy(p, key.data(), key.size());
    return XXH3_64bits(buf, total);
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  const char zero = '\0';
  XXH3_64bits_update(&state, salt.data(), salt.size());
  XXH3_64bits_update(&state, &zero, 1);
  XXH3_64bits_update(&state, name.data(), name.size());
  XXH3_64bits_update(&state, &zero, 1);
  XXH3_64bits_update(&state, key.data(), key.size());
  return XXH3_64bits_digest(&state);
}

// Returns the winner and stores its h_v in *hash. Weights that are not > 0 (including NaN)
// take no part. With no positive weight at all (validation rejects that config) the answer
// is blue rather than a crash.
Variant pickWeightedWithHash(std::string_view salt,
                             const std::array<double, config::kWeightedVariants>& weights,
                             std::string_view key, uint64_t* hash) {
  Variant best = Variant::Blue;
  uint64_t best_hash = 0;
  double best_score = 0.0;
  bool found = false;
  for (size_t i = 0; i < config::kWeightedVariants; ++i) {
    const double w = weights[i];
    if (!(w > 0.0)) continue;
    const VariantScore s = variantScore(salt, static_cast<Variant>(i), w, key);
    // Strictly greater: an exact tie keeps the lower index.
    if (!found || s.score > best_score) {
      found = true;
      best = static_cast<Variant>(i);
      best_score = s.score;
      best_hash = s.hash;
    }
  }
  *hash = best_hash;
  return best;
}

void appendHex(std::string& out, uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int shift = 60; shift >= 0; shift -= 4) out.push_back(kDigits[(v >> shift) & 0xf]);
}

bool overrideMatches(const config::Override& o, const Headers& headers, const ClientIp& client,
                     SegmentMatcher* segments) {
  switch (o.kind) {
    case config::Override::Kind::Header:
    case config::Override::Kind::Cookie: {
      const std::optional<std::string_view> value = o.kind == config::Override::Kind::Header
                                                        ? findHeader(headers, o.name)
                                                        : findCookie(headers, o.name);
      if (!value) return false;
      // No regex (the loader always compiles one) degrades to "present" instead of a crash.
      return !o.regex || RE2::FullMatch(*value, *o.regex);
    }
    case config::Override::Kind::ClientIp: return inNetworks(o.networks, client);
    case config::Override::Kind::Segment:
      return segments != nullptr && segments->contains(o.segment);
  }
  return false;
}

// The first present key source; an empty value counts as absent (an empty key would put every
// such client on the same variant, which is worse than the fallback).
std::optional<std::pair<int, std::string_view>> findKey(const config::Route& route,
                                                        const Headers& headers) {
  for (size_t i = 0; i < route.keys.size(); ++i) {
    const config::KeySource& src = route.keys[i];
    const std::optional<std::string_view> value = src.kind == config::KeySource::Kind::Header
                                                      ? findHeader(headers, src.name)
                                                      : findCookie(headers, src.name);
    if (value && !value->empty()) return std::pair{static_cast<int>(i), *value};
  }
  if (!route.assign_cookie.empty()) {
    const std::optional<std::string_view> value = findCookie(headers, route.assign_cookie);
    if (value && !value->empty()) {
      return std::pair{static_cast<int>(route.keys.size()), *value};
    }
  }
  return std::nullopt;
}

bool isOws(char c) { return c == ' ' || c == '\t'; }

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && isOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && isOws(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

VariantScore variantScore(std::string_view salt, config::Variant variant, double weight,
                          std::string_view key) {
  VariantScore s;
  s.hash = hashParts(salt, config::variantName(variant), key);
  s.u = (static_cast<double>(s.hash >> 12) + 0.5) * 0x1.0p-52;
  s.score = -weight / std::log(s.u);
  return s;
}

config::Variant pickWeighted(std::string_view salt,
                             const std::array<double, config::kWeightedVariants>& weights,
                             std::string_view key) {
  uint64_t hash = 0;
  return pickWeightedWithHash(salt, weights, key, &hash);
}

std::array<double, config::kWeightedVariants> weightsWithShare(const config::Route& route,
                                                               config::Variant variant,
                                                               double percent) {
  std::array<double, config::kWeightedVariants> weights = route.weights;
  const size_t v = static_cast<size_t>(variant);
  if (percent >= 100.0) {
    weights.fill(0.0);
    weights[v] = 1.0;
    return weights;
  }
  double others = 0.0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (i != v) others += weights[i];
  }
  weights[v] = percent > 0.0 ? percent / (100.0 - percent) * others : 0.0;
  return weights;
}

uint64_t rolloutSegments(const config::Rollout& rollout, uint32_t stage, double percent) {
  // After a rollback or an abort (share 0), and before the start, segments get what everyone
  // gets; a share held by on_failure = "pause" keeps its segments with it.
  if (!(percent > 0.0)) return 0;
  uint64_t mask = 0;
  for (uint32_t i = 0; i < stage && i < rollout.stages.size(); ++i) {
    for (uint32_t segment : rollout.stages[i].segments) {
      if (segment < config::kMaxSegments) mask |= uint64_t{1} << segment;
    }
  }
  return mask;
}

bool shadowSampled(std::string_view salt, std::string_view key, double percent) {
  if (!(percent > 0.0)) return false;
  if (percent >= 100.0) return true;
  // A separate hash domain ("shadow") so the sample is independent of the variant choice:
  // otherwise a 5% shadow sample could be exactly the canary's 5%.
  const uint64_t h = hashParts(salt, config::variantName(Variant::Shadow), key);
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // [0,1), exact
  return u * 100.0 < percent;
}

std::optional<std::string_view> findCookie(const Headers& headers, std::string_view name) {
  if (name.empty()) return std::nullopt;
  for (const Header& h : headers) {
    if (!equalsIgnoreCase(h.name, "cookie")) continue;
    std::string_view rest(h.value);
    while (!rest.empty()) {
      const size_t semi = rest.find(';');
      std::string_view pair = rest.substr(0, semi);
      rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
      const size_t eq = pair.find('=');
      if (eq == std::string_view::npos) continue;  // not a name=value pair: ignored (RFC 6265)
      // Cookie names are case-sensitive (RFC 6265 §5.4 compares them octet for octet).
      if (trimOws(pair.substr(0, eq)) != name) continue;
      std::string_view value = trimOws(pair.substr(eq + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      return value;
    }
  }
  return std::nullopt;
}

SplitDecision decide(const config::Route& route, const Headers& headers, const ClientIp& client,
                     uint64_t random_a, uint64_t random_b, SegmentMatcher* segments) {
  SplitDecision d;
  // The split key, found once: hashed below, looked up by keys_file segments, and kept under an
  // override too, since shadow sampling follows the user (SPEC §5).
  const auto key = findKey(route, headers);
  if (segments != nullptr) {
    segments->setKey(key ? std::optional<std::string_view>(key->second) : std::nullopt);
  }
  const auto keepKey = [&] {
    if (key) {
      d.key_source_index = key->first;
      d.key.assign(key->second);
    }
  };

  for (size_t i = 0; i < route.overrides.size(); ++i) {
    const config::Override& o = route.overrides[i];
    if (overrideMatches(o, headers, client, segments)) {
      d.variant = o.variant;
      d.reason = SplitDecision::Reason::Override;
      d.override_index = static_cast<int>(i);
      if (o.kind == config::Override::Kind::Segment) d.segment_index = static_cast<int>(o.segment);
      keepKey();
      return d;
    }
  }

  // SPEC §13: a rollout stage's segments get its variant from that stage on, whatever the share.
  if (route.rollout && segments != nullptr) {
    for (uint64_t m = route.rollout_segments; m != 0; m &= m - 1) {
      const auto index = static_cast<uint32_t>(std::countr_zero(m));
      if (segments->contains(index)) {
        d.variant = route.rollout->variant;
        d.reason = SplitDecision::Reason::RolloutSegment;
        d.segment_index = static_cast<int>(index);
        keepKey();
        return d;
      }
    }
  }

  if (key) {
    d.reason = SplitDecision::Reason::Key;
    keepKey();
  } else if (!route.assign_cookie.empty()) {
    // The id is only as unpredictable as the caller's randomness; 128 bits make collisions
    // (two clients sharing a sticky assignment) a non-issue.
    d.reason = SplitDecision::Reason::AssignedCookie;
    d.key.reserve(32);
    appendHex(d.key, random_a);
    appendHex(d.key, random_b);
    d.set_cookie = true;
  } else {
    switch (route.fallback.kind) {
      case config::Fallback::Kind::Random:
        d.reason = SplitDecision::Reason::FallbackRandom;
        // Hashed like a key so a random pick honours the weights exactly as keys do.
        appendHex(d.key, random_a);
        break;
      case config::Fallback::Kind::ClientIp:
        d.reason = SplitDecision::Reason::FallbackClientIp;
        d.key = clientIpText(client);
        break;
      case config::Fallback::Kind::Variant:
        d.reason = SplitDecision::Reason::FallbackVariant;
        d.variant = route.fallback.variant;
        return d;
    }
  }

  // SPEC §3: salt "" means the route name. The loader may already have filled it in; doing it
  // here too keeps a hand-built Route (tests, switchyard-ctl) consistent with the proxy.
  const std::string_view salt = route.salt.empty() ? std::string_view(route.name) : route.salt;
  d.variant = pickWeightedWithHash(salt, route.weights, d.key, &d.hash);
  return d;
}

}  // namespace sy::proxy
