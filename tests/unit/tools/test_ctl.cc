// switchyard-ctl (SPEC §8, §11): explain's choice and wording, simulate's counts and moves, the
// status table, `rollout` (status tables, action requests, preview's counts), and the command
// line's exit codes. Configs are written to temp files and loaded
// with the proxy's loader; the admin endpoint is a fake transport, so nothing opens a socket.
// Keys come from fixed seeds, so the statistical checks are fixed outcomes; tolerances are
// about 3 standard deviations.

#include <doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/loader.h"
#include "config/validate.h"
#include "proxy/routing/splitter.h"
#include "tools/ctl/cli.h"
#include "tools/ctl/explain.h"
#include "tools/ctl/format.h"
#include "tools/ctl/rollout.h"
#include "tools/ctl/simulate.h"
#include "tools/ctl/status.h"

namespace sy::ctl {
namespace {

using config::Variant;
using Reason = proxy::SplitDecision::Reason;

// A config file in the temp dir, removed again at scope exit.
class TempConfig {
 public:
  explicit TempConfig(const std::string& text) {
    const char* dir = std::getenv("TMPDIR");
    std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/sy-ctl-XXXXXX.toml";
    const int fd = mkstemps(tmpl.data(), 5);
    REQUIRE(fd >= 0);
    close(fd);
    path_ = tmpl;
    std::ofstream(path_) << text;
  }
  ~TempConfig() { unlink(path_.c_str()); }
  TempConfig(const TempConfig&) = delete;
  TempConfig& operator=(const TempConfig&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

const char* const kPools = R"(
[server]
listen = ["127.0.0.1:18080"]

[upstreams.blue]
servers = ["127.0.0.1:19001"]
[upstreams.green]
servers = ["127.0.0.1:19002"]
[upstreams.canary]
servers = ["127.0.0.1:19003", "127.0.0.1:19013"]
[upstreams.shadow]
servers = ["127.0.0.1:19004"]
)";

// routes[0] "shop": header then cookie key, two overrides, shadow at 30%, failover blue.
// routes[1] "api": only on api.test /v1/, cookie key, fallback blue.
// routes[2] "ipfb": fallback client_ip, shadow at 50%. routes[3] "sticky": assign_cookie.
// routes[4] "rand": fallback random, no key sources.
const char* const kRoutes = R"(
[[routes]]
name = "shop"
match = { host = "shop.test" }
key = ["header:X-User-Id", "cookie:session"]
fallback = "random"
failover = "blue"
[routes.upstreams]
blue = "blue"
green = "green"
canary = "canary"
shadow = "shadow"
[routes.weights]
blue = 50
green = 30
canary = 20
[routes.shadow]
percent = 30
[[routes.override]]
header = "X-Canary"
regex = "^(1|true|yes)$"
variant = "canary"
[[routes.override]]
client_ip = ["10.0.0.0/8"]
variant = "green"

[[routes]]
name = "api"
match = { host = "api.test", path = "^/v1/" }
key = ["cookie:sid"]
fallback = "blue"
[routes.upstreams]
blue = "blue"
canary = "canary"
[routes.weights]
blue = 95
canary = 5

[[routes]]
name = "ipfb"
match = { host = "ip.test" }
key = ["header:X-User-Id"]
fallback = "client_ip"
salt = "pepper"
[routes.upstreams]
blue = "blue"
canary = "canary"
shadow = "shadow"
[routes.weights]
blue = 50
canary = 50
[routes.shadow]
percent = 50

[[routes]]
name = "sticky"
match = { host = "sticky.test" }
key = []
assign_cookie = "sy_id"
[routes.upstreams]
blue = "blue"
canary = "canary"
[routes.weights]
blue = 90
canary = 10

[[routes]]
name = "rand"
match = { host = "rand.test" }
key = []
fallback = "random"
[routes.upstreams]
blue = "blue"
green = "green"
canary = "canary"
[routes.weights]
blue = 95
green = 0
canary = 5
)";

struct Loaded {
  TempConfig file{std::string(kPools) + kRoutes};
  std::shared_ptr<config::Snapshot> snapshot;
  Loaded() {
    config::LoadResult r = config::loadSnapshot(file.path());
    INFO(config::formatErrors(r.errors));
    REQUIRE(r.ok());
    snapshot = r.snapshot;
  }
  const config::Route& route(const std::string& name) const {
    for (const config::Route& r : snapshot->routes) {
      if (r.name == name) return r;
    }
    FAIL("no route " << name);
    return snapshot->routes.front();
  }
};

ExplainResult explainOk(const Loaded& l, const ExplainOptions& o) {
  auto r = explain(*l.snapshot, o);
  if (auto* e = std::get_if<CtlError>(&r)) FAIL("explain failed: " << e->message);
  return std::get<ExplainResult>(r);
}

CtlError explainError(const Loaded& l, const ExplainOptions& o) {
  auto r = explain(*l.snapshot, o);
  REQUIRE(std::holds_alternative<CtlError>(r));
  return std::get<CtlError>(r);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

ExplainOptions onRoute(const std::string& route, std::optional<std::string> key = std::nullopt) {
  ExplainOptions o;
  o.route_name = route;
  o.key = std::move(key);
  return o;
}

struct RunResult {
  int code;
  std::string out;
  std::string err;
};

RunResult runCtl(std::vector<std::string> args, const HttpTransport& http = {}) {
  std::ostringstream out;
  std::ostringstream err;
  HttpTransport transport = http ? http : [](const HttpRequest&) {
    FAIL("unexpected HTTP call");
    return HttpResponse{};
  };
  const int code = run(args, out, err, transport);
  return {code, out.str(), err.str()};
}

config::Route routeWithWeights(Weights w) {
  static const config::Pool pool{};
  config::Route r;
  r.name = "sim";
  r.weights = w;
  for (size_t i = 0; i < config::kWeightedVariants; ++i) r.pools[i] = &pool;
  return r;
}

// 3 standard deviations of a share p measured over n keys, plus a hair for rounding.
double tolerance(double p, uint64_t n) {
  return 3.0 * std::sqrt(p * (1 - p) / static_cast<double>(n)) + 1e-9;
}

double share(uint64_t count, uint64_t n) {
  return static_cast<double>(count) / static_cast<double>(n);
}

}  // namespace

// ---- explain -------------------------------------------------------------------------------

TEST_CASE("explain: key source reason agrees with pickWeighted and prints every score") {
  Loaded l;
  const config::Route& shop = l.route("shop");
  size_t seen[config::kWeightedVariants] = {};
  for (int i = 0; i < 300; ++i) {
    const std::string key = "user-" + std::to_string(i);
    const ExplainResult r = explainOk(l, onRoute("shop", key));
    CAPTURE(key);
    CHECK(r.decision.reason == Reason::Key);
    CHECK(r.decision.key_source_index == 0);
    CHECK(r.decision.key == key);
    CHECK(r.salt == "shop");
    CHECK(r.decision.variant == proxy::pickWeighted("shop", shop.weights, key));
    REQUIRE(r.scores.has_value());
    // The winner's score is the highest, and its hash is the one decide() reports.
    const auto& s = *r.scores;
    const size_t win = static_cast<size_t>(r.decision.variant);
    CHECK(s[win].hash == r.decision.hash);
    for (size_t v = 0; v < config::kWeightedVariants; ++v) {
      if (v != win) CHECK(s[v].score <= s[win].score);
    }
    REQUIRE(r.shadow_sampled.has_value());
    CHECK(*r.shadow_sampled == proxy::shadowSampled("shop", key, 30.0));
    ++seen[win];
  }
  CHECK(seen[0] > 0);
  CHECK(seen[1] > 0);
  CHECK(seen[2] > 0);

  const ExplainResult r = explainOk(l, onRoute("shop", "alice"));
  const std::string text = formatExplain(r);
  const std::string v = config::variantName(r.decision.variant);
  CHECK(contains(text, "route    shop (routes[0])"));
  CHECK(contains(text, "key      \"alice\" from header X-User-Id (key source 1 of 2)"));
  CHECK(contains(text, "salt     \"shop\" (the route name)"));
  CHECK(contains(text, "variant  " + v + "\n"));
  CHECK(contains(text, "<- highest"));
  CHECK(contains(text, strFormat("%016llx", static_cast<unsigned long long>(r.decision.hash))));
  CHECK(contains(text, "shadow   "));
  CHECK(contains(text, "pool     " + v + ": 127.0.0.1:1900"));
  CHECK(contains(text, "failover to blue"));
  // The winner's row carries the marker.
  const size_t row = text.find("\n  " + v + " ");
  REQUIRE(row != std::string::npos);
  CHECK(text.substr(row, text.find('\n', row + 1) - row).find("<- highest") != std::string::npos);
}

TEST_CASE("explain: a cookie key source gets a Cookie header; later sources are found too") {
  Loaded l;
  ExplainResult r = explainOk(l, onRoute("api", "s-123"));
  CHECK(r.decision.reason == Reason::Key);
  CHECK(r.decision.key_source_index == 0);
  CHECK(r.decision.key == "s-123");
  REQUIRE(proxy::findHeader(r.headers, "Cookie").has_value());
  CHECK(*proxy::findHeader(r.headers, "Cookie") == "sid=s-123");
  CHECK(r.decision.variant == proxy::pickWeighted("api", l.route("api").weights, "s-123"));
  CHECK(contains(formatExplain(r), "from cookie sid (key source 1 of 1)"));

  // No --key, but the second source (cookie:session) is present.
  ExplainOptions o = onRoute("shop");
  o.cookies = {"other=1", "session=abc"};
  r = explainOk(l, o);
  CHECK(r.decision.reason == Reason::Key);
  CHECK(r.decision.key_source_index == 1);
  CHECK(r.decision.key == "abc");
  CHECK(contains(formatExplain(r), "from cookie session (key source 2 of 2)"));

  // A cookie key with ';' is cut where the proxy's cookie parser cuts it: a note says so.
  r = explainOk(l, onRoute("api", "ab;c"));
  CHECK(r.decision.key == "ab");
  CHECK(contains(formatExplain(r), "note     the proxy hashes \"ab\", not \"ab;c\""));
}

TEST_CASE("explain: override reasons name the override and what the key alone gives") {
  Loaded l;
  ExplainOptions o = onRoute("shop", "alice");
  o.headers = {"X-Canary: yes"};
  ExplainResult r = explainOk(l, o);
  CHECK(r.decision.reason == Reason::Override);
  CHECK(r.decision.override_index == 0);
  CHECK(r.decision.variant == Variant::Canary);
  REQUIRE(r.without_overrides.has_value());
  const Variant alone = proxy::pickWeighted("shop", l.route("shop").weights, "alice");
  CHECK(r.without_overrides->variant == alone);
  std::string text = formatExplain(r);
  CHECK(contains(text, "variant  canary\n"));
  CHECK(contains(text,
                 "routes[0].override[0] matched: header X-Canary full-matches "
                 "\"^(1|true|yes)$\" (value \"yes\")"));
  CHECK(contains(text, std::string("would get ") + config::variantName(alone)));
  CHECK(contains(text, "without overrides, the key alone gives:"));
  // The proxy's mirror samples on the decision's key, and an override decision has none.
  CHECK_FALSE(r.shadow_sampled.has_value());
  CHECK(contains(text, "mirrored at random, 30% of requests decided by an override"));

  // A value the regex does not fully match is no override.
  o.headers = {"X-Canary: yes please"};
  CHECK(explainOk(l, o).decision.reason == Reason::Key);

  // The client_ip override, with the address given.
  o.headers = {};
  o.client_ip = "10.1.2.3";
  r = explainOk(l, o);
  CHECK(r.decision.reason == Reason::Override);
  CHECK(r.decision.override_index == 1);
  CHECK(r.decision.variant == Variant::Green);
  text = formatExplain(r);
  CHECK(contains(text,
                 "routes[0].override[1] matched: client_ip in [10.0.0.0/8] "
                 "(client 10.1.2.3)"));
  // The default client address (127.0.0.1) is not in 10/8.
  o.client_ip = "";
  CHECK(explainOk(l, o).decision.reason == Reason::Key);
}

TEST_CASE("explain: fallbacks") {
  Loaded l;
  // fallback = a variant.
  ExplainResult r = explainOk(l, onRoute("api"));
  CHECK(r.decision.reason == Reason::FallbackVariant);
  CHECK(r.decision.variant == Variant::Blue);
  CHECK(contains(formatExplain(r), "no key present, so fallback = \"blue\""));
  CHECK_FALSE(r.scores.has_value());

  // An empty key counts as absent.
  r = explainOk(l, onRoute("api", ""));
  CHECK(r.decision.reason == Reason::FallbackVariant);
  CHECK(contains(formatExplain(r), "an empty key counts as absent"));

  // fallback = client_ip hashes the address with the route's salt.
  ExplainOptions o = onRoute("ipfb");
  o.client_ip = "192.0.2.7";
  r = explainOk(l, o);
  CHECK(r.decision.reason == Reason::FallbackClientIp);
  CHECK(r.decision.key == "192.0.2.7");
  CHECK(r.salt == "pepper");
  CHECK(r.decision.variant == proxy::pickWeighted("pepper", l.route("ipfb").weights, "192.0.2.7"));
  CHECK(contains(formatExplain(r), "\"client_ip\": the client address \"192.0.2.7\""));
  CHECK(contains(formatExplain(r), "salt     \"pepper\"\n"));
  REQUIRE(r.shadow_sampled.has_value());  // sampled on the address the decision hashed
  CHECK(*r.shadow_sampled == proxy::shadowSampled("pepper", "192.0.2.7", 50.0));
  o.client_ip = "2001:db8::1";
  CHECK(explainOk(l, o).decision.key == "2001:db8::1");

  // fallback = random: no single answer.
  r = explainOk(l, onRoute("shop"));
  CHECK(r.decision.reason == Reason::FallbackRandom);
  CHECK(contains(formatExplain(r), "variant  varies per request"));
  CHECK(contains(formatExplain(r), "mirrored at random, 30% of requests that have no key"));

  // assign_cookie: a new client gets a cookie; a returning one is keyed by it.
  r = explainOk(l, onRoute("sticky"));
  CHECK(r.decision.reason == Reason::AssignedCookie);
  CHECK(contains(formatExplain(r), "Set-Cookie: sy_id=<random 32-hex id>"));
  r = explainOk(l, onRoute("sticky", "0123abcd"));  // no key sources: --key goes into sy_id
  CHECK(r.decision.reason == Reason::Key);
  CHECK(r.decision.key == "0123abcd");
  CHECK(contains(formatExplain(r), "from cookie sy_id (the assign_cookie id"));
}

TEST_CASE("explain: behind trusted_proxies the client comes from X-Forwarded-For (SPEC §13)") {
  Loaded l;
  std::string why;
  l.snapshot->server.trusted_proxies = {*config::parseCidr("192.0.2.0/24", &why)};
  ExplainOptions o = onRoute("ipfb");
  o.client_ip = "192.0.2.7";
  o.headers = {"X-Forwarded-For: 198.51.100.1, 192.0.2.9"};
  ExplainResult r = explainOk(l, o);
  CHECK(r.decision.reason == Reason::FallbackClientIp);
  CHECK(r.decision.key == "198.51.100.1");
  CHECK(contains(formatExplain(r), "the client is 198.51.100.1 from X-Forwarded-For"));
  // From a peer not in the list, X-Forwarded-For is not believed.
  o.client_ip = "203.0.113.1";
  CHECK(explainOk(l, o).decision.key == "203.0.113.1");
}

TEST_CASE("explain: the route by host and path, as the router picks it") {
  Loaded l;
  ExplainOptions o;
  o.host = "api.test:8080";
  o.path = "/v1/items";
  o.key = "k";
  ExplainResult r = explainOk(l, o);
  CHECK(r.route->name == "api");
  CHECK(r.route_index == 1);
  CHECK(contains(formatExplain(r), "the first route matching host \"api.test:8080\""));
  CHECK(*proxy::findHeader(r.headers, "Host") == "api.test:8080");

  o.path = "/v2/items";
  const CtlError e = explainError(l, o);
  CHECK(e.exit_code == kExitFailure);
  CHECK(contains(e.message, "the proxy answers 404"));
}

TEST_CASE("explain: errors") {
  Loaded l;
  CtlError e = explainError(l, onRoute("nope", "k"));
  CHECK(e.exit_code == kExitFailure);
  CHECK(contains(e.message, "no route named \"nope\""));
  CHECK(contains(e.message, "routes: shop, api, ipfb, sticky, rand"));

  ExplainOptions o = onRoute("shop", "k");
  o.headers = {"no colon here"};
  CHECK(explainError(l, o).exit_code == kExitUsage);
  o.headers = {"Bad Name: x"};
  CHECK(explainError(l, o).exit_code == kExitUsage);
  o.headers = {};
  o.cookies = {"novalue"};
  CHECK(explainError(l, o).exit_code == kExitUsage);
  o.cookies = {};
  o.client_ip = "300.1.1.1";
  CHECK(explainError(l, o).exit_code == kExitUsage);
  CHECK(explainError(l, onRoute("shop", "a\r\nb")).exit_code == kExitUsage);
  CHECK(explainError(l, onRoute("rand", "k")).exit_code == kExitUsage);  // no key source
}

TEST_CASE("variantScore is the arithmetic pickWeighted compares") {
  const Weights w = {7, 0.5, 2.5};
  for (int i = 0; i < 2000; ++i) {
    const std::string key = "k" + std::to_string(i);
    size_t best = 0;
    double best_score = -1;
    for (size_t v = 0; v < config::kWeightedVariants; ++v) {
      const proxy::VariantScore s = proxy::variantScore("salt", static_cast<Variant>(v), w[v], key);
      CHECK(s.u > 0.0);
      CHECK(s.u < 1.0);
      CHECK(s.score == -w[v] / std::log(s.u));
      if (s.score > best_score) {
        best_score = s.score;
        best = v;
      }
    }
    CHECK(proxy::pickWeighted("salt", w, key) == static_cast<Variant>(best));
  }
}

// ---- simulate ------------------------------------------------------------------------------

TEST_CASE("simulate: shares near the weights, reproducible per seed") {
  const config::Route route = routeWithWeights({50, 30, 20});
  SimulateOptions o;
  o.keys = 100000;
  const SimulateResult a = simulate(route, o);
  CHECK(a.counts[0] + a.counts[1] + a.counts[2] == o.keys);
  CHECK(std::fabs(share(a.counts[0], o.keys) - 0.5) < tolerance(0.5, o.keys));
  CHECK(std::fabs(share(a.counts[1], o.keys) - 0.3) < tolerance(0.3, o.keys));
  CHECK(std::fabs(share(a.counts[2], o.keys) - 0.2) < tolerance(0.2, o.keys));
  CHECK(a.moved == 0);

  const SimulateResult b = simulate(route, o);
  CHECK(a.counts == b.counts);
  o.seed = 2;
  CHECK(simulate(route, o).counts != a.counts);

  // The keys are the documented ones: the first key of seed 1 is mt19937_64(1)'s first output,
  // which the C++ standard fixes, so the same seed prints the same numbers everywhere.
  std::mt19937_64 rng(1);
  CHECK(simulationKey(rng()) == "2245bd5fbb686f68");

  const std::string text = formatSimulate(a);
  CHECK(contains(text, "route sim: 100,000 random keys (seed 1), salt \"sim\""));
  CHECK(contains(text, "  blue         50    50.00%  " + groupDigits(a.counts[0])));
}

TEST_CASE("simulate --weights: 95/0/5 -> 90/0/10 moves only blue -> canary, ~5% of keys") {
  const config::Route route = routeWithWeights({95, 0, 5});
  SimulateOptions o;
  o.keys = 200000;
  o.new_weights = Weights{90, 0, 10};
  const SimulateResult r = simulate(route, o);
  // Blue's weight fell and canary's rose, so a key can only go blue -> canary; every key that
  // was on canary stays, hence the moved count is exactly canary's gain.
  CHECK(r.moves[0][2] == r.moved);
  CHECK(r.moved == r.new_counts[2] - r.counts[2]);
  // Shares 95/5 -> 90/10: exactly the 5% the shares force (the minimum), within sampling error.
  CHECK(std::fabs(share(r.moved, o.keys) - 0.05) < tolerance(0.05, o.keys));
  CHECK(minimumMoveShare({95, 0, 5}, {90, 0, 10}) == doctest::Approx(0.05));

  const std::string text = formatSimulate(r);
  CHECK(contains(text, "  blue -> canary: " + groupDigits(r.moved) + " ("));
  CHECK(contains(text, "no other pair can move a key"));
  CHECK_FALSE(contains(text, "UNEXPECTED"));
  CHECK_FALSE(contains(text, "blue -> green"));
}

TEST_CASE("simulate --weights: relative weights, 50/30/20 -> canary 40 moves 13.33% into canary") {
  // Sum 100 -> 120: canary's share goes 20% -> 33.33%, blue's 50% -> 41.67%, green's
  // 30% -> 25%. Only canary changed, so keys only join canary, each other variant losing
  // exactly its drop in share: blue -> canary 8.33%, green -> canary 5%.
  const config::Route route = routeWithWeights({50, 30, 20});
  SimulateOptions o;
  o.keys = 200000;
  o.new_weights = Weights{50, 30, 40};
  const SimulateResult r = simulate(route, o);
  CHECK(r.moves[0][1] == 0);
  CHECK(r.moves[1][0] == 0);
  CHECK(r.moves[2][0] == 0);
  CHECK(r.moves[2][1] == 0);
  CHECK(r.moved == r.moves[0][2] + r.moves[1][2]);
  CHECK(std::fabs(share(r.moves[0][2], o.keys) - (0.5 - 50.0 / 120)) <
        tolerance(0.5 - 50.0 / 120, o.keys));
  CHECK(std::fabs(share(r.moves[1][2], o.keys) - (0.3 - 30.0 / 120)) <
        tolerance(0.3 - 30.0 / 120, o.keys));
  CHECK(std::fabs(share(r.moved, o.keys) - (40.0 / 120 - 0.2)) < tolerance(0.1333, o.keys));
  CHECK(contains(formatSimulate(r), "only canary changed (20 -> 40): keys only join it"));
}

TEST_CASE("simulate --weights: a variant set to 0 and back gets exactly its keys back") {
  SimulateOptions o;
  o.keys = 50000;
  o.new_weights = Weights{50, 30, 0};
  const SimulateResult down = simulate(routeWithWeights({50, 30, 20}), o);
  CHECK(down.moved == down.counts[2]);  // all of canary leaves, nothing else moves
  CHECK(down.moves[0][1] == 0);
  CHECK(down.moves[1][0] == 0);
  // Spread by weight: 5/8 of canary's keys to blue.
  CHECK(std::fabs(share(down.moves[2][0], down.counts[2]) - 0.625) <
        tolerance(0.625, down.counts[2]));

  o.new_weights = Weights{50, 30, 20};
  const SimulateResult up = simulate(routeWithWeights({50, 30, 0}), o);
  CHECK(up.moves[0][2] == down.moves[2][0]);
  CHECK(up.moves[1][2] == down.moves[2][1]);
  CHECK(up.new_counts == down.counts);
  CHECK(contains(formatSimulate(down), "only canary changed (20 -> 0): all its keys leave"));
}

TEST_CASE("simulate: scaling every weight moves nothing; moveAllowed is the pair rule") {
  SimulateOptions o;
  o.keys = 20000;
  o.new_weights = Weights{190, 0, 10};
  const SimulateResult r = simulate(routeWithWeights({95, 0, 5}), o);
  CHECK(r.moved == 0);
  CHECK(contains(formatSimulate(r), "no key can move: every ratio between two weights stays"));

  const Weights before = {50, 30, 20};
  const Weights after = {40, 40, 20};       // blue down, green up
  CHECK(moveAllowed(before, after, 0, 1));  // blue -> green
  CHECK(moveAllowed(before, after, 0, 2));  // blue -> canary (canary gained on blue)
  CHECK(moveAllowed(before, after, 2, 1));  // canary -> green
  CHECK_FALSE(moveAllowed(before, after, 1, 0));
  CHECK_FALSE(moveAllowed(before, after, 1, 2));
  CHECK_FALSE(moveAllowed(before, after, 2, 0));
  // From a variant with weight 0 nothing moves; to one with weight 0 nothing moves.
  CHECK_FALSE(moveAllowed({0, 1, 1}, {0, 1, 5}, 0, 2));
  CHECK_FALSE(moveAllowed({1, 1, 1}, {1, 0, 5}, 0, 1));
}

TEST_CASE("simulate: parseWeights") {
  Loaded l;
  const config::Route& shop = l.route("shop");
  auto w = parseWeights("blue=90,canary=10", shop);
  REQUIRE(std::holds_alternative<Weights>(w));
  CHECK(std::get<Weights>(w) == Weights{90, 0, 10});
  w = parseWeights("green=0.5", shop);
  REQUIRE(std::holds_alternative<Weights>(w));
  CHECK(std::get<Weights>(w) == Weights{0, 0.5, 0});

  for (const char* bad : {"", "blue", "purple=1", "shadow=5", "blue=-1", "blue=x", "blue=1e999",
                          "blue=nan", "blue=0", "blue=1,blue=2", "blue=1,", "blue=1,,canary=2"}) {
    const std::string text = bad;
    CAPTURE(text);
    auto e = parseWeights(bad, shop);
    REQUIRE(std::holds_alternative<CtlError>(e));
    CHECK(std::get<CtlError>(e).exit_code == kExitUsage);
  }
  // api has no green pool: a positive green weight would be rejected by validation.
  auto e = parseWeights("blue=1,green=1", l.route("api"));
  REQUIRE(std::holds_alternative<CtlError>(e));
  CHECK(contains(std::get<CtlError>(e).message, "green has no upstream pool"));
}

// ---- status --------------------------------------------------------------------------------

TEST_CASE("status: the /status JSON as tables") {
  const std::string json = R"({"version": "0.1.0", "config": "/etc/sy.toml", "generation": 3,
    "loaded_at": "2025-01-02T03:04:05Z", "draining": false,
    "routes": [{"name": "shop", "weights": {"blue": 90.0, "green": 0, "canary": 10},
                "upstreams": {"blue": "shop-blue", "canary": "shop-canary",
                              "shadow": "shop-shadow"},
                "served": {"blue": 12345, "green": 0, "canary": 1200},
                "share": {"blue": 0.9114, "green": 0.0, "canary": 0.0886},
                "shadow_percent": 10.0}],
    "pools": [{"name": "shop-blue", "balance": "round_robin", "health_check": true,
               "servers": [{"address": "127.0.0.1:9001", "healthy": true, "active": 3},
                           {"address": "10.0.0.2:9001", "healthy": false, "active": 0}]},
              {"name": "empty", "servers": []}]})";
  auto r = formatStatus(json);
  REQUIRE(std::holds_alternative<std::string>(r));
  const std::string& t = std::get<std::string>(r);
  CHECK(contains(t, "switchyard 0.1.0\n"));
  CHECK(contains(t, "config      /etc/sy.toml\n"));
  CHECK(contains(t, "generation  3 (loaded 2025-01-02T03:04:05Z)\n"));
  CHECK_FALSE(contains(t, "DRAINING"));
  CHECK(contains(t, "  ROUTE  VARIANT  POOL         WEIGHT   SHARE           SERVED\n"));
  CHECK(contains(t, "  shop   blue     shop-blue        90  90.00%  12,345 (91.14%)\n"));
  CHECK(contains(t, "         green    -                 0   0.00%        0 (0.00%)\n"));
  CHECK(contains(t, "         canary   shop-canary      10  10.00%    1,200 (8.86%)\n"));
  CHECK(contains(t, "         shadow   shop-shadow  mirror  10.00%\n"));
  CHECK(contains(t, "  POOL       SERVER          HEALTH      ACTIVE\n"));
  CHECK(contains(t, "  shop-blue  127.0.0.1:9001  healthy          3  checked\n"));
  CHECK(contains(t, "             10.0.0.2:9001   UNHEALTHY        0\n"));
  CHECK(contains(t, "  empty      -               no servers\n"));
  CHECK(contains(t, "1 of 2 servers healthy"));

