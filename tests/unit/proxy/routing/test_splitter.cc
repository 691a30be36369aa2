// The split decision (SPEC §4.2-4.4, §5 sampling). Keys are generated deterministically, so the
// statistical checks are fixed outcomes, not flaky ones; tolerances are ~3 standard deviations.

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <doctest.h>
#include <xxhash.h>

#include "proxy/routing/splitter.h"

namespace sy::proxy {
namespace {

using config::Variant;
using Weights = std::array<double, config::kWeightedVariants>;
using Reason = SplitDecision::Reason;

std::string keyOf(size_t i) { return "user-" + std::to_string(i); }

config::Route makeRoute(Weights weights, std::string salt = "shop") {
  config::Route r;
  r.name = "shop";
  r.salt = std::move(salt);
  r.weights = weights;
  return r;
}

std::vector<Variant> assign(const Weights& weights, size_t n, std::string_view salt = "shop") {
  std::vector<Variant> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(pickWeighted(salt, weights, keyOf(i)));
  return out;
}

std::array<double, config::kWeightedVariants> shares(const std::vector<Variant>& v) {
  std::array<double, config::kWeightedVariants> s{};
  for (Variant x : v) s[static_cast<size_t>(x)] += 1.0;
  for (double& x : s) x /= static_cast<double>(v.size());
  return s;
}

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

// A CIDR as the config stores it: IPv4 mapped, prefix over the 16-byte form.
config::Cidr cidrOf(const char* text, unsigned len) {
  config::Cidr c;
  const bool v4 = std::strchr(text, ':') == nullptr;
  c.addr = ipOf(text).bytes;
  c.prefix_len = static_cast<uint8_t>(v4 ? 96 + len : len);
  return c;
}

config::Override headerOverride(std::string name, const char* regex, Variant v) {
  config::Override o;
  o.kind = config::Override::Kind::Header;
  o.name = std::move(name);
  o.regex = std::make_shared<RE2>(regex);
  REQUIRE(o.regex->ok());
  o.variant = v;
  return o;
}

config::Override cookieOverride(std::string name, const char* regex, Variant v) {
  config::Override o = headerOverride(std::move(name), regex, v);
  o.kind = config::Override::Kind::Cookie;
  return o;
}

config::Override ipOverride(std::vector<config::Cidr> nets, Variant v) {
  config::Override o;
  o.kind = config::Override::Kind::ClientIp;
  o.networks = std::move(nets);
  o.variant = v;
  return o;
}

uint64_t referenceHash(std::string_view salt, std::string_view variant, std::string_view key) {
  std::string buf;
  buf.append(salt).push_back('\0');
  buf.append(variant).push_back('\0');
  buf.append(key);
  return XXH3_64bits_withSeed(buf.data(), buf.size(), 0);
}

constexpr size_t kKeys = 100000;
constexpr double kShareTolerance = 0.005;  // 0.5 percentage points

}  // namespace

TEST_CASE("pickWeighted: each variant's share matches its weight") {
  const std::vector<Weights> sets = {
      {50, 50, 0}, {90, 0, 10}, {33.3, 33.3, 33.4}, {95, 0, 5}, {1, 2, 7}, {1, 1, 1}, {0, 0, 3},
  };
  for (const Weights& w : sets) {
    CAPTURE(w[0]);
    CAPTURE(w[1]);
    CAPTURE(w[2]);
    const double sum = w[0] + w[1] + w[2];
    const auto s = shares(assign(w, kKeys));
    for (size_t i = 0; i < config::kWeightedVariants; ++i) {
      CAPTURE(i);
      CHECK(std::fabs(s[i] - w[i] / sum) < kShareTolerance);
      if (w[i] == 0) CHECK(s[i] == 0.0);  // a weight-0 variant never wins
    }
  }
}

TEST_CASE("pickWeighted: 0.01% granularity") {
  // 99.99 / 0 / 0.01 over 1M keys: canary expects 100 keys (sd 10).
  const Weights w = {99.99, 0, 0.01};
  size_t canary = 0;
  for (size_t i = 0; i < 1000000; ++i) {
    if (pickWeighted("shop", w, keyOf(i)) == Variant::Canary) ++canary;
  }
  CHECK(canary >= 65);
  CHECK(canary <= 135);
}

TEST_CASE("pickWeighted: canary ramp 5 -> 10 moves only blue keys into canary") {
  const auto before = assign({95, 0, 5}, kKeys);
  const auto after = assign({95, 0, 10}, kKeys);
  size_t moved = 0;
  for (size_t i = 0; i < kKeys; ++i) {
    if (before[i] == after[i]) continue;
    ++moved;
    CHECK(before[i] == Variant::Blue);
    CHECK(after[i] == Variant::Canary);
  }
  for (size_t i = 0; i < kKeys; ++i) {
    if (before[i] == Variant::Canary) CHECK(after[i] == Variant::Canary);
  }
  const double expected = 10.0 / 105.0 - 5.0 / 100.0;  // ~4.52% of keys
  CHECK(std::fabs(static_cast<double>(moved) / kKeys - expected) < kShareTolerance);
}

TEST_CASE("pickWeighted: changing one weight never moves keys between the other two") {
  const Weights base = {50, 45, 5};
  const auto before = assign(base, kKeys);
  SUBCASE("canary grows") {
    const auto after = assign({50, 45, 20}, kKeys);
    for (size_t i = 0; i < kKeys; ++i) {
      if (before[i] != after[i]) CHECK(after[i] == Variant::Canary);
    }
    // Blue and green shrink in proportion, so both lose keys to canary.
    const auto s = shares(after);
    CHECK(std::fabs(s[2] - 20.0 / 115.0) < kShareTolerance);
  }
  SUBCASE("canary shrinks") {
    const auto after = assign({50, 45, 2}, kKeys);
    for (size_t i = 0; i < kKeys; ++i) {
      if (before[i] != after[i]) CHECK(before[i] == Variant::Canary);
      if (before[i] != Variant::Canary) CHECK(after[i] == before[i]);
    }
  }
  SUBCASE("green shrinks to 0: its keys go to blue and canary, nothing else moves") {
    const auto after = assign({50, 0, 5}, kKeys);
    for (size_t i = 0; i < kKeys; ++i) {
      if (before[i] != Variant::Green) CHECK(after[i] == before[i]);
      CHECK(after[i] != Variant::Green);
    }
  }
}

TEST_CASE("pickWeighted: a variant set to 0 and back gets exactly its old keys back") {
  const auto before = assign({40, 30, 30}, kKeys);
  const auto zero = assign({40, 0, 30}, kKeys);
  const auto back = assign({40, 30, 30}, kKeys);
  CHECK(before == back);
  size_t green = 0;
  for (size_t i = 0; i < kKeys; ++i) {
    CHECK(zero[i] != Variant::Green);
    if (before[i] == Variant::Green) ++green;
  }
  CHECK(green > 0);
}

TEST_CASE("pickWeighted: no positive weight (rejected by validation) answers blue, no crash") {
  CHECK(pickWeighted("s", {0, 0, 0}, "k") == Variant::Blue);
  CHECK(pickWeighted("s", {-1, std::nan(""), 0}, "k") == Variant::Blue);
  CHECK(pickWeighted("s", {-1, std::nan(""), 2}, "k") == Variant::Canary);
}

TEST_CASE("pickWeighted: only relative weights matter") {
  CHECK(assign({95, 0, 5}, 20000) == assign({19, 0, 1}, 20000));
}

TEST_CASE("decide: deterministic across independently built routes, pinned golden values") {
  // Two Route objects built separately (different addresses, different string buffers).
  const config::Route a = makeRoute({90, 5, 5}, "golden");
  const config::Route b = makeRoute({90, 5, 5}, std::string("gol") + "den");
  for (size_t i = 0; i < 1000; ++i) {
    const Headers h = {{"X-User-Id", keyOf(i)}};
    config::Route ra = a, rb = b;
    ra.keys = rb.keys = {{config::KeySource::Kind::Header, "X-User-Id"}};
    CHECK(decide(ra, h, {}, 1, 2).variant == decide(rb, h, {}, 3, 4).variant);
  }
  // Golden values, cross-checked against an independent Python reimplementation over the
  // system libxxhash: an accidental change to the byte layout, the hash or the score formula
  // reassigns users in production, so it must fail here first.
  struct Golden {
    const char* key;
    Variant variant;
    uint64_t hash;  // the winner's XXH3 of "golden\0<variant>\0<key>"
  };
  const Golden golden[] = {
      {"alice", Variant::Green, 15083381036684652860uLL},
      {"bob", Variant::Blue, 18272767666831659201uLL},
      {"carol", Variant::Blue, 16239135321665558106uLL},
      {"heidi", Variant::Canary, 17390239117587714146uLL},
      {"ivan", Variant::Green, 14787358696943190808uLL},
      {"user-42", Variant::Canary, 16078067923035104160uLL},
      {"", Variant::Blue, 16367496993376357338uLL},
  };
  config::Route r = makeRoute({34, 33, 33}, "golden");
  r.keys = {{config::KeySource::Kind::Header, "X-User-Id"}};
  r.fallback.kind = config::Fallback::Kind::Variant;
  for (const Golden& g : golden) {
    CAPTURE(g.key);
    CHECK(pickWeighted("golden", r.weights, g.key) == g.variant);
    if (*g.key == '\0') continue;  // an empty key is absent for decide()
    const SplitDecision d = decide(r, {{"X-User-Id", g.key}}, {}, 0, 0);
    CHECK(d.variant == g.variant);
    CHECK(d.hash == g.hash);
  }
  // Shadow sample positions: "alice" sits at 23.93%, "bob" at 70.35%.
  CHECK_FALSE(shadowSampled("golden", "alice", 23.9));
  CHECK(shadowSampled("golden", "alice", 24.0));
  CHECK_FALSE(shadowSampled("golden", "bob", 70.3));
  CHECK(shadowSampled("golden", "bob", 70.4));
}

TEST_CASE("decide: hash is XXH3 of salt\\0variant\\0key, for short and long keys") {
  config::Route r = makeRoute({0, 0, 1}, "s");
  r.keys = {{config::KeySource::Kind::Header, "K"}};
  // 300+ bytes exceeds the stack buffer and takes the streaming path; it must hash the same.
  for (const std::string& key :
       {std::string("k"), std::string(200, 'x'), std::string(300, 'y'), std::string(5000, 'z')}) {
    const SplitDecision d = decide(r, {{"K", key}}, {}, 0, 0);
    CHECK(d.variant == Variant::Canary);
    CHECK(d.hash == referenceHash("s", "canary", key));
  }
}

TEST_CASE("pickWeighted: a salt change reshuffles the expected fraction of keys") {
  SUBCASE("50/50") {
    const auto a = assign({50, 50, 0}, kKeys, "salt-a");
    const auto b = assign({50, 50, 0}, kKeys, "salt-b");
    size_t moved = 0;
    for (size_t i = 0; i < kKeys; ++i) moved += a[i] != b[i];
    CHECK(std::fabs(static_cast<double>(moved) / kKeys - 0.5) < kShareTolerance);
  }
  SUBCASE("95/0/5") {
    const auto a = assign({95, 0, 5}, kKeys, "salt-a");
    const auto b = assign({95, 0, 5}, kKeys, "salt-b");
    size_t moved = 0;
    for (size_t i = 0; i < kKeys; ++i) moved += a[i] != b[i];
    // Independent assignments agree with probability sum(p^2).
    const double expected = 1.0 - (0.95 * 0.95 + 0.05 * 0.05);
    CHECK(std::fabs(static_cast<double>(moved) / kKeys - expected) < kShareTolerance);
  }
}

TEST_CASE("decide: an empty salt means the route name") {
  config::Route named = makeRoute({50, 50, 0}, "");
  named.name = "checkout";
  named.keys = {{config::KeySource::Kind::Header, "K"}};
  for (size_t i = 0; i < 200; ++i) {
    const SplitDecision d = decide(named, {{"K", keyOf(i)}}, {}, 0, 0);
    CHECK(d.variant == pickWeighted("checkout", named.weights, keyOf(i)));
  }
}

TEST_CASE("decide: overrides") {
  config::Route r = makeRoute({100, 0, 0});
  r.keys = {{config::KeySource::Kind::Header, "X-User-Id"}};
  const Headers user = {{"X-User-Id", "u1"}};

  SUBCASE("header regex must match the whole value") {
    r.overrides = {headerOverride("X-Canary", "1|true|yes", Variant::Canary)};
    Headers h = user;
    h.push_back({"x-canary", "yes"});
    SplitDecision d = decide(r, h, {}, 0, 0);
    CHECK(d.variant == Variant::Canary);
    CHECK(d.reason == Reason::Override);
    CHECK(d.override_index == 0);
    // The key is still reported (shadow sampling follows the user), though not hashed.
    CHECK(d.key == "u1");
    CHECK(d.key_source_index == 0);
    CHECK(d.hash == 0);

    h.back().value = "yes-please";  // a partial match is not a match
    d = decide(r, h, {}, 0, 0);
    CHECK(d.variant == Variant::Blue);
    CHECK(d.reason == Reason::Key);
    CHECK(d.override_index == -1);
  }
  SUBCASE("absent header does not match even a regex that accepts empty") {
    r.overrides = {headerOverride("X-Canary", ".*", Variant::Canary)};
    CHECK(decide(r, user, {}, 0, 0).variant == Variant::Blue);
  }
  SUBCASE("cookie") {
    r.overrides = {cookieOverride("beta", "on", Variant::Green)};
    CHECK(decide(r, {{"Cookie", "a=1; beta=on"}}, {}, 0, 0).variant == Variant::Green);
    CHECK(decide(r, {{"Cookie", "a=1; beta=only"}}, {}, 0, 0).variant == Variant::Blue);
    CHECK(decide(r, {{"X-Beta", "on"}}, {}, 0, 0).variant == Variant::Blue);
  }
  SUBCASE("client_ip v4 and v6") {
    r.overrides = {ipOverride({cidrOf("10.0.0.0", 8), cidrOf("2001:db8::", 32)}, Variant::Canary)};
    CHECK(decide(r, user, ipOf("10.200.3.4"), 0, 0).variant == Variant::Canary);
    CHECK(decide(r, user, ipOf("11.0.0.1"), 0, 0).variant == Variant::Blue);
    CHECK(decide(r, user, ipOf("2001:db8:1::5"), 0, 0).variant == Variant::Canary);
    CHECK(decide(r, user, ipOf("2001:db9::5"), 0, 0).variant == Variant::Blue);
    // An IPv4 network does not swallow IPv6 clients whose low bytes look alike.
    CHECK(decide(r, user, ipOf("::a00:1"), 0, 0).variant == Variant::Blue);
  }
  SUBCASE("client_ip prefix lengths not on a byte boundary, /32 and ::1/128") {
    r.overrides = {ipOverride({cidrOf("192.168.4.0", 22), cidrOf("::1", 128)}, Variant::Green)};
    CHECK(decide(r, user, ipOf("192.168.7.255"), 0, 0).variant == Variant::Green);
    CHECK(decide(r, user, ipOf("192.168.8.0"), 0, 0).variant == Variant::Blue);
    CHECK(decide(r, user, ipOf("::1"), 0, 0).variant == Variant::Green);
    CHECK(decide(r, user, ipOf("::2"), 0, 0).variant == Variant::Blue);
  }
  SUBCASE("first matching override wins, in order") {
    r.overrides = {headerOverride("X-A", "x", Variant::Green),
                   headerOverride("X-B", "y", Variant::Canary),
                   ipOverride({cidrOf("0.0.0.0", 0)}, Variant::Green)};
    SplitDecision d = decide(r, {{"X-B", "y"}, {"X-A", "x"}}, ipOf("1.2.3.4"), 0, 0);
    CHECK(d.variant == Variant::Green);
    CHECK(d.override_index == 0);
    d = decide(r, {{"X-B", "y"}}, ipOf("1.2.3.4"), 0, 0);
    CHECK(d.variant == Variant::Canary);
    CHECK(d.override_index == 1);
    d = decide(r, {}, ipOf("1.2.3.4"), 0, 0);
    CHECK(d.override_index == 2);
    // 0.0.0.0/0 covers only IPv4 (mapped ::ffff:0:0/96), not IPv6 clients.
    d = decide(r, {}, ipOf("2001:db8::1"), 0, 0);
    CHECK(d.reason != Reason::Override);
  }
  SUBCASE("an override may name a weight-0 variant") {
    r.overrides = {headerOverride("X-Canary", "1", Variant::Canary)};
    CHECK(r.weights[2] == 0);
    CHECK(decide(r, {{"X-Canary", "1"}}, {}, 0, 0).variant == Variant::Canary);
  }
}

TEST_CASE("decide: key sources in order; empty counts as absent") {
  config::Route r = makeRoute({50, 50, 0});
  r.keys = {{config::KeySource::Kind::Header, "X-User-Id"},
            {config::KeySource::Kind::Cookie, "session"}};
  SplitDecision d = decide(r, {{"Cookie", "session=abc"}, {"x-user-id", "u7"}}, {}, 0, 0);
  CHECK(d.reason == Reason::Key);
  CHECK(d.key_source_index == 0);
  CHECK(d.key == "u7");
  CHECK(d.variant == pickWeighted("shop", r.weights, "u7"));
  CHECK(d.hash != 0);

  d = decide(r, {{"Cookie", "session=abc"}}, {}, 0, 0);
  CHECK(d.key_source_index == 1);
  CHECK(d.key == "abc");

  d = decide(r, {{"X-User-Id", ""}, {"Cookie", "session=abc"}}, {}, 0, 0);
  CHECK(d.key_source_index == 1);
  CHECK(d.key == "abc");

  // The first header of the name is the one used.
  d = decide(r, {{"X-User-Id", "first"}, {"X-User-Id", "second"}}, {}, 0, 0);
  CHECK(d.key == "first");

  d = decide(r, {{"Cookie", "session="}}, {}, 0x1234, 0);
  CHECK(d.reason == Reason::FallbackRandom);
}

TEST_CASE("findCookie: RFC 6265 parsing") {
  const Headers h = {
      {"Host", "x"},
      {"Cookie", "session=s1;sid=short ;  theme=\"dark\""},
      {"cookie", "late=1; session=ignored"},
      {"COOKIE", "odd; empty=; q=\"; bare=\"\""},
  };
  CHECK(findCookie(h, "session") == "s1");
  CHECK(findCookie(h, "sid") == "short");  // a prefix of "session" is its own cookie
  CHECK(findCookie(h, "sess") == std::nullopt);
  CHECK(findCookie(h, "theme") == "dark");  // quoted value is unquoted
  CHECK(findCookie(h, "late") == "1");      // later Cookie headers are searched too
  CHECK(findCookie(h, "empty") == "");
  CHECK(findCookie(h, "q") == "\"");   // a lone quote is not a quoted value
  CHECK(findCookie(h, "bare") == "");  // "" is an empty quoted value
  CHECK(findCookie(h, "odd") == std::nullopt);
  CHECK(findCookie(h, "SESSION") == std::nullopt);  // cookie names are case-sensitive
  CHECK(findCookie(h, "") == std::nullopt);
  CHECK(findCookie({{"X-Cookie", "session=no"}}, "session") == std::nullopt);
  CHECK(findCookie({}, "a") == std::nullopt);
  CHECK(findCookie({{"Cookie", "a=1;b=2"}}, "b") == "2");
  CHECK(findCookie({{"Cookie", "a=x=y"}}, "a") == "x=y");
  CHECK(findCookie({{"Cookie", ";;a=1;"}}, "a") == "1");
}

TEST_CASE("decide: assign_cookie mints an id, then reuses it") {
  config::Route r = makeRoute({50, 25, 25});
  r.keys = {{config::KeySource::Kind::Header, "X-User-Id"}};
  r.assign_cookie = "sy_id";

  const SplitDecision minted =
      decide(r, {{"Cookie", "other=1"}}, {}, 0x0123456789abcdefull, 0xfedcba9876543210ull);
  CHECK(minted.reason == Reason::AssignedCookie);
  CHECK(minted.set_cookie);
  CHECK(minted.key == "0123456789abcdeffedcba9876543210");
  CHECK(minted.variant == pickWeighted("shop", r.weights, minted.key));

  // The client comes back with the cookie: same variant, no new Set-Cookie.
  const SplitDecision reused = decide(r, {{"Cookie", "other=1; sy_id=" + minted.key}}, {}, 7, 8);
  CHECK(reused.reason == Reason::Key);
  CHECK(reused.key_source_index == 1);  // == route.keys.size()
  CHECK_FALSE(reused.set_cookie);
  CHECK(reused.key == minted.key);
  CHECK(reused.variant == minted.variant);
  CHECK(reused.hash == minted.hash);

  // A configured key source beats the assigned cookie.
  const SplitDecision keyed =
      decide(r, {{"Cookie", "sy_id=" + minted.key}, {"X-User-Id", "u1"}}, {}, 7, 8);
  CHECK(keyed.key_source_index == 0);
  CHECK(keyed.key == "u1");

  // Minted ids follow the caller's randomness and are lowercase hex, 32 chars.
  const SplitDecision other = decide(r, {}, {}, 1, 2);
  CHECK(other.key == "00000000000000010000000000000002");
}

TEST_CASE("decide: fallbacks") {
  config::Route r = makeRoute({80, 0, 20});
  r.keys = {{config::KeySource::Kind::Header, "X-User-Id"}};

  SUBCASE("random honours the weights") {
    r.fallback.kind = config::Fallback::Kind::Random;
    const SplitDecision d = decide(r, {}, {}, 0xabcull, 0);
    CHECK(d.reason == Reason::FallbackRandom);
    CHECK(d.key == "0000000000000abc");
    CHECK_FALSE(d.set_cookie);
    CHECK(d.variant == pickWeighted("shop", r.weights, d.key));
    size_t canary = 0;
    uint64_t x = 88172645463325252ull;  // xorshift64: injected, reproducible randomness
    for (size_t i = 0; i < kKeys; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      canary += decide(r, {}, {}, x, 0).variant == Variant::Canary;
    }
    CHECK(std::fabs(static_cast<double>(canary) / kKeys - 0.2) < kShareTolerance);
  }
  SUBCASE("client_ip hashes the address text") {
    r.fallback.kind = config::Fallback::Kind::ClientIp;
    SplitDecision d = decide(r, {}, ipOf("10.1.2.3"), 0, 0);
    CHECK(d.reason == Reason::FallbackClientIp);
    CHECK(d.key == "10.1.2.3");
    CHECK(d.variant == pickWeighted("shop", r.weights, "10.1.2.3"));
    d = decide(r, {}, ipOf("2001:db8::1"), 0, 0);
    CHECK(d.key == "2001:db8::1");
    // Same client, same variant, whatever the randomness.
    CHECK(decide(r, {}, ipOf("10.1.2.3"), 1, 1).variant ==
          decide(r, {}, ipOf("10.1.2.3"), 2, 2).variant);
  }
  SUBCASE("a named variant, even one at weight 0") {
    r.fallback.kind = config::Fallback::Kind::Variant;
    r.fallback.variant = Variant::Green;
    const SplitDecision d = decide(r, {}, {}, 0, 0);
    CHECK(d.reason == Reason::FallbackVariant);
    CHECK(d.variant == Variant::Green);
    CHECK(d.key.empty());
    CHECK(d.hash == 0);
  }
}

TEST_CASE("clientIpFromSockaddr") {
  const ClientIp v4 = ipOf("192.0.2.7");
  const std::array<uint8_t, 16> mapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7};
  CHECK(v4.bytes == mapped);
  const ClientIp v6 = ipOf("2001:db8::ff");
  CHECK(v6.bytes[0] == 0x20);
  CHECK(v6.bytes[1] == 0x01);
  CHECK(v6.bytes[15] == 0xff);
  CHECK(clientIpFromSockaddr(nullptr).bytes == std::array<uint8_t, 16>{});
  sockaddr unix_addr{};
  unix_addr.sa_family = AF_UNIX;
  CHECK(clientIpFromSockaddr(&unix_addr).bytes == std::array<uint8_t, 16>{});
}

