// libFuzzer target: config loading (SPEC §3), as `switchyard --check` and every reload run it.
//
//   TOML text -> loadSnapshotFromString (toml++ parse, raw structs, validate, compile: RE2,
//   CIDRs, TLS contexts) with a resolver that never touches the network -> on success, the
//   routing code (matchRoute, decide, shadowSampled) over the new snapshot.
//
// Beyond "no crash, no sanitizer report, no exception escapes", every input is checked for:
//   - a result is either a snapshot or at least one error, never both or neither;
//   - each error names the file and a position inside the text;
//   - an accepted snapshot keeps the promises of config/snapshot.h that the data plane relies
//     on: weights finite, >= 0 and summing > 0; a pool for every variant that can be chosen
//     (weight > 0, overrides, fallback, failover, shadow); shadow percent within 0..100;
//   - routing on it picks a variant that has a pool.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/loader.h"
#include "config/validate.h"
#include "proxy/http/http_message.h"
#include "proxy/routing/router.h"
#include "proxy/routing/segments.h"
#include "proxy/routing/splitter.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using namespace sy;
using fuzz::printable;

// Relative certificate and CA paths resolve against this directory, which does not exist.
constexpr const char* kPath = "/nonexistent-switchyard-fuzz/config.toml";

void checkRoute(std::string_view text, const config::Snapshot& snap, const config::Route& r) {
  auto detail = [&] { return "route " + r.name + "\ninput:\n" + printable(text); };
  double sum = 0;
  for (size_t v = 0; v < config::kWeightedVariants; ++v) {
    const double w = r.weights[v];
    FUZZ_CHECK(std::isfinite(w) && w >= 0, "an accepted route has a weight that is not finite >= 0",
               detail());
    if (w > 0) {
      FUZZ_CHECK(r.pools[v] != nullptr,
                 "an accepted route has weight > 0 on a variant without pool", detail());
    }
    sum += w;
  }
  FUZZ_CHECK(sum > 0, "an accepted route has no weight > 0", detail());
  for (const config::Override& o : r.overrides) {
    FUZZ_CHECK(static_cast<size_t>(o.variant) < config::kWeightedVariants &&
                   r.pools[static_cast<size_t>(o.variant)] != nullptr,
               "an accepted override names a variant without pool", detail());
    if (o.kind == config::Override::Kind::Header || o.kind == config::Override::Kind::Cookie) {
      FUZZ_CHECK(o.regex != nullptr && o.regex->ok(), "an accepted override has no usable regex",
                 detail());
    }
    if (o.kind == config::Override::Kind::Segment) {
      FUZZ_CHECK(o.segment < snap.segments.size(), "an accepted override names no segment",
                 detail());
    }
    for (const config::Cidr& c : o.networks) {
      FUZZ_CHECK(c.prefix_len <= 128, "an accepted CIDR has a prefix longer than 128", detail());
    }
  }
  if (r.rollout) {
    for (const config::RolloutStage& stage : r.rollout->stages) {
      for (uint32_t segment : stage.segments) {
        FUZZ_CHECK(segment < snap.segments.size(), "an accepted rollout stage names no segment",
                   detail());
      }
    }
  }
  if (r.fallback.kind == config::Fallback::Kind::Variant) {
    const size_t v = static_cast<size_t>(r.fallback.variant);
    FUZZ_CHECK(v < config::kWeightedVariants && r.pools[v] != nullptr,
               "an accepted fallback names a variant without pool", detail());
  }
  if (r.failover) {
    const size_t v = static_cast<size_t>(*r.failover);
    FUZZ_CHECK(v < config::kWeightedVariants && r.pools[v] != nullptr,
               "an accepted failover names a variant without pool", detail());
  }
  if (r.shadow) {
    FUZZ_CHECK(r.pools[static_cast<size_t>(config::Variant::Shadow)] != nullptr,
               "an accepted route mirrors without a shadow pool", detail());
    FUZZ_CHECK(r.shadow->percent >= 0 && r.shadow->percent <= 100,
               "an accepted shadow percent is outside 0..100", detail());
  }
  if (r.path) FUZZ_CHECK(r.path->ok(), "an accepted route has a broken path regex", detail());
  for (const config::Pool* p : r.pools) {
    if (p == nullptr) continue;
    const auto it = snap.pools.find(p->name);
    FUZZ_CHECK(it != snap.pools.end() && &it->second == p,
               "a route points at a pool that is not the snapshot's", detail());
    FUZZ_CHECK(!p->servers.empty(), "an accepted pool has no server", detail());
  }

  // Requests built from the route's own key sources and override names, so they can match.
  proxy::Headers headers;
  std::string host = r.host.empty() ? "any.test" : r.host;
  if (r.host_wildcard) host = "x" + host.substr(host.front() == '*' ? 1 : 0);
  headers.push_back({"Host", host});
  std::string cookies;
  for (const config::KeySource& k : r.keys) {
    if (k.kind == config::KeySource::Kind::Header) {
      headers.push_back({k.name, "user-42"});
    } else {
      cookies += k.name + "=user-42; ";
    }
  }
  for (const config::Override& o : r.overrides) {
    if (o.kind == config::Override::Kind::Header) headers.push_back({o.name, "1"});
    if (o.kind == config::Override::Kind::Cookie) cookies += o.name + "=1; ";
  }
  if (!cookies.empty()) headers.push_back({"Cookie", cookies});
  const proxy::ClientIp clients[2] = {{},
                                      {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}}};
  const proxy::Headers no_headers;
  for (const proxy::Headers* hs : {static_cast<const proxy::Headers*>(&headers), &no_headers}) {
    for (const proxy::ClientIp& ip : clients) {
      proxy::SegmentMatcher segments(snap.segments, snap.geoip.get(), *hs, ip);
      const proxy::SplitDecision d = proxy::decide(r, *hs, ip, 0x1234, 0x5678, &segments);
      const size_t v = static_cast<size_t>(d.variant);
      FUZZ_CHECK(v < config::kWeightedVariants && r.pools[v] != nullptr,
                 "decide() on an accepted route picked a variant without pool", detail());
      if (r.shadow) {
        (void)proxy::shadowSampled(r.salt.empty() ? r.name : r.salt, d.key, r.shadow->percent);
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // Certificate and CA paths are opened as written: a device or proc file could block or
  // never end. What such a file does is the operator's filesystem, not config parsing.
  for (std::string_view bad : {"/dev", "/proc", "/sys", "/run"}) {
    if (text.find(bad) != std::string_view::npos) return -1;
  }

  const config::LoadResult r = config::loadSnapshotFromString(text, kPath, fuzz::fakeResolve);
  FUZZ_CHECK(r.ok() || !r.errors.empty(), "a rejected config without an error", printable(text));
  FUZZ_CHECK(!r.ok() || r.errors.empty(), "an accepted config with errors", printable(text));

  size_t lines = 1;
  for (char c : text) lines += c == '\n';
  for (const config::ConfigError& e : r.errors) {
    FUZZ_CHECK(e.file == kPath, "an error names another file", e.toString());
    FUZZ_CHECK(e.line <= lines + 1, "an error points past the end of the text",
               e.toString() + "\ninput:\n" + printable(text));
    FUZZ_CHECK(!e.message.empty(), "an error without a message", e.toString());
    (void)config::formatErrors(r.errors);
  }
  if (!r.ok()) return 0;

  const config::Snapshot& snap = *r.snapshot;
  FUZZ_CHECK(snap.segments.size() <= config::kMaxSegments, "more segments than allowed",
             printable(text));
  for (const config::Segment& segment : snap.segments) {
    FUZZ_CHECK(segment.keys || segment.source != config::Segment::Source::None ||
                   !segment.countries.empty() || !segment.networks.empty(),
               "an accepted segment has no condition", printable(text));
    FUZZ_CHECK(segment.source == config::Segment::Source::None ||
                   (segment.regex != nullptr && segment.regex->ok()),
               "an accepted segment has no usable regex", printable(text));
    FUZZ_CHECK(segment.countries.empty() || snap.geoip != nullptr,
               "an accepted segment has countries but no database", printable(text));
  }
  for (const config::Route& route : snap.routes) checkRoute(text, snap, route);
  for (std::string_view host : {"", "shop.example.com", "a.b.example.org:8080", "[::1]:80"}) {
    for (std::string_view path : {"/", "/api/x", "/static/app.js"}) {
      const config::Route* route = proxy::matchRoute(snap, host, path);
      FUZZ_CHECK(route == nullptr || (route >= snap.routes.data() &&
                                      route < snap.routes.data() + snap.routes.size()),
                 "matchRoute returned a route outside the snapshot", printable(text));
    }
  }
  return 0;
}