  // Without "share" the fractions come from the counts; without "served" no column at all.
  r = formatStatus(R"({"routes": [{"name": "x", "weights": {"blue": 1},
                       "served": {"blue": 3, "canary": 1}}]})");
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(contains(std::get<std::string>(r), "3 (75.00%)"));
  r = formatStatus(R"({"draining": true, "routes": [{"name": "x"}]})");
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(contains(std::get<std::string>(r), "generation  - (loaded -)"));
  CHECK(contains(std::get<std::string>(r), "state       DRAINING"));
  CHECK_FALSE(contains(std::get<std::string>(r), "SERVED"));
  r = formatStatus("<html>");
  REQUIRE(std::holds_alternative<CtlError>(r));
  CHECK(std::get<CtlError>(r).exit_code == kExitFailure);
}

// ---- command line --------------------------------------------------------------------------

TEST_CASE("cli: check") {
  TempConfig good(std::string(kPools) + kRoutes);
  RunResult r = runCtl({"check", good.path()});
  CHECK(r.code == kExitOk);
  CHECK(r.out == good.path() + ": ok\n");

  // A negative weight on line 15, column 10 (SPEC §2's example error).
  TempConfig bad(std::string(kPools) +
                 "[[routes]]\nname = \"r\"\n[routes.upstreams]\nblue = \"blue\"\n"
                 "[routes.weights]\nblue = -1\n");
  r = runCtl({"check", bad.path()});
  CHECK(r.code == kExitFailure);
  CHECK(r.out.empty());
  CHECK(contains(r.err, bad.path() + ":"));
  CHECK(contains(r.err, "routes[0].weights.blue"));
  // file:line:col, as `switchyard --check` prints it.
  const std::string prefix = bad.path() + ":";
  const size_t at = r.err.find(prefix);
  REQUIRE(at != std::string::npos);
  const std::string rest = r.err.substr(at + prefix.size());
  CHECK(std::isdigit(static_cast<unsigned char>(rest[0])));
  CHECK(rest.find(':') < rest.find(' '));

  CHECK(runCtl({"check"}).code == kExitUsage);
  CHECK(runCtl({"check", "a", "b"}).code == kExitUsage);
  CHECK(runCtl({"check", "/nonexistent/sy.toml"}).code == kExitFailure);
}