TEST_CASE("shadowSampled: share matches percent and is monotone in percent") {
  const std::vector<double> percents = {0.0, 0.5, 5.0, 10.0, 33.3, 50.0, 99.0, 100.0};
  std::vector<size_t> counts(percents.size());
  for (size_t i = 0; i < kKeys; ++i) {
    const std::string key = keyOf(i);
    bool previous = false;
    for (size_t p = 0; p < percents.size(); ++p) {
      const bool s = shadowSampled("shop", key, percents[p]);
      if (previous) CHECK(s);  // sampled at p => sampled at every p' >= p
      previous = s;
      counts[p] += s;
    }
  }
  for (size_t p = 0; p < percents.size(); ++p) {
    CAPTURE(percents[p]);
    CHECK(std::fabs(static_cast<double>(counts[p]) / kKeys - percents[p] / 100.0) <
          kShareTolerance);
  }
  CHECK(counts.front() == 0);
  CHECK(counts.back() == kKeys);
}

TEST_CASE("shadowSampled: independent of the variant choice") {
  // A 5% sample must not be the canary's 5%: about 5% of canary keys are sampled.
  size_t canary = 0, sampled = 0;
  for (size_t i = 0; i < kKeys; ++i) {
    const std::string key = keyOf(i);
    if (pickWeighted("shop", {95, 0, 5}, key) != Variant::Canary) continue;
    ++canary;
    sampled += shadowSampled("shop", key, 5.0);
  }
  REQUIRE(canary > 4000);
  CHECK(std::fabs(static_cast<double>(sampled) / canary - 0.05) < 0.015);
}

}  // namespace sy::proxy
