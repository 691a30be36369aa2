// Segments (SPEC §13): each condition, their AND, lazy membership, and how decide() uses them
// (an override naming a segment, a rollout stage's segments). No database here: the country is
// given with setCountry(); tests/unit/config covers the MaxMind lookups.

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <string>
#include <vector>

#include <doctest.h>

#include "config/key_set.h"
#include "proxy/routing/segments.h"
#include "proxy/routing/splitter.h"

namespace sy::proxy {
namespace {

using config::Segment;
using config::Variant;
using Reason = SplitDecision::Reason;

ClientIp ipOf(const char* text) {
  sockaddr_storage ss{};
  if (std::strchr(text, ':') != nullptr) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    REQUIRE(inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1);
  } else {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    REQUIRE(inet_pton(AF_INET, text, &sin->sin_addr) == 1);
  }
  return clientIpFromSockaddr(reinterpret_cast<const sockaddr*>(&ss));
}

config::Cidr cidr(const char* text, unsigned v4_prefix) {
  config::Cidr c;
  c.addr = ipOf(text).bytes;
  c.prefix_len = static_cast<uint8_t>(96 + v4_prefix);
  return c;
}

Segment keysSegment(const char* name, std::string_view keys) {
  Segment s;
  s.name = name;
  s.keys_file = "keys.txt";
  s.keys = config::KeySet::parse(keys, 42);
  return s;
}

Segment headerSegment(const char* name, const char* header, const char* regex,
                      Segment::Source source = Segment::Source::Header) {
  Segment s;
  s.name = name;
  s.source = source;
  s.source_name = header;
  s.regex = std::make_shared<RE2>(regex);
  return s;
}

Segment countrySegment(const char* name, std::vector<config::CountryCode> countries) {
  Segment s;
  s.name = name;
  s.countries = std::move(countries);
  return s;
}

Segment networkSegment(const char* name, std::vector<config::Cidr> networks) {
  Segment s;
  s.name = name;
  s.networks = std::move(networks);
  return s;
}

constexpr config::CountryCode kNZ = config::countryCode('N', 'Z');
constexpr config::CountryCode kAU = config::countryCode('A', 'U');
constexpr config::CountryCode kUS = config::countryCode('U', 'S');

TEST_CASE("each condition alone: keys_file, header, cookie, country, client_ip") {
  const std::vector<Segment> segments = {
      keysSegment("beta", "alice\nbob\n"),
      headerSegment("pro", "X-Plan", "pro|enterprise"),
      headerSegment("cookie", "plan", "gold", Segment::Source::Cookie),
      countrySegment("oceania", {kNZ, kAU}),
      networkSegment("office", {cidr("10.1.0.0", 16)}),
  };
  const Headers headers = {{"x-plan", "enterprise"}, {"Cookie", "a=1; plan=gold"}};
  const ClientIp office = ipOf("10.1.2.3");
  SegmentMatcher m(segments, nullptr, headers, office);
  m.setKey("alice");
  m.setCountry(kAU);
  CHECK(m.all() == 0b11111);

  const Headers other_headers = {{"X-Plan", "enterprise-trial"}, {"Cookie", "plan=silver"}};
  const ClientIp elsewhere = ipOf("10.2.0.1");
  SegmentMatcher n(segments, nullptr, other_headers, elsewhere);
  n.setKey("carol");
  n.setCountry(kUS);
  CHECK(n.all() == 0);

  // No key at all: a keys_file condition does not hold. No country: a country one does not.
  const Headers no_headers;
  SegmentMatcher none(segments, nullptr, no_headers, elsewhere);
  none.setKey(std::nullopt);
  CHECK_FALSE(none.contains(0));
  CHECK(none.country() == 0);  // no database, nothing given
  CHECK_FALSE(none.contains(3));
  CHECK_FALSE(none.contains(99));  // out of range: never a member
}

TEST_CASE("conditions are ANDed; membership is computed once per key") {
  Segment staff = networkSegment("staff", {cidr("192.168.0.0", 16)});
  staff.source = Segment::Source::Header;
  staff.source_name = "X-Staff";
  staff.regex = std::make_shared<RE2>("yes");
  staff.countries = {kNZ};
  staff.keys = config::KeySet::parse("u1\nu2\n", 1);
  const std::vector<Segment> segments = {staff};
  const Headers yes = {{"X-Staff", "yes"}};
  const Headers no = {{"X-Staff", "yes!"}};
  const ClientIp inside = ipOf("192.168.1.1");

  const auto member = [&](const Headers& h, const ClientIp& ip, const char* key,
                          config::CountryCode country) {
    SegmentMatcher m(segments, nullptr, h, ip);
    m.setKey(key);
    m.setCountry(country);
    return m.contains(0);
  };
  CHECK(member(yes, inside, "u1", kNZ));
  CHECK_FALSE(member(no, inside, "u1", kNZ));
  CHECK_FALSE(member(yes, ipOf("192.169.0.1"), "u1", kNZ));
  CHECK_FALSE(member(yes, inside, "u3", kNZ));
  CHECK_FALSE(member(yes, inside, "u1", kAU));

  // setKey forgets what was computed with the previous key.
  SegmentMatcher m(segments, nullptr, yes, inside);
  m.setCountry(kNZ);
  m.setKey("u1");
  CHECK(m.contains(0));
  m.setKey("u3");
  CHECK_FALSE(m.contains(0));
}

config::Route routeWithSegments() {
  config::Route r;
  r.name = "shop";
  r.salt = "shop";
  r.keys = {{config::KeySource::Kind::Header, "X-User-Id"}};
  r.weights = {100, 0, 0};  // blue only, unless a segment decides
  return r;
}

TEST_CASE("an override naming a segment sends its members to its variant, in order") {
  const std::vector<Segment> segments = {keysSegment("beta", "alice\n"),
                                         headerSegment("pro", "X-Plan", "pro")};
  config::Route r = routeWithSegments();
  config::Override beta;
  beta.kind = config::Override::Kind::Segment;
  beta.segment = 0;
  beta.variant = Variant::Canary;
  config::Override pro = beta;
  pro.segment = 1;
  pro.variant = Variant::Green;
  r.overrides = {beta, pro};

  const auto decideFor = [&](const Headers& h) {
    const ClientIp ip = ipOf("1.2.3.4");
    SegmentMatcher m(segments, nullptr, h, ip);
    return decide(r, h, ip, 0, 0, &m);
  };
  SplitDecision d = decideFor({{"X-User-Id", "alice"}, {"X-Plan", "pro"}});
  CHECK(d.variant == Variant::Canary);  // the first override that matches
  CHECK(d.reason == Reason::Override);
  CHECK(d.override_index == 0);
  CHECK(d.segment_index == 0);
  CHECK(d.key == "alice");  // still the request's key (shadow sampling)

  d = decideFor({{"X-User-Id", "bob"}, {"X-Plan", "pro"}});
  CHECK(d.variant == Variant::Green);
  CHECK(d.override_index == 1);
  CHECK(d.segment_index == 1);

  d = decideFor({{"X-User-Id", "bob"}});
  CHECK(d.variant == Variant::Blue);
  CHECK(d.reason == Reason::Key);
  CHECK(d.segment_index == -1);

  // Without a matcher (a caller that has no segments), no request is in any segment.
  const Headers alice = {{"X-User-Id", "alice"}};
  CHECK(decide(r, alice, ipOf("1.2.3.4"), 0, 0).variant == Variant::Blue);
}

TEST_CASE("rollout stage segments: from their stage on, whatever the percent; none at share 0") {
  config::Rollout rollout;
  rollout.variant = Variant::Canary;
  rollout.baseline = Variant::Blue;
  rollout.stages.resize(3);
  rollout.stages[0].percent = 1;
  rollout.stages[0].segments = {1};
  rollout.stages[1].percent = 10;
  rollout.stages[1].segments = {0};
  rollout.stages[2].percent = 50;
  CHECK(rolloutSegments(rollout, 0, 0.0) == 0);      // pending
  CHECK(rolloutSegments(rollout, 1, 1.0) == 0b10);   // stage 1
  CHECK(rolloutSegments(rollout, 2, 10.0) == 0b11);  // stage 2: also stage 1's
  CHECK(rolloutSegments(rollout, 3, 50.0) == 0b11);  // later stages keep them
  CHECK(rolloutSegments(rollout, 2, 0.0) == 0);      // rolled back or aborted
  CHECK(rolloutSegments(rollout, 2, 10.0) == 0b11);  // failed with on_failure = "pause"
  CHECK(rolloutSegments(rollout, 9, 50.0) == 0b11);  // a stage beyond the list is clamped

  const std::vector<Segment> segments = {keysSegment("beta", "alice\n"),
                                         headerSegment("staff", "X-Staff", "yes")};
  config::Route r = routeWithSegments();
  r.rollout = rollout;
  r.weights = weightsWithShare(r, Variant::Canary, 1.0);
  r.rollout_segments = rolloutSegments(rollout, 1, 1.0);
  const ClientIp ip = ipOf("1.2.3.4");
  const auto decideFor = [&](const config::Route& route, const Headers& h) {
    SegmentMatcher m(segments, nullptr, h, ip);
    return decide(route, h, ip, 0, 0, &m);
  };
  // Staff get the canary at 1%, on a key that the hash keeps on blue.
  const Headers staff = {{"X-User-Id", "u-1"}, {"X-Staff", "yes"}};
  REQUIRE(decideFor(r, {{"X-User-Id", "u-1"}}).variant == Variant::Blue);
  SplitDecision d = decideFor(r, staff);
  CHECK(d.variant == Variant::Canary);
  CHECK(d.reason == Reason::RolloutSegment);
  CHECK(d.segment_index == 1);
  CHECK(d.key == "u-1");
  // beta's stage has not come yet.
  CHECK(decideFor(r, {{"X-User-Id", "alice"}}).reason != Reason::RolloutSegment);
  // An override still wins over the rollout (SPEC §11).
  config::Route overridden = r;
  config::Override o;
  o.kind = config::Override::Kind::Header;
  o.name = "X-Staff";
  o.regex = std::make_shared<RE2>("yes");
  o.variant = Variant::Green;
  overridden.overrides = {o};
  CHECK(decideFor(overridden, staff).variant == Variant::Green);
  // Rolled back: share 0 and no segments, so staff are hashed like everyone (blue).
  config::Route rolled_back = r;
  rolled_back.weights = weightsWithShare(r, Variant::Canary, 0.0);
  rolled_back.rollout_segments = rolloutSegments(rollout, 1, 0.0);
  CHECK(decideFor(rolled_back, staff).variant == Variant::Blue);
}

}  // namespace
}  // namespace sy::proxy