TEST_CASE("cli: usage errors exit 2") {
  TempConfig good(std::string(kPools) + kRoutes);
  const std::string f = good.path();
  CHECK(runCtl({}).code == kExitUsage);
  CHECK(runCtl({"frobnicate"}).code == kExitUsage);
  CHECK(runCtl({"--help"}).code == kExitOk);
  CHECK(runCtl({"explain", f, "--help"}).code == kExitOk);
  CHECK(runCtl({"explain", f, "--key", "k"}).code == kExitUsage);  // no route, host or path
  CHECK(runCtl({"explain", f, "--route"}).code == kExitUsage);     // missing value
  CHECK(runCtl({"explain", f, "--route", "shop", "--bogus", "1"}).code == kExitUsage);
  CHECK(runCtl({"explain", f, "--route", "shop", "--key", "a", "--key", "b"}).code == kExitUsage);
  CHECK(runCtl({"explain", f, "--route", "shop", "--path", "nope"}).code == kExitUsage);
  CHECK(runCtl({"simulate", f}).code == kExitUsage);
  CHECK(runCtl({"simulate", f, "--route", "shop", "--keys", "0"}).code == kExitUsage);
  CHECK(runCtl({"simulate", f, "--route", "shop", "--keys", "-5"}).code == kExitUsage);
  CHECK(runCtl({"simulate", f, "--route", "shop", "--seed", "x"}).code == kExitUsage);
  CHECK(runCtl({"simulate", f, "--route", "shop", "--weights", "blue=x"}).code == kExitUsage);
  CHECK(runCtl({"reload"}).code == kExitUsage);
  CHECK(runCtl({"reload", "--admin", "nocolon"}).code == kExitUsage);
  CHECK(runCtl({"status", "--admin", "h:0"}).code == kExitUsage);
  CHECK(runCtl({"status", "--admin", "h:1", "extra"}).code == kExitUsage);
  const RunResult r = runCtl({"simulate", f, "--route", "shop", "--keys", "0"});
  CHECK(contains(r.err, "switchyard-ctl: simulate: --keys"));
  CHECK(contains(r.err, "--help"));

  // A value that looks like an option is still a value ("--key --help" explains the key).
  const RunResult k = runCtl({"explain", f, "--route", "shop", "--key", "--help"});
  CHECK(k.code == kExitOk);
  CHECK(contains(k.out, "key      \"--help\""));
}

TEST_CASE("cli: explain and simulate end to end") {
  TempConfig good(std::string(kPools) + kRoutes);
  RunResult r = runCtl(
      {"explain", good.path(), "--route", "shop", "--key", "alice", "--header", "X-Canary: 1"});
  CHECK(r.code == kExitOk);
  CHECK(contains(r.out, "variant  canary\n"));
  r = runCtl(
      {"explain", good.path(), "--host", "api.test", "--path", "/v1/x", "--cookie", "sid=q"});
  CHECK(r.code == kExitOk);
  CHECK(contains(r.out, "route    api (routes[1])"));
  r = runCtl({"explain", good.path(), "--route", "missing", "--key", "k"});
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "no route named \"missing\""));

  r = runCtl({"simulate", good.path(), "--route", "rand", "--keys", "10000", "--seed", "7",
              "--weights", "blue=90,canary=10"});
  CHECK(r.code == kExitOk);
  CHECK(contains(r.out, "route rand: 10,000 random keys (seed 7)"));
  CHECK(contains(r.out, "blue -> canary: "));
  CHECK(r.out == runCtl({"simulate", good.path(), "--route", "rand", "--keys=10000", "--seed=7",
                         "--weights=blue=90,canary=10"})
                     .out);
}

TEST_CASE("cli: reload and status through the transport") {
  std::vector<HttpRequest> seen;
  HttpResponse answer{200, "{\"generation\": 4}\n", ""};
  const HttpTransport fake = [&](const HttpRequest& req) {
    seen.push_back(req);
    return answer;
  };
  auto header = [](const HttpRequest& req, const std::string& name) -> std::string {
    for (const auto& [k, v] : req.headers) {
      if (k == name) return v;
    }
    return "(absent)";
  };

  RunResult r = runCtl({"reload", "--admin", "127.0.0.1:9901", "--token", "t0k"}, fake);
  CHECK(r.code == kExitOk);
  CHECK(r.out == "{\"generation\": 4}\n");
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].path == "/reload");
  CHECK(seen[0].host == "127.0.0.1");
  CHECK(seen[0].port == 9901);
  CHECK(header(seen[0], "Authorization") == "Bearer t0k");
  CHECK(header(seen[0], "Host") == "127.0.0.1:9901");

  r = runCtl({"reload", "--admin", "[::1]:9901"}, fake);
  CHECK(seen.back().host == "::1");
  CHECK(header(seen.back(), "Host") == "[::1]:9901");
  CHECK(header(seen.back(), "Authorization") == "(absent)");

  answer = {400, "demo.toml:3:1: routes[0].weights: all zero\n", ""};
  r = runCtl({"reload", "--admin", "127.0.0.1:9901"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "reload failed (HTTP 400)"));
  CHECK(contains(r.err, "demo.toml:3:1: routes[0].weights: all zero"));

  answer = {401, "missing or wrong admin token\n", ""};
  r = runCtl({"reload", "--admin", "127.0.0.1:9901"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "needs an admin token (--token)"));

  answer = {0, "", "cannot connect (refused or unreachable)"};
  r = runCtl({"reload", "--admin", "127.0.0.1:9901"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "no answer from the admin endpoint 127.0.0.1:9901: cannot connect"));

  answer = {200, R"({"version": "9", "generation": 1, "routes": [], "pools": []})", ""};
  r = runCtl({"status", "--admin", "localhost:9901"}, fake);
  CHECK(r.code == kExitOk);
  CHECK(seen.back().method == "GET");
  CHECK(seen.back().path == "/status");
  CHECK(contains(r.out, "switchyard 9\n"));
  answer = {200, "not json", ""};
  CHECK(runCtl({"status", "--admin", "localhost:9901"}, fake).code == kExitFailure);
  answer = {503, "draining\n", ""};
  CHECK(runCtl({"status", "--admin", "localhost:9901"}, fake).code == kExitFailure);
}

// ---- rollout -------------------------------------------------------------------------------

namespace {

// The admin endpoint's GET /rollouts answer (contract: SPEC §11): one rollout holding in its
// second stage with two checks, one rolled back by the analysis.
const char* const kRolloutsJson = R"([
  {"route": "shop", "id": "checkout-2.14", "variant": "canary", "baseline": "blue",
   "state": "holding", "stage": 2, "percent": 5.0, "on_failure": "rollback",
   "stages": [{"percent": 1, "hold_ms": 600000, "gate": false},
              {"percent": 5, "hold_ms": 1800000, "gate": false},
              {"percent": 25, "hold_ms": 3600000, "gate": true},
              {"percent": 100, "hold_ms": 3600000, "gate": false}],
   "since": "2026-12-02T10:30:00Z", "next_transition": null, "waiting_for": "requests",
   "needed": 500, "seen": 123, "intervals": 17,
   "interval_ms": 30000, "warmup_ms": 60000, "confidence": 0.99,
   "checks": [
     {"name": "error_ratio", "evidence": 1.2, "threshold": 150.0, "ratio": 0.008,
      "failed": false, "variant_requests": 3120, "variant_events": 75,
      "baseline_requests": 61000, "baseline_events": 305, "tolerated": 0.0075,
      "summary": "canary 5xx 2.4% vs blue 0.5% over 3,120 requests: evidence 1.2 < 150"},
     {"name": "latency", "evidence": 0.5, "threshold": 150.0, "ratio": 0.00333,
      "failed": false, "threshold_ms": 212.0,
      "summary": "canary slower than blue's p95 (212 ms): 5.1% vs 5%"}],
   "verdict": "holding: 123 of 500 judged requests",
   "history": [
     {"at": "2026-12-02T10:00:00Z", "event": "start", "state": "running", "stage": 1,
      "percent": 1.0, "reason": "first load of checkout-2.14", "verdict": ""},
     {"at": "2026-12-02T10:10:00Z", "event": "advance", "state": "running", "stage": 2,
      "percent": 5.0, "reason": "hold passed", "verdict": ""},
     {"at": "2026-12-02T10:30:00Z", "event": "hold", "state": "holding", "stage": 2,
      "percent": 5.0, "reason": "too few requests", "verdict": ""}]},
  {"route": "api", "id": "v2", "variant": "green", "baseline": "blue",
   "state": "failed", "stage": 1, "percent": 0.0, "on_failure": "rollback",
   "stages": [{"percent": 10, "hold_ms": 90000, "gate": false}],
   "since": "2026-12-02T10:42:17Z", "next_transition": null, "waiting_for": "retry",
   "needed": 1000, "seen": 1500, "intervals": 3, "checks": [
     {"name": "error_ratio", "evidence": 1412.0, "threshold": 100.0, "ratio": 14.12,
      "failed": true, "summary": "green 5xx 30% vs blue 0.5%: evidence 1,412 >= 100"}],
   "verdict": "green 5xx 30% vs blue 0.5% over 1,500 requests: evidence 1,412 >= 100 -> rolled back at 10:42:17",
   "history": []}
])";

std::string header(const HttpRequest& req, const std::string& name) {
  for (const auto& [k, v] : req.headers) {
    if (k == name) return v;
  }
  return "(absent)";
}

// A route as the loader builds it, with a rollout of `variant` in `stages` (percent, hold_ms,
// gate) against blue.
config::Route routeWithRollout(Weights w, Variant variant,
                               std::vector<config::RolloutStage> stages) {
  config::Route r = routeWithWeights(w);
  r.name = "ro";
  config::Rollout ro;
  ro.id = "ro-1";
  ro.variant = variant;
  ro.baseline = Variant::Blue;
  ro.stages = std::move(stages);
  r.rollout = ro;
  return r;
}

PreviewResult previewOk(const config::Route& route, const PreviewOptions& o) {
  auto r = previewRollout(route, o);
  if (auto* e = std::get_if<CtlError>(&r)) FAIL("preview failed: " << e->message);
  return std::get<PreviewResult>(r);
}

const char* const kRolloutRoute = R"(
[[routes]]
name = "roll"
match = { host = "roll.test" }
key = ["header:X-User-Id"]
[routes.upstreams]
blue = "blue"
green = "green"
canary = "canary"
[routes.weights]
blue = 80
green = 20
canary = 0
[routes.rollout]
id = "roll-7"
variant = "canary"
baseline = "blue"
stages = [
  { percent = 2, hold = "10m" },
  { percent = 20, hold = "30m", gate = "manual" },
  { percent = 100, hold = "1h" },
]
[routes.rollout.analysis]
interval = "1s"
warmup = "0s"
min_requests = 0
)";

}  // namespace

TEST_CASE("rollout status: the /rollouts JSON as tables") {
  auto r = formatRolloutStatus(kRolloutsJson);
  REQUIRE(std::holds_alternative<std::string>(r));
  const std::string& t = std::get<std::string>(r);
  INFO(t);
  CHECK(contains(t,
                 "rollouts\n"
                 "  ROUTE  ROLLOUT        VARIANT         STATE    STAGE  PERCENT  SINCE"
                 "                 NEXT                  SEEN/NEEDED\n"
                 "  shop   checkout-2.14  canary vs blue  holding    2/4    5.00%  "
                 "2026-12-02T10:30:00Z  waiting for requests      123/500\n"
                 "  api    v2             green vs blue   failed     1/1    0.00%  "
                 "2026-12-02T10:42:17Z  waiting for retry     1,500/1,000\n"));
  // Per rollout: its plan with the current stage in brackets, the analysis, the evidence, the
  // checks and the verdict.
  CHECK(contains(t,
                 "\nshop (checkout-2.14): canary vs blue, holding\n"
                 "  stages    1% 10m -> [5% 30m] -> 25% 1h gate -> 100% 1h\n"
                 "  analysis  judged every 30s, warm-up 1m, confidence 0.99, 17 intervals "
                 "judged; on failure: rollback\n"
                 "  evidence  123 judged requests in this stage, 500 needed\n"));
  CHECK(contains(t,
                 "  CHECK        EVIDENCE  THRESHOLD  EVIDENCE/THRESHOLD  FAILED  SUMMARY\n"
                 "  error_ratio       1.2        150               0.008  no      canary 5xx "
                 "2.4% vs blue 0.5% over 3,120 requests: evidence 1.2 < 150\n"
                 "  latency           0.5        150             0.00333  no      canary "
                 "slower than blue's p95 (212 ms): 5.1% vs 5%\n"
                 "  verdict   holding: 123 of 500 judged requests\n"));
  // History, newest first.
  const size_t hold = t.find("2026-12-02T10:30:00Z  hold     holding");
  const size_t start = t.find("2026-12-02T10:00:00Z  start    running");
  CHECK(contains(t, "  history (newest first)\n"));
  CHECK(hold != std::string::npos);
  CHECK(start != std::string::npos);
  CHECK(hold < start);
  CHECK(contains(t, "  2026-12-02T10:10:00Z  advance  running      2    5.00%  hold passed\n"));
  // The failed rollout: its failed check and the verdict, wrapped.
  CHECK(contains(t, "\napi (v2): green vs blue, failed\n  stages    [10% 1m30s]\n"));
  CHECK(contains(t, "  error_ratio     1,412        100                14.1  FAILED  green 5xx"));
  CHECK(contains(t,
                 "  verdict   green 5xx 30% vs blue 0.5% over 1,500 requests: evidence 1,412 "
                 ">= 100 -> rolled back at\n            10:42:17\n"));

  // One object (GET /rollouts/{route}) prints the same way; [] says there are none.
  const std::string one = nlohmann::json::parse(kRolloutsJson)[0].dump();  // the shop rollout alone
  r = formatRolloutStatus(one);
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(contains(std::get<std::string>(r), "  shop   checkout-2.14  canary vs blue  holding"));
  CHECK_FALSE(contains(std::get<std::string>(r), "api"));
  r = formatRolloutStatus("[]");
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(std::get<std::string>(r) == "no rollouts (no route has a [routes.rollout] block)\n");
  // A waiting rollout with a time: "when (what)"; missing fields print as "-".
  r = formatRolloutStatus(R"({"route": "x", "state": "running", "stage": 1, "percent": 1,
      "next_transition": "2026-12-02T11:00:00Z", "waiting_for": "hold"})");
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(contains(std::get<std::string>(r), "2026-12-02T11:00:00Z (hold ends)"));
  CHECK(contains(std::get<std::string>(r), "  x      -        - vs -   running    1/-    1.00%"));
  CHECK(contains(std::get<std::string>(r), "(no checks evaluated yet)"));
  // Judged through Prometheus (SPEC §14): the fleet line, with why it holds.
  r = formatRolloutStatus(R"({"route": "x", "state": "running", "stage": 1, "percent": 1,
      "waiting_for": "prometheus", "hold_reason": "Prometheus cannot be read",
      "fleet": {"prometheus_url": "http://p:9090", "lag_ms": 30000, "intervals_evaluated": 4,
                "intervals_due": 6, "caught_up": true}})");
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(contains(std::get<std::string>(r),
                 "  fleet     through Prometheus at http://p:9090, lag 30s; 4 of 6 due intervals"));
  CHECK(contains(std::get<std::string>(r), "evaluated; Prometheus\n            cannot be read"));
  CHECK(contains(std::get<std::string>(r), "waiting for prometheus"));
  r = formatRolloutStatus("<html>");
  REQUIRE(std::holds_alternative<CtlError>(r));
  CHECK(std::get<CtlError>(r).exit_code == kExitFailure);
}

TEST_CASE("rollout: paths, bodies, durations") {
  CHECK(rolloutPath("") == "/rollouts");
  CHECK(rolloutPath("shop") == "/rollouts/shop");
  CHECK(rolloutPath("shop", "pause") == "/rollouts/shop/pause");
  CHECK(rolloutPath("a b/c%", "abort") == "/rollouts/a%20b%2Fc%25/abort");
  CHECK(reasonBody("canary looks \"fine\"") == R"({"reason":"canary looks \"fine\""})");
  CHECK(durationText(0) == "0s");
  CHECK(durationText(500) == "500ms");
  CHECK(durationText(1500) == "1.5s");
  CHECK(durationText(30000) == "30s");
  CHECK(durationText(600000) == "10m");
  CHECK(durationText(3600000) == "1h");
  CHECK(durationText(5400000) == "1h30m");
  CHECK(durationText(7205000) == "2h0m5s");
  CHECK(rolloutErrorText(R"({"error": "cannot resume: the rollout is running"})") ==
        "cannot resume: the rollout is running");
  CHECK(rolloutErrorText("no such route\n") == "no such route");
  for (const char* a : {"pause", "resume", "promote", "abort", "retry"}) CHECK(isRolloutAction(a));
  CHECK_FALSE(isRolloutAction("status"));
  CHECK_FALSE(isRolloutAction("preview"));
}

TEST_CASE("cli: rollout usage errors exit 2") {
  const std::string a = "127.0.0.1:9901";
  CHECK(runCtl({"rollout"}).code == kExitUsage);
  CHECK(runCtl({"rollout", "frobnicate", "--admin", a}).code == kExitUsage);
  CHECK(runCtl({"rollout", "--help"}).code == kExitOk);
  CHECK(contains(runCtl({"rollout", "--help"}).out, "rollout preview FILE --route NAME"));
  CHECK(runCtl({"rollout", "status", "--help"}).code == kExitOk);
  CHECK(runCtl({"rollout", "status"}).code == kExitUsage);                        // no --admin
  CHECK(runCtl({"rollout", "status", "--admin", "nocolon"}).code == kExitUsage);  // bad address
  CHECK(runCtl({"rollout", "status", "--admin", a, "--reason", "x"}).code == kExitUsage);
  CHECK(runCtl({"rollout", "status", "--admin", a, "--route", ""}).code == kExitUsage);
  CHECK(runCtl({"rollout", "status", "--admin", a, "extra"}).code == kExitUsage);
  CHECK(runCtl({"rollout", "pause", "--admin", a}).code == kExitUsage);       // no --route
  CHECK(runCtl({"rollout", "pause", "--route", "shop"}).code == kExitUsage);  // no --admin
  CHECK(runCtl({"rollout", "pause", "--admin", a, "--route", "shop", "--keys", "5"}).code ==
        kExitUsage);
  // --to: only 100, only for promote.
  RunResult r = runCtl({"rollout", "pause", "--admin", a, "--route", "shop", "--to", "100"});
  CHECK(r.code == kExitUsage);
  CHECK(contains(r.err, "rollout pause: --to is only for promote"));
  r = runCtl({"rollout", "promote", "--admin", a, "--route", "shop", "--to", "50"});
  CHECK(r.code == kExitUsage);
  CHECK(contains(r.err, "rollout promote: --to: only 100"));
  CHECK(runCtl({"rollout", "promote", "--admin", a, "--route", "s", "--to", "100", "--to", "100"})
            .code == kExitUsage);
  CHECK(runCtl({"rollout", "preview"}).code == kExitUsage);            // no FILE
  CHECK(runCtl({"rollout", "preview", "f.toml"}).code == kExitUsage);  // no --route
  CHECK(runCtl({"rollout", "preview", "f.toml", "--route", "r", "--keys", "0"}).code == kExitUsage);
  CHECK(runCtl({"rollout", "preview", "f.toml", "--route", "r", "--seed", "x"}).code == kExitUsage);
  CHECK(runCtl({"rollout", "preview", "f.toml", "--route", "r", "--admin", a}).code == kExitUsage);
  CHECK(runCtl({"rollout", "preview", "/nonexistent/sy.toml", "--route", "r"}).code ==
        kExitFailure);
}

TEST_CASE("cli: rollout status through the transport") {
  std::vector<HttpRequest> seen;
  HttpResponse answer{200, kRolloutsJson, ""};
  const HttpTransport fake = [&](const HttpRequest& req) {
    seen.push_back(req);
    return answer;
  };
  RunResult r = runCtl({"rollout", "status", "--admin", "127.0.0.1:9901", "--timeout", "3"}, fake);
  CHECK(r.code == kExitOk);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].method == "GET");
  CHECK(seen[0].path == "/rollouts");
  CHECK(seen[0].body.empty());
  CHECK(seen[0].timeout_seconds == 3);
  CHECK(header(seen[0], "Host") == "127.0.0.1:9901");
  CHECK(header(seen[0], "Authorization") == "(absent)");
  CHECK(r.out == std::get<std::string>(formatRolloutStatus(kRolloutsJson)));

  r = runCtl(
      {"rollout", "status", "--admin", "127.0.0.1:9901", "--route", "shop", "--token", "t0k"},
      fake);
  CHECK(seen.back().path == "/rollouts/shop");
  CHECK(header(seen.back(), "Authorization") == "Bearer t0k");

  answer = {404, "no rollout on route \"nope\"\n", ""};
  r = runCtl({"rollout", "status", "--admin", "127.0.0.1:9901", "--route", "nope"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(r.out.empty());
  CHECK(contains(r.err, "rollout status: no rollout on route \"nope\" (HTTP 404)"));
  CHECK(contains(r.err, "\nno rollout on route \"nope\"\n"));
  answer = {500, "boom", ""};
  r = runCtl({"rollout", "status", "--admin", "127.0.0.1:9901"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "GET /rollouts failed (HTTP 500)\nboom\n"));
  answer = {200, "not json", ""};
  CHECK(runCtl({"rollout", "status", "--admin", "127.0.0.1:9901"}, fake).code == kExitFailure);
  answer = {0, "", "cannot connect (refused or unreachable)"};
  r = runCtl({"rollout", "status", "--admin", "127.0.0.1:9901"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "no answer from the admin endpoint 127.0.0.1:9901: cannot connect"));
}

TEST_CASE("cli: rollout actions: method, path, query, headers, body and answers") {
  std::vector<HttpRequest> seen;
  const std::string paused = R"({"route": "shop", "id": "checkout-2.14", "variant": "canary",
      "baseline": "blue", "state": "paused", "stage": 2, "percent": 5.0,
      "stages": [{"percent": 1}, {"percent": 5}, {"percent": 25}, {"percent": 100}],
      "next_transition": null, "waiting_for": "resume",
      "verdict": "paused by an operator: looking at a dashboard"})";
  HttpResponse answer{200, paused, ""};
  const HttpTransport fake = [&](const HttpRequest& req) {
    seen.push_back(req);
    return answer;
  };
  const std::string a = "127.0.0.1:9901";

  RunResult r = runCtl({"rollout", "pause", "--admin", a, "--route", "shop", "--reason",
                        "looking at a \"dashboard\"", "--token", "t0k"},
                       fake);
  CHECK(r.code == kExitOk);
  CHECK(r.err.empty());
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].path == "/rollouts/shop/pause");
  CHECK(seen[0].host == "127.0.0.1");
  CHECK(seen[0].port == 9901);
  CHECK(header(seen[0], "Host") == "127.0.0.1:9901");
  CHECK(header(seen[0], "Authorization") == "Bearer t0k");
  CHECK(header(seen[0], "Content-Type") == "application/json");
  CHECK(nlohmann::json::parse(seen[0].body) ==
        nlohmann::json{{"reason", "looking at a \"dashboard\""}});
  CHECK(r.out ==
        "shop (checkout-2.14): paused, stage 2/4, 5.00% of traffic to canary; next: waiting "
        "for resume\n"
        "verdict: paused by an operator: looking at a dashboard\n");

  // Every action, without a reason: no body, no Content-Type, no token.
  for (const char* action : {"resume", "promote", "abort", "retry"}) {
    CAPTURE(action);
    r = runCtl({"rollout", action, "--admin", a, "--route", "shop"}, fake);
    CHECK(r.code == kExitOk);
    CHECK(seen.back().method == "POST");
    CHECK(seen.back().path == std::string("/rollouts/shop/") + action);
    CHECK(seen.back().body.empty());
    CHECK(header(seen.back(), "Content-Type") == "(absent)");
    CHECK(header(seen.back(), "Authorization") == "(absent)");
  }
  r = runCtl({"rollout", "promote", "--admin", a, "--route", "shop", "--to", "100"}, fake);
  CHECK(r.code == kExitOk);
  CHECK(seen.back().path == "/rollouts/shop/promote?to=100");
  r = runCtl({"rollout", "promote", "--admin", a, "--route", "shop", "--to=100"}, fake);
  CHECK(seen.back().path == "/rollouts/shop/promote?to=100");

  // A complete rollout with no verdict: one line.
  answer = {200, R"({"route": "shop", "id": "c", "variant": "canary", "state": "complete",
                     "stage": 1, "percent": 100, "stages": [{"percent": 100}],
                     "next_transition": null, "waiting_for": "", "verdict": ""})",
            ""};
  r = runCtl({"rollout", "promote", "--admin", a, "--route", "shop"}, fake);
  CHECK(r.out == "shop (c): complete, stage 1/1, 100.00% of traffic to canary\n");

  answer = {409, R"({"error": "cannot resume: the rollout is running"})", ""};
  r = runCtl({"rollout", "resume", "--admin", a, "--route", "shop"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(r.out.empty());
  CHECK(r.err ==
        "switchyard-ctl: rollout resume: resume is not allowed now (HTTP 409)\n"
        "cannot resume: the rollout is running\n");

  answer = {404, "no rollout on route \"nope\"\n", ""};
  r = runCtl({"rollout", "abort", "--admin", a, "--route", "nope"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(r.out.empty());
  CHECK(contains(r.err, "rollout abort: no rollout on route \"nope\" (HTTP 404)\n"));
  CHECK(seen.back().path == "/rollouts/nope/abort");

  answer = {401, "missing or wrong admin token\n", ""};
  r = runCtl({"rollout", "abort", "--admin", a, "--route", "shop"}, fake);
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "needs an admin token (--token)"));
  r = runCtl({"rollout", "abort", "--admin", a, "--route", "shop", "--token", "bad"}, fake);
  CHECK(contains(r.err, "the admin token was refused"));

  answer = {200, "<html>", ""};
  CHECK(runCtl({"rollout", "abort", "--admin", a, "--route", "shop"}, fake).code == kExitFailure);
}

TEST_CASE("rollout preview: keys only move into the variant; the rollback returns them") {
  // blue 80, green 20 as configured; canary's weight is the rollout's.
  const config::Route route = routeWithRollout(
      {80, 20, 7}, Variant::Canary,
      {{1, 600000, false}, {5, 1800000, false}, {25, 3600000, true}, {100, 3600000, false}});
  PreviewOptions o;
  o.keys = 100000;
  const PreviewResult r = previewOk(route, o);
  REQUIRE(r.rows.size() == 6);  // before, 4 stages, rollback
  CHECK(r.rows.front().kind == PreviewRow::Kind::Before);
  CHECK(r.rows.back().kind == PreviewRow::Kind::Rollback);
  CHECK(r.moved_elsewhere == 0);
  CHECK(r.not_returned == 0);

  // Before the rollout (share 0): canary has weight 0 and no key; blue/green split 80/20.
  const PreviewRow& before = r.rows[0];
  CHECK(before.weights == Weights{80, 20, 0});
  CHECK(before.counts[2] == 0);
  CHECK(std::fabs(share(before.counts[0], o.keys) - 0.8) < tolerance(0.8, o.keys));

  const double percents[] = {1, 5, 25, 100};
  for (size_t i = 1; i <= 4; ++i) {
    const PreviewRow& row = r.rows[i];
    const PreviewRow& prev = r.rows[i - 1];
    CAPTURE(i);
    CHECK(row.stage == i);
    CHECK(row.percent == percents[i - 1]);
    CHECK(row.weights == proxy::weightsWithShare(route, Variant::Canary, row.percent));
    const double p = row.percent / 100.0;
    CHECK(std::fabs(share(row.counts[2], o.keys) - p) < tolerance(p, o.keys));
    CHECK(row.counts[0] + row.counts[1] + row.counts[2] == o.keys);
    // Only into canary: the moved count is exactly canary's gain, taken from blue and green
    // alone (never blue <-> green, never out of canary).
    CHECK(row.moves[0][1] == 0);
    CHECK(row.moves[1][0] == 0);
    CHECK(row.moves[2][0] == 0);
    CHECK(row.moves[2][1] == 0);
    CHECK(row.moved == row.moves[0][2] + row.moves[1][2]);
    CHECK(row.moved == row.counts[2] - prev.counts[2]);
    CHECK(row.counts[0] == prev.counts[0] - row.moves[0][2]);
  }
  CHECK(r.rows[4].counts[2] == o.keys);  // 100 %: every key on canary
  CHECK(r.rows[3].manual_gate);
  CHECK(r.rows[3].hold_ms == 3600000);

  // The rollback: every key leaves canary for exactly the variant it had before.
  const PreviewRow& back = r.rows[5];
  CHECK(back.weights == before.weights);
  CHECK(back.counts == before.counts);
  CHECK(back.moved == o.keys);
  CHECK(back.moves[2][0] == before.counts[0]);
  CHECK(back.moves[2][1] == before.counts[1]);

  const std::string text = formatPreview(r);
  INFO(text);
  CHECK(contains(text,
                 "route ro: rollout ro-1 of canary (baseline blue), 100,000 random keys "
                 "(seed 1), salt \"ro\"\n"));
  CHECK(contains(text, "  stage     percent  hold  gate    weights"));
  CHECK(contains(text, "  before      0.00%                blue=80 green=20 canary=0"));
  CHECK(contains(text, "  3          25.00%  1h    manual  blue=80 green=20 canary=33.3333"));
  CHECK(contains(text, "  4         100.00%  1h            blue=0 green=0 canary=1"));
  CHECK(contains(text, strFormat("blue -> canary %s, green -> canary %s",
                                 groupDigits(r.rows[1].moves[0][2]).c_str(),
                                 groupDigits(r.rows[1].moves[1][2]).c_str())));
  CHECK(contains(text, "  rollback    0.00%                blue=80 green=20 canary=0  "));
  CHECK(contains(text, strFormat("  100,000 (100.00%%)  canary -> blue %s, canary -> green %s\n",
                                 groupDigits(before.counts[0]).c_str(),
                                 groupDigits(before.counts[1]).c_str())));
  CHECK(contains(text, "keys only move into canary, never out of it or between the others\n"));
  CHECK(contains(text,
                 "every key returns to the variant it had before the rollout: 100,000 of "
                 "100,000\n"));
  CHECK_FALSE(contains(text, "UNEXPECTED"));

  // The same keys simulate draws: simulate's move from share 0 to stage 1's weights is
  // preview's first row of moves.
  SimulateOptions so;
  so.keys = o.keys;
  so.new_weights = r.rows[1].weights;
  config::Route at_zero = routeWithWeights(before.weights);
  at_zero.name = "ro";  // the salt
  const SimulateResult sim = simulate(at_zero, so);
  CHECK(sim.counts == before.counts);
  CHECK(sim.moves == r.rows[1].moves);

  // Another seed, other keys; the same seed, the same numbers.
  CHECK(previewOk(route, o).rows[2].counts == r.rows[2].counts);
  o.seed = 9;
  CHECK(previewOk(route, o).rows[2].counts != r.rows[2].counts);

  // A green rollout on a route without a canary pool: only the variants the route uses.
  config::Route green = routeWithRollout({50, 0, 0}, Variant::Green, {{50, 1000, false}});
  green.pools[2] = nullptr;
  const PreviewResult g = previewOk(green, PreviewOptions{20000, 1});
  CHECK(g.moved_elsewhere == 0);
  CHECK(g.not_returned == 0);
  CHECK(g.rows[1].moved == g.rows[1].moves[0][1]);
  CHECK(std::fabs(share(g.rows[1].counts[1], 20000) - 0.5) < tolerance(0.5, 20000));
  const std::string gt = formatPreview(g);
  CHECK(contains(gt, "blue=50 green=50  "));
  CHECK_FALSE(contains(gt, "canary"));

  // No rollout: an error (exit 1).
  auto e = previewRollout(routeWithWeights({1, 1, 1}), o);
  REQUIRE(std::holds_alternative<CtlError>(e));
  CHECK(std::get<CtlError>(e).exit_code == kExitFailure);
  CHECK(contains(std::get<CtlError>(e).message, "route \"sim\" has no rollout"));
}

TEST_CASE("cli: rollout preview end to end") {
  // state_dir (required with a rollout) belongs to [server].
  std::string text = std::string(kPools) + kRoutes + kRolloutRoute;
  text.replace(text.find("[server]\n"), 9, "[server]\nstate_dir = \"/tmp/sy-ctl-state\"\n");
  TempConfig good(text);
  RunResult r = runCtl({"check", good.path()});
  INFO(r.err);
  REQUIRE(r.code == kExitOk);

  r = runCtl({"rollout", "preview", good.path(), "--route", "roll", "--keys", "20000"});
  CHECK(r.code == kExitOk);
  CHECK(contains(r.out,
                 "route roll: rollout roll-7 of canary (baseline blue), 20,000 random "
                 "keys (seed 1), salt \"roll\""));
  CHECK(contains(r.out, "  2          20.00%  30m   manual  blue=80 green=20 canary=25"));
  CHECK(contains(r.out, "  3         100.00%  1h            blue=0 green=0 canary=1"));
  CHECK(contains(r.out, "keys only move into canary"));
  CHECK(contains(r.out, "20,000 of 20,000"));
  CHECK(
      r.out ==
      runCtl({"rollout", "preview", good.path(), "--route=roll", "--keys=20000", "--seed=1"}).out);
  CHECK(r.out != runCtl({"rollout", "preview", good.path(), "--route", "roll", "--keys", "20000",
                         "--seed", "2"})
                     .out);

  r = runCtl({"rollout", "preview", good.path(), "--route", "shop"});
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "route \"shop\" has no rollout"));
  r = runCtl({"rollout", "preview", good.path(), "--route", "missing"});
  CHECK(r.code == kExitFailure);
  CHECK(contains(r.err, "no route named \"missing\""));
}

TEST_CASE("parseAdminAddress") {
  std::string host;
  uint16_t port = 0;
  std::string error;
  CHECK(parseAdminAddress("127.0.0.1:9901", host, port, error));
  CHECK(host == "127.0.0.1");
  CHECK(port == 9901);
  CHECK(parseAdminAddress("http://admin.local:80/", host, port, error));
  CHECK(host == "admin.local");
  CHECK(port == 80);
  CHECK(parseAdminAddress("[::1]:9901", host, port, error));
  CHECK(host == "::1");
  for (const char* bad :
       {"", "host", ":80", "host:", "host:x", "host:70000", "::1:80", "[::1]", "[::1]80"}) {
    const std::string text = bad;
    CAPTURE(text);
    CHECK_FALSE(parseAdminAddress(bad, host, port, error));
  }
}

TEST_CASE("format helpers") {
  CHECK(groupDigits(0) == "0");
  CHECK(groupDigits(999) == "999");
  CHECK(groupDigits(1000) == "1,000");
  CHECK(groupDigits(4762) == "4,762");
  CHECK(groupDigits(100000) == "100,000");
  CHECK(groupDigits(1234567) == "1,234,567");
  CHECK(percent(0.0476) == "4.76%");
  CHECK(weightText(95) == "95");
  CHECK(weightText(2.5) == "2.5");
  CHECK(wrapText("aaa bbb ccc", "x ", 2, 9) == "x aaa bbb\n  ccc\n");
  Table t("lr");
  t.row({"a", "1"});
  t.row({"bbb", "100"});
  CHECK(t.render("") == "a      1\nbbb  100\n");
}

// ---- explain: segments and location (SPEC §13)
// ----------------------------------------------------

TEST_CASE("explain: the segments a request is in, its country, and the rule that decided") {
  const std::string data = std::string(SY_SOURCE_ROOT) + "/tests/unit/config/testdata";
  TempConfig file(R"(
[server]
listen = ["127.0.0.1:18080"]
state_dir = "/tmp"
geoip_database = ")" +
                  data + R"(/countries.mmdb"
[upstreams.blue]
servers = ["127.0.0.1:19001"]
[upstreams.canary]
servers = ["127.0.0.1:19003"]
[segments.beta]
keys_file = ")" + data +
                  R"(/beta-users.txt"
[segments.oceania]
country = ["NZ", "AU"]
[segments.staff]
header = "X-Staff"
regex = "yes"
[[routes]]
name = "shop"
key = ["header:X-User-Id"]
upstreams = { blue = "blue", canary = "canary" }
weights = { blue = 100 }
[[routes.override]]
segment = "beta"
variant = "canary"
[routes.rollout]
id = "r1"
stages = [{ percent = 1, hold = "1h", segments = ["staff"] }, { percent = 50, hold = "1h" }]
)");
  // A key in the keys file: the override by segment.
  RunResult r = runCtl({"explain", file.path(), "--route", "shop", "--key", "bob"});
  INFO(r.out << r.err);
  REQUIRE(r.code == kExitOk);
  CHECK(contains(r.out, "segments beta (defined: beta, oceania, staff)\n"));
  CHECK(contains(r.out, "country  unknown (geoip_database, for client 127.0.0.1)\n"));
  CHECK(contains(r.out, "variant  canary\n"));
  CHECK(contains(r.out, "routes[0].override[0] matched: segment beta;"));

  // The country from the database for the client address, or from --country.
  r = runCtl(
      {"explain", file.path(), "--route", "shop", "--key", "dave", "--client-ip", "127.0.0.2"});
  CHECK(contains(r.out, "segments oceania (defined: beta, oceania, staff)\n"));
  CHECK(contains(r.out, "country  NZ (geoip_database, for client 127.0.0.2)\n"));
  CHECK(contains(r.out, "variant  blue\n"));
  r = runCtl({"explain", file.path(), "--route", "shop", "--key", "dave", "--country", "AU"});
  CHECK(contains(r.out, "segments oceania"));
  CHECK(contains(r.out, "country  AU (--country)\n"));
  CHECK(runCtl({"explain", file.path(), "--route", "shop", "--country", "UK"}).code == kExitUsage);

  // A rollout stage's segment: named without --stage, deciding with it.
  r = runCtl(
      {"explain", file.path(), "--route", "shop", "--key", "dave", "--header", "X-Staff: yes"});
  CHECK(contains(r.out, "segments staff"));
  CHECK(contains(r.out, "the request is in segment staff, which gets canary from stage 1 (1%) on"));
  CHECK(contains(r.out, "variant  blue\n"));  // the configured weights: blue only
  r = runCtl({"explain", file.path(), "--route", "shop", "--key", "dave", "--header",
              "X-Staff: yes", "--stage", "2"});
  INFO(r.out << r.err);
  CHECK(contains(r.out, "variant  canary\n"));
  CHECK(contains(r.out, "in segment staff, which rollout r1 sends to canary at stage 2"));
  CHECK(contains(r.out, "stage    as at stage 2 of rollout r1: canary gets 50%"));
  CHECK(runCtl({"explain", file.path(), "--route", "shop", "--stage", "3"}).code == kExitUsage);
  CHECK(runCtl({"explain", file.path(), "--route", "shop", "--stage", "x"}).code == kExitUsage);
}

}  // namespace sy::ctl
