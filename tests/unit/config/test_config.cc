// config/: TOML -> validated, compiled Snapshot. Every rejection of SPEC §3 is checked for its
// exact position and key path. No test touches the network: names go through a fake resolver,
// and numeric addresses never reach DNS.

#include <arpa/inet.h>
#include <doctest.h>
#include <netinet/in.h>

#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "config/error.h"
#include "config/key_set.h"
#include "config/loader.h"
#include "config/snapshot.h"
#include "config/validate.h"

namespace sy::config {
namespace {

const std::string kSourceRoot = SY_SOURCE_ROOT;
// A PEM file holding a self-signed certificate (CN=switchyard-test, valid for 100 years) and
// its EC key, so it serves as cert, key and CA file alike.
const std::string kReadableFile = kSourceRoot + "/tests/unit/config/testdata/test-cert.pem";
// An EC key that does not belong to that certificate.
const std::string kOtherKey = kSourceRoot + "/tests/unit/config/testdata/other-key.pem";

SocketAddress ipv4(const std::string& text, const char* ip, uint16_t port) {
  SocketAddress out;
  out.text = text;
  auto* sin = reinterpret_cast<sockaddr_in*>(&out.addr);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin->sin_addr);
  out.len = sizeof(sockaddr_in);
  return out;
}

// Numeric addresses go to the real resolver (which never does DNS for them); the only name
// known is "multi.test", with two addresses.
std::optional<std::string> fakeResolve(const HostPort& address, std::vector<SocketAddress>& out) {
  if (address.host == "multi.test") {
    out.push_back(ipv4(address.text, "10.0.0.1", address.port));
    out.push_back(ipv4(address.text, "10.0.0.2", address.port));
    return std::nullopt;
  }
  in6_addr ignored{};
  if (inet_pton(AF_INET, address.host.c_str(), &ignored) == 1 ||
      inet_pton(AF_INET6, address.host.c_str(), &ignored) == 1) {
    return systemResolver()(address, out);
  }
  return std::string("Name or service not known");
}

LoadResult load(std::string_view text) {
  return loadSnapshotFromString(text, "t.toml", fakeResolve);
}

// Pools every test may use; appended at the end so the lines of the part under test are
// numbered from 1.
constexpr std::string_view kPools = R"(
[upstreams.b]
servers = ["127.0.0.1:9001"]
[upstreams.g]
servers = ["127.0.0.1:9002"]
[upstreams.c]
servers = ["127.0.0.1:9003"]
[upstreams.s]
servers = ["127.0.0.1:9004"]
)";

// A valid route, for tests about other sections.
constexpr std::string_view kRoute = R"(
[[routes]]
name = "r"
upstreams = { blue = "b" }
weights = { blue = 1 }
)";

// "@READABLE@" and "@ROOT@" in test configs stand for kReadableFile and the source directory.
std::string expand(std::string text) {
  for (const auto& [placeholder, value] :
       {std::pair<std::string, std::string>{"@READABLE@", kReadableFile},
        {"@ROOT@", kSourceRoot}}) {
    for (size_t at = text.find(placeholder); at != std::string::npos;
         at = text.find(placeholder, at + value.size())) {
      text.replace(at, placeholder.size(), value);
    }
  }
  return text;
}

LoadResult loadWithPools(std::string_view text) {
  return load(expand(std::string(text) + std::string(kPools)));
}

bool hasError(const LoadResult& result, const std::string& where, std::string_view fragment) {
  for (const ConfigError& error : result.errors) {
    const std::string text = error.toString();
    if (text.rfind(where + ": ", 0) == 0 && text.find(fragment) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// Loading `text` (+ kPools) fails with exactly one error, at `where` ("file:line:col: key"),
// whose message contains `fragment`.
#define CHECK_REJECTED(text, where, fragment)          \
  do {                                                 \
    const LoadResult result_ = loadWithPools(text);    \
    INFO("errors:\n" << formatErrors(result_.errors)); \
    CHECK_FALSE(result_.ok());                         \
    CHECK(result_.errors.size() == 1);                 \
    CHECK(hasError(result_, where, fragment));         \
  } while (false)

#define REQUIRE_LOADS(result_, text)                 \
  const LoadResult result_ = loadWithPools(text);    \
  INFO("errors:\n" << formatErrors(result_.errors)); \
  REQUIRE(result_.ok())

// ---- Error format -------------------------------------------------------------------------------

TEST_CASE("ConfigError prints file:line:col: key: message, leaving out what is unknown") {
  CHECK(ConfigError{"demo.toml", 14, 9, "routes[0].weights.canary", "must be >= 0"}.toString() ==
        "demo.toml:14:9: routes[0].weights.canary: must be >= 0");
  CHECK(ConfigError{"demo.toml", 0, 0, "server", "bad"}.toString() == "demo.toml: server: bad");
  CHECK(ConfigError{"demo.toml", 3, 0, "", "bad"}.toString() == "demo.toml:3: bad");
  CHECK(ConfigError{"demo.toml", 3, 4, "", "bad"}.toString() == "demo.toml:3:4: bad");
  CHECK(formatErrors({{"a.toml", 1, 2, "k", "m1"}, {"a.toml", 3, 4, "", "m2"}}) ==
        "a.toml:1:2: k: m1\na.toml:3:4: m2\n");
}

TEST_CASE("parseVariant knows the four variant names and nothing else") {
  CHECK(parseVariant("blue") == Variant::Blue);
  CHECK(parseVariant("green") == Variant::Green);
  CHECK(parseVariant("canary") == Variant::Canary);
  CHECK(parseVariant("shadow") == Variant::Shadow);
  CHECK_FALSE(parseVariant("Blue"));
  CHECK_FALSE(parseVariant(""));
}

// ---- Examples and defaults ----------------------------------------------------------------------

TEST_CASE("config/examples/demo.toml loads as documented") {
  const LoadResult result = loadSnapshot(kSourceRoot + "/config/examples/demo.toml");
  INFO("errors:\n" << formatErrors(result.errors));
  REQUIRE(result.ok());
  const Snapshot& s = *result.snapshot;
  REQUIRE(s.server.listen.size() == 1);
  CHECK(s.server.listen[0].text == "127.0.0.1:8080");
  REQUIRE(s.server.admin);
  CHECK(s.server.admin->text == "127.0.0.1:9901");
  CHECK(s.pools.size() == 4);
  CHECK(s.pools.at("demo-shadow").servers.at(0).text == "127.0.0.1:9004");
  REQUIRE(s.routes.size() == 2);
  // The rollout route first (its path match must win over the catch-all).
  const Route& checkout = s.routes[0];
  CHECK(checkout.name == "checkout");
  REQUIRE(checkout.rollout);
  CHECK(checkout.rollout->variant == Variant::Canary);
  CHECK(checkout.rollout->baseline == Variant::Blue);
  REQUIRE(checkout.rollout->stages.size() == 4);
  CHECK(checkout.rollout->stages.back().percent == 100.0);
  CHECK(checkout.rollout->analysis.interval_ms == 1000);
  CHECK(s.server.state_dir == "/tmp/switchyard-demo/state");
  const Route& route = s.routes[1];
  CHECK(route.name == "demo");
  CHECK(route.salt == "demo");
  REQUIRE(route.keys.size() == 2);
  CHECK(route.keys[0].kind == KeySource::Kind::Header);
  CHECK(route.keys[0].name == "X-User-Id");
  CHECK(route.keys[1].kind == KeySource::Kind::Cookie);
  CHECK(route.keys[1].name == "sy_id");
  CHECK(route.fallback.kind == Fallback::Kind::Random);
  CHECK(route.weights == std::array<double, kWeightedVariants>{90, 0, 10});
  CHECK(route.pools[static_cast<size_t>(Variant::Canary)] == &s.pools.at("demo-canary"));
  CHECK(route.pools[static_cast<size_t>(Variant::Shadow)] == &s.pools.at("demo-shadow"));
  REQUIRE(route.shadow);
  CHECK(route.shadow->percent == 10.0);
  REQUIRE(route.overrides.size() == 1);
  CHECK(route.overrides[0].kind == Override::Kind::Header);
  CHECK(route.overrides[0].name == "X-Canary");
  CHECK(RE2::FullMatch("yes", *route.overrides[0].regex));
  CHECK_FALSE(RE2::FullMatch("yess", *route.overrides[0].regex));
  CHECK(route.overrides[0].variant == Variant::Canary);
}

TEST_CASE("config/examples/reference.toml loads and sets every section") {
  const LoadResult result = loadSnapshot(kSourceRoot + "/config/examples/reference.toml");
  INFO("errors:\n" << formatErrors(result.errors));
  REQUIRE(result.ok());
  const Snapshot& s = *result.snapshot;
  CHECK(s.pools.at("shop-blue").servers.size() == 2);
  REQUIRE(s.pools.at("shop-blue").health);
  CHECK(s.pools.at("shop-blue").health->path == "/healthz");
  CHECK_FALSE(s.pools.at("shop-green").health);
  CHECK(s.pools.at("shop-canary").balance == Balance::LeastConn);
  REQUIRE(s.routes.size() == 2);
  const Route& shop = s.routes[0];
  CHECK(shop.host == "shop.example.com");
  CHECK_FALSE(shop.host_wildcard);
  REQUIRE(shop.path);
  CHECK(RE2::PartialMatch("/api/x", *shop.path));
  CHECK(shop.assign_cookie == "sy_id");
  CHECK(shop.failover == Variant::Blue);
  CHECK(shop.overrides.size() == 4);
  CHECK(shop.overrides[3].kind == Override::Kind::Segment);
  REQUIRE(s.segments.size() == 1);
  CHECK(s.segments[0].name == "staff");
  CHECK(s.segments[0].networks.size() == 2);
  CHECK(shop.overrides[2].kind == Override::Kind::ClientIp);
  CHECK(shop.overrides[2].networks.size() == 2);
  CHECK(s.server.state_dir == "/var/lib/switchyard");
  REQUIRE(shop.rollout);
  CHECK(shop.rollout->id == "checkout-2.14");
  CHECK(shop.rollout->variant == Variant::Canary);
  CHECK(shop.rollout->baseline == Variant::Blue);
  CHECK_FALSE(shop.rollout->start_unix_ms);
  REQUIRE(shop.rollout->stages.size() == 4);
  CHECK(shop.rollout->stages[0].hold_ms == 600000);
  CHECK(shop.rollout->stages[0].segments == std::vector<uint32_t>{0});
  CHECK(shop.rollout->stages[2].manual_gate);
  CHECK(shop.rollout->stages[3].percent == 100);
  CHECK(shop.rollout->analysis.interval_ms == 30000);
  CHECK(shop.rollout->analysis.shadow_mismatch == 0.01);
  CHECK(s.routes[1].host.empty());
  CHECK_FALSE(s.routes[1].path);
  CHECK_FALSE(s.routes[1].rollout);
}

TEST_CASE("defaults apply to every absent key") {
  REQUIRE_LOADS(result, kRoute);
  const Snapshot& s = *result.snapshot;
  CHECK(s.path == "t.toml");
  REQUIRE(s.server.listen.size() == 1);
  CHECK(s.server.listen[0].text == "127.0.0.1:8080");
  CHECK(s.server.listen[0].addr.ss_family == AF_INET);
  CHECK(s.server.workers == 0);
  CHECK_FALSE(s.server.admin);
  CHECK(s.server.admin_token.empty());
  CHECK(s.server.variant_header == "X-Switchyard-Variant");
  CHECK(s.server.access_log.empty());
  CHECK_FALSE(s.server.watch_config);
  CHECK(s.server.timeouts.client_header_ms == 10000);
  CHECK(s.server.timeouts.client_idle_ms == 60000);
  CHECK(s.server.timeouts.upstream_connect_ms == 2000);
  CHECK(s.server.timeouts.upstream_response_ms == 30000);
  CHECK(s.server.timeouts.drain_timeout_ms == 15000);
  CHECK(s.server.limits.max_header_bytes == 65536);
  CHECK(s.server.limits.max_body_bytes == 0);
  CHECK(s.server.limits.max_connections == 10000);
  CHECK(s.server.http2.max_concurrent_streams == 128);
  CHECK(s.server.http2.initial_window_bytes == 65535);
  CHECK(s.server.http2.max_header_list_bytes == 65536);
  CHECK_FALSE(s.server.http2_cleartext);
  CHECK(s.server.trusted_proxies.empty());
  CHECK(s.listeners.empty());

  const Pool& pool = s.pools.at("b");
  CHECK(pool.name == "b");
  CHECK(pool.balance == Balance::RoundRobin);
  CHECK_FALSE(pool.tls);
  CHECK(pool.tls_verify);
  CHECK(pool.ca_file.empty());
  CHECK(pool.sni.empty());
  CHECK_FALSE(pool.health);

  REQUIRE(s.routes.size() == 1);
  const Route& route = s.routes[0];
  CHECK(route.host.empty());
  CHECK_FALSE(route.path);
  CHECK(route.keys.empty());
  CHECK(route.fallback.kind == Fallback::Kind::Random);
  CHECK(route.assign_cookie.empty());
  CHECK(route.salt == "r");
  CHECK_FALSE(route.failover);
  CHECK(route.weights == std::array<double, kWeightedVariants>{1, 0, 0});
  CHECK(route.pools[0] == &pool);
  CHECK(route.pools[1] == nullptr);
  CHECK_FALSE(route.shadow);
  CHECK(route.overrides.empty());
}

TEST_CASE("partial sub-tables keep the defaults of the keys they leave out") {
  REQUIRE_LOADS(result, R"(
[server]
admin = ""
timeouts = { client_idle_ms = 5 }
[upstreams.h]
servers = ["127.0.0.1:1"]
health = { interval_ms = 500 }
[[routes]]
name = "r"
upstreams = { blue = "b", shadow = "s" }
weights = { blue = 1 }
shadow = { percent = 1.5 }
)");
  const Snapshot& s = *result.snapshot;
  CHECK_FALSE(s.server.admin);  // "" disables, like absent
  CHECK(s.server.timeouts.client_idle_ms == 5);
  CHECK(s.server.timeouts.client_header_ms == 10000);
  const HealthCheck& health = s.pools.at("h").health.value();
  CHECK(health.interval_ms == 500);
  CHECK(health.path == "/healthz");
  CHECK(health.timeout_ms == 1000);
  CHECK(health.unhealthy_after == 3);
  CHECK(health.healthy_after == 2);
  const ShadowSettings& shadow = s.routes[0].shadow.value();
  CHECK(shadow.percent == 1.5);
  CHECK(shadow.max_body_bytes == 1048576);
  CHECK(shadow.max_in_flight == 1024);
  CHECK(shadow.compare);
  CHECK(shadow.ignore_headers == std::vector<std::string>{"date", "x-request-id"});
}

TEST_CASE("every configured value reaches the snapshot") {
  const std::string text = R"(
[server]
listen = ["127.0.0.1:8081", "[::1]:8082"]
workers = 3
admin = "127.0.0.1:9999"
admin_token = "secret"
variant_header = "X-Variant"
access_log = "-"
watch_config = true
http2_cleartext = true
[server.timeouts]
client_header_ms = 1
client_idle_ms = 2
upstream_connect_ms = 3
upstream_response_ms = 4
drain_timeout_ms = 0
[server.limits]
max_header_bytes = 1024
max_body_bytes = 5000000000
max_connections = 7
[server.http2]
max_concurrent_streams = 9
initial_window_bytes = 2147483647
max_header_list_bytes = 1024
[[listener]]
address = "127.0.0.1:8443"
http2 = false
tls = { cert = "@READABLE@", key = "@READABLE@" }
[[listener.sni]]
names = ["Shop.Example.com", "*.shop.example.com"]
cert = "@READABLE@"
key = "@READABLE@"
[upstreams.t]
servers = ["127.0.0.1:443"]
balance = "least_conn"
tls = true
tls_verify = false
ca_file = "@READABLE@"
sni = "api.internal"
[[routes]]
name = "r"
key = ["cookie:sid"]
fallback = "client_ip"
assign_cookie = "sy"
salt = "pepper"
failover = "green"
upstreams = { blue = "b", green = "g", canary = "t", shadow = "s" }
weights = { blue = 1, green = 2, canary = 3 }
[routes.shadow]
percent = 100
max_body_bytes = 10
max_in_flight = 2
compare = false
ignore_headers = ["X-Trace", "Server"]
[[routes.override]]
cookie = "force"
regex = "g.*"
variant = "green"
)";
  REQUIRE_LOADS(result, text);
  const Snapshot& s = *result.snapshot;
  REQUIRE(s.server.listen.size() == 2);
  CHECK(s.server.listen[1].text == "[::1]:8082");
  CHECK(s.server.listen[1].addr.ss_family == AF_INET6);
  CHECK(ntohs(reinterpret_cast<const sockaddr_in6*>(&s.server.listen[1].addr)->sin6_port) == 8082);
  CHECK(s.server.workers == 3);
  CHECK(s.server.admin->text == "127.0.0.1:9999");
  CHECK(s.server.admin_token == "secret");
  CHECK(s.server.variant_header == "X-Variant");
  CHECK(s.server.access_log == "-");
  CHECK(s.server.watch_config);
  CHECK(s.server.timeouts.client_header_ms == 1);
  CHECK(s.server.timeouts.client_idle_ms == 2);
  CHECK(s.server.timeouts.upstream_connect_ms == 3);
  CHECK(s.server.timeouts.upstream_response_ms == 4);
  CHECK(s.server.timeouts.drain_timeout_ms == 0);
  CHECK(s.server.limits.max_header_bytes == 1024);
  CHECK(s.server.limits.max_body_bytes == 5000000000ULL);
  CHECK(s.server.limits.max_connections == 7);
  CHECK(s.server.http2.max_concurrent_streams == 9);
  CHECK(s.server.http2.initial_window_bytes == 2147483647u);
  CHECK(s.server.http2.max_header_list_bytes == 1024);
  CHECK(s.server.http2_cleartext);

  REQUIRE(s.listeners.size() == 1);
  const Listener& listener = s.listeners[0];
  CHECK(listener.address.text == "127.0.0.1:8443");
  CHECK_FALSE(listener.http2);
  CHECK(listener.default_cert.names.empty());
  CHECK(listener.default_cert.cert_file == kReadableFile);
  REQUIRE(listener.sni.size() == 1);
  CHECK(listener.sni[0].names ==
        std::vector<std::string>{"shop.example.com", "*.shop.example.com"});
  CHECK(listener.sni[0].key_file == kReadableFile);

  const Pool& pool = s.pools.at("t");
  CHECK(pool.balance == Balance::LeastConn);
  CHECK(pool.tls);
  CHECK_FALSE(pool.tls_verify);
  CHECK(pool.ca_file == kReadableFile);
  CHECK(pool.sni == "api.internal");

  const Route& route = s.routes.at(0);
  CHECK(route.keys.size() == 1);
  CHECK(route.fallback.kind == Fallback::Kind::ClientIp);
  CHECK(route.assign_cookie == "sy");
  CHECK(route.salt == "pepper");
  CHECK(route.failover == Variant::Green);
  CHECK(route.pools[static_cast<size_t>(Variant::Canary)] == &pool);
  CHECK(route.weights == std::array<double, kWeightedVariants>{1, 2, 3});
  const ShadowSettings& shadow = route.shadow.value();
  CHECK(shadow.percent == 100);
  CHECK(shadow.max_body_bytes == 10);
  CHECK(shadow.max_in_flight == 2);
  CHECK_FALSE(shadow.compare);
  CHECK(shadow.ignore_headers == std::vector<std::string>{"x-trace", "server"});
  REQUIRE(route.overrides.size() == 1);
  CHECK(route.overrides[0].kind == Override::Kind::Cookie);
  CHECK(route.overrides[0].name == "force");
  CHECK(route.overrides[0].variant == Variant::Green);
}

TEST_CASE("weights may be decimals") {
  REQUIRE_LOADS(result, R"(
[[routes]]
name = "r"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 99.99, canary = 0.01 }
)");
  CHECK(result.snapshot->routes[0].weights ==
        std::array<double, kWeightedVariants>{99.99, 0, 0.01});
}

TEST_CASE("salt defaults to the route name, also when empty") {
  REQUIRE_LOADS(result, R"(
[[routes]]
name = "first"
upstreams = { blue = "b" }
weights = { blue = 1 }
[[routes]]
name = "second"
salt = ""
upstreams = { blue = "b" }
weights = { blue = 1 }
[[routes]]
name = "third"
salt = "s1"
upstreams = { blue = "b" }
weights = { blue = 1 }
)");
  CHECK(result.snapshot->routes[0].salt == "first");
  CHECK(result.snapshot->routes[1].salt == "second");
  CHECK(result.snapshot->routes[2].salt == "s1");
}

TEST_CASE("match.host: wildcards become a lower-case suffix, exact hosts are lower-cased") {
  // The exact host is also written in absolute form ("...com."): the dot is dropped.
  REQUIRE_LOADS(result, R"(
[[routes]]
name = "wild"
match = { host = "*.Example.COM" }
upstreams = { blue = "b" }
weights = { blue = 1 }
[[routes]]
name = "exact"
match = { host = "Shop.Example.com.", path = "^/api/" }
upstreams = { blue = "b" }
weights = { blue = 1 }
)");
  const Route& wild = result.snapshot->routes[0];
  CHECK(wild.host_wildcard);
  CHECK(wild.host == ".example.com");
  CHECK_FALSE(wild.path);
  const Route& exact = result.snapshot->routes[1];
  CHECK_FALSE(exact.host_wildcard);
  CHECK(exact.host == "shop.example.com");
  REQUIRE(exact.path);
  CHECK(RE2::PartialMatch("/api/v1", *exact.path));
  CHECK_FALSE(RE2::PartialMatch("/web/api/", *exact.path));
}

TEST_CASE("fallback names a variant") {
  REQUIRE_LOADS(result, R"(
[[routes]]
name = "r"
fallback = "green"
upstreams = { blue = "b", green = "g" }
weights = { blue = 1 }
)");
  CHECK(result.snapshot->routes[0].fallback.kind == Fallback::Kind::Variant);
  CHECK(result.snapshot->routes[0].fallback.variant == Variant::Green);
}

TEST_CASE("an override may pick a variant with weight 0 when it has a pool") {
  REQUIRE_LOADS(result, R"(
[[routes]]
name = "r"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1, canary = 0 }
[[routes.override]]
client_ip = ["192.168.1.7", "2001:db8::/32"]
variant = "canary"
)");
  const Override& o = result.snapshot->routes[0].overrides.at(0);
  CHECK(o.kind == Override::Kind::ClientIp);
  CHECK(o.regex == nullptr);
  REQUIRE(o.networks.size() == 2);
  CHECK(o.networks[0].prefix_len == 128);  // a bare IPv4 address: one host (96 + 32)
  CHECK(o.networks[1].prefix_len == 32);
}

// ---- Addresses ----------------------------------------------------------------------------------

TEST_CASE("parseHostPort accepts host:port and [v6]:port only") {
  std::string why;
  const std::optional<HostPort> v4 = parseHostPort("10.1.2.3:80", &why);
  REQUIRE(v4);
  CHECK(v4->host == "10.1.2.3");
  CHECK(v4->port == 80);
  CHECK(v4->text == "10.1.2.3:80");
  const std::optional<HostPort> v6 = parseHostPort("[fe80::1%eth0]:65535", &why);
  REQUIRE(v6);
  CHECK(v6->host == "fe80::1%eth0");
  CHECK(v6->port == 65535);
  CHECK(parseHostPort("svc-a.default.svc:8080", &why));

  for (const char* bad :
       {"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+80", "::1:80",
        "[::1]80", "[::1:80", "[nope]:80", ":80", "a b:80", "h:80x"}) {
    INFO(bad);
    CHECK_FALSE(parseHostPort(bad, &why));
  }
  parseHostPort("::1:80", &why);
  CHECK(why.find("brackets") != std::string::npos);
}

TEST_CASE("a name resolving to several addresses keeps them all, with the text as written") {
  REQUIRE_LOADS(result, std::string(kRoute) + R"(
[upstreams.m]
servers = ["multi.test:7000"]
)");
  const Pool& pool = result.snapshot->pools.at("m");
  REQUIRE(pool.servers.size() == 2);
  CHECK(pool.servers[0].text == "multi.test:7000");
  CHECK(pool.servers[1].text == "multi.test:7000");
  CHECK(std::memcmp(&pool.servers[0].addr, &pool.servers[1].addr, pool.servers[0].len) != 0);
}

TEST_CASE("systemResolver resolves numeric IPv4 and IPv6 addresses without DNS") {
  std::string why;
  std::vector<SocketAddress> out;
  CHECK_FALSE(systemResolver()(*parseHostPort("127.0.0.1:9", &why), out));
  CHECK_FALSE(systemResolver()(*parseHostPort("[::1]:9", &why), out));
  REQUIRE(out.size() == 2);
  CHECK(out[0].addr.ss_family == AF_INET);
  CHECK(out[0].len == sizeof(sockaddr_in));
  CHECK(out[1].addr.ss_family == AF_INET6);
  CHECK(out[1].text == "[::1]:9");
}

// ---- CIDR ---------------------------------------------------------------------------------------

TEST_CASE("parseCidr: IPv4 is stored IPv4-mapped, host bits are cleared") {
  std::string why;
  const std::optional<Cidr> v4 = parseCidr("10.1.2.3/8", &why);
  REQUIRE(v4);
  CHECK(v4->prefix_len == 104);
  const std::array<uint8_t, 16> mapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0};
  CHECK(v4->addr == mapped);
  CHECK(parseCidr("0.0.0.0/0", &why)->prefix_len == 96);

  const std::optional<Cidr> v6 = parseCidr("2001:db8:abcd::1/36", &why);
  REQUIRE(v6);
  CHECK(v6->prefix_len == 36);
  const std::array<uint8_t, 16> masked{0x20, 0x01, 0x0d, 0xb8, 0xa0, 0, 0, 0,
                                       0,    0,    0,    0,    0,    0, 0, 0};
  CHECK(v6->addr == masked);
  CHECK(parseCidr("::1/128", &why)->prefix_len == 128);
  CHECK(parseCidr("::/0", &why)->prefix_len == 0);

  CHECK_FALSE(parseCidr("10.0.0.0/33", &why));
  CHECK(why == "invalid CIDR \"10.0.0.0/33\": prefix length must be 0..32");
  CHECK_FALSE(parseCidr("::/129", &why));
  CHECK(why.find("0..128") != std::string::npos);
  for (const char* bad : {"10.0.0/8", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/8", "host/8", ""}) {
    INFO(bad);
    CHECK_FALSE(parseCidr(bad, &why));
  }
}

// ---- Rejections: TOML, keys and types -----------------------------------------------------------

TEST_CASE("a TOML syntax error is reported with toml++'s position and description") {
  const LoadResult result = load("[server]\nworkers = = 2\n");
  CHECK_FALSE(result.ok());
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].file == "t.toml");
  CHECK(result.errors[0].line == 2);
  CHECK(result.errors[0].col == 11);
  CHECK(result.errors[0].key.empty());
  CHECK(result.errors[0].message.find("value") != std::string::npos);
}

TEST_CASE("TOML-level rejections: integer overflow and redefined keys") {
  const LoadResult overflow = load("[server]\nworkers = 99999999999999999999\n");
  REQUIRE(overflow.errors.size() == 1);
  CHECK(overflow.errors[0].toString().rfind("t.toml:2:", 0) == 0);
  const LoadResult twice = load("[server]\nworkers = 1\nworkers = 2\n");
  REQUIRE(twice.errors.size() == 1);
  CHECK(twice.errors[0].line == 3);
}

TEST_CASE("an unknown key is rejected at the key, with a hint for typos") {
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b" }
wieghts = { blue = 1 }
weights = { blue = 1 }
)",
                 "t.toml:4:1: routes[0].wieghts", "unknown key (did you mean \"weights\"?)");
  CHECK_REJECTED("[server]\nlisten_on = []\n" + std::string(kRoute), "t.toml:2:1: server.listen_on",
                 "unknown key");
  CHECK_REJECTED("colour = 1\n" + std::string(kRoute), "t.toml:1:1: colour", "unknown key");
  CHECK_REJECTED(std::string(kRoute) + "[upstreams.x]\nservers = [\"127.0.0.1:1\"]\nwieght = 1\n",
                 "t.toml:8:1: upstreams.x.wieght", "unknown key");
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b", purple = "c" }
weights = { blue = 1 }
)",
                 "t.toml:3:27: routes[0].upstreams.purple", "unknown key");
  CHECK_REJECTED("[server.timeouts]\nclient_header = 1\n" + std::string(kRoute),
                 "t.toml:2:1: server.timeouts.client_header", "did you mean \"client_header_ms\"");
}

TEST_CASE("keys that need quoting are printed quoted") {
  CHECK_REJECTED(std::string(kRoute) + "[upstreams.\"a.b\"]\nservers = []\n",
                 "t.toml:7:11: upstreams.\"a.b\".servers", "at least one server");
}

TEST_CASE("wrong types are rejected at the value") {
  CHECK_REJECTED("[server]\nworkers = \"4\"\n" + std::string(kRoute), "t.toml:2:11: server.workers",
                 "expected an integer, got a string");
  CHECK_REJECTED("[server]\nwatch_config = \"yes\"\n" + std::string(kRoute),
                 "t.toml:2:16: server.watch_config", "expected true or false");
  CHECK_REJECTED("[server]\nlisten = \"127.0.0.1:80\"\n" + std::string(kRoute),
                 "t.toml:2:10: server.listen", "expected an array of strings");
  CHECK_REJECTED("[server]\nlisten = [\"127.0.0.1:80\", 81]\n" + std::string(kRoute),
                 "t.toml:2:27: server.listen[1]", "expected a string, got an integer");
  CHECK_REJECTED("server = 1\n" + std::string(kRoute), "t.toml:1:10: server", "expected a table");
  CHECK_REJECTED("[routes]\nname = \"r\"\n", "t.toml:1:1: routes",
                 "expected an array of tables ([[routes]])");
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b" }
weights = { blue = "1" }
)",
                 "t.toml:4:20: routes[0].weights.blue", "expected a number, got a string");
}

TEST_CASE("negative and too large numbers are rejected for unsigned values") {
  CHECK_REJECTED("[server]\nworkers = -1\n" + std::string(kRoute), "t.toml:2:11: server.workers",
                 "must be >= 0");
  CHECK_REJECTED("[server.limits]\nmax_connections = 4294967296\n" + std::string(kRoute),
                 "t.toml:2:19: server.limits.max_connections", "must be <= 4294967295");
  CHECK_REJECTED("[server.limits]\nmax_body_bytes = -5\n" + std::string(kRoute),
                 "t.toml:2:18: server.limits.max_body_bytes", "must be >= 0");
}

TEST_CASE("zero is rejected where it has no sensible meaning") {
  CHECK_REJECTED("[server.timeouts]\nupstream_connect_ms = 0\n" + std::string(kRoute),
                 "t.toml:2:23: server.timeouts.upstream_connect_ms", "must be > 0");
  CHECK_REJECTED("[server.limits]\nmax_header_bytes = 0\n" + std::string(kRoute),
                 "t.toml:2:20: server.limits.max_header_bytes", "must be > 0");
}

// ---- Rejections: server -------------------------------------------------------------------------

TEST_CASE("[server.http2] values out of range") {
  CHECK_REJECTED("[server.http2]\nmax_concurrent_streams = 0\n" + std::string(kRoute),
                 "t.toml:2:26: server.http2.max_concurrent_streams", "must be > 0");
  CHECK_REJECTED("[server.http2]\ninitial_window_bytes = 0\n" + std::string(kRoute),
                 "t.toml:2:24: server.http2.initial_window_bytes",
                 "must be between 1 and 2147483647");
  CHECK_REJECTED("[server.http2]\ninitial_window_bytes = 2147483648\n" + std::string(kRoute),
                 "t.toml:2:24: server.http2.initial_window_bytes",
                 "must be between 1 and 2147483647");
  CHECK_REJECTED("[server.http2]\nmax_header_list_bytes = 1023\n" + std::string(kRoute),
                 "t.toml:2:25: server.http2.max_header_list_bytes", "must be >= 1024");
  CHECK_REJECTED("[server.http2]\nmax_streams = 1\n" + std::string(kRoute),
                 "t.toml:2:1: server.http2.max_streams", "unknown key");
  CHECK_REJECTED("[server]\nhttp2_cleartext = 1\n" + std::string(kRoute),
                 "t.toml:2:19: server.http2_cleartext", "expected true or false");
}

TEST_CASE("a listen address that does not parse") {
  CHECK_REJECTED("[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1\"]\n" + std::string(kRoute),
                 "t.toml:2:29: server.listen[1]",
                 "invalid address \"127.0.0.1\": must be host:port");
  CHECK_REJECTED("[server]\nlisten = [\"127.0.0.1:0\"]\n" + std::string(kRoute),
                 "t.toml:2:11: server.listen[0]", "port must be 1..65535");
  CHECK_REJECTED("[server]\nlisten = [\"::1:8080\"]\n" + std::string(kRoute),
                 "t.toml:2:11: server.listen[0]", "must be in brackets");
  CHECK_REJECTED("[server]\nlisten = [\"[::1]8080\"]\n" + std::string(kRoute),
                 "t.toml:2:11: server.listen[0]", "must be [v6]:port");
}

TEST_CASE("an empty listen list needs a TLS listener") {
  CHECK_REJECTED("[server]\nlisten = []\n" + std::string(kRoute), "t.toml:2:10: server.listen",
                 "must not be empty");
}

TEST_CASE("an admin address that does not parse") {
  CHECK_REJECTED("[server]\nadmin = \"localhost\"\n" + std::string(kRoute),
                 "t.toml:2:9: server.admin", "must be host:port");
}

TEST_CASE("an address that does not resolve") {
  CHECK_REJECTED("[server]\nadmin = \"nowhere.invalid:9901\"\n" + std::string(kRoute),
                 "t.toml:2:9: server.admin", "does not resolve: Name or service not known");
  CHECK_REJECTED(std::string(kRoute) + "[upstreams.x]\nservers = [\"nowhere.invalid:80\"]\n",
                 "t.toml:7:12: upstreams.x.servers[0]", "does not resolve");
}

TEST_CASE("variant_header must be a header token or empty") {
  CHECK_REJECTED("[server]\nvariant_header = \"X Variant\"\n" + std::string(kRoute),
                 "t.toml:2:18: server.variant_header", "valid header name");
  REQUIRE_LOADS(result, "[server]\nvariant_header = \"\"\n" + std::string(kRoute));
  CHECK(result.snapshot->server.variant_header.empty());
}

// ---- Rejections: TLS listeners ------------------------------------------------------------------

TEST_CASE("unreadable TLS files") {
  CHECK_REJECTED(std::string(kRoute) + R"([[listener]]
address = "127.0.0.1:8443"
tls = { cert = "/nonexistent/site.pem", key = "@READABLE@" }
)",
                 "t.toml:8:16: listener[0].tls.cert",
                 "cannot read \"/nonexistent/site.pem\": No such file or directory");
  CHECK_REJECTED(std::string(kRoute) + R"([[listener]]
address = "127.0.0.1:8443"
tls = { cert = "@READABLE@", key = "@READABLE@" }
[[listener.sni]]
names = ["a.example"]
cert = "@READABLE@"
key = "/nonexistent/a.key"
)",
                 "t.toml:12:7: listener[0].sni[0].key", "cannot read");
  CHECK_REJECTED(std::string(kRoute) + R"([upstreams.x]
servers = ["127.0.0.1:443"]
tls = true
ca_file = "/nonexistent/ca.pem"
)",
                 "t.toml:9:11: upstreams.x.ca_file", "cannot read");
  CHECK_REJECTED(std::string(kRoute) + R"([upstreams.x]
servers = ["127.0.0.1:443"]
ca_file = "@ROOT@"
)",
                 "t.toml:8:11: upstreams.x.ca_file", "is a directory");
}

TEST_CASE("relative TLS paths are relative to the config file's directory") {
  CHECK(resolveFilePath("/etc/sy/sy.toml", "certs/a.pem") == "/etc/sy/certs/a.pem");
  CHECK(resolveFilePath("/etc/sy/sy.toml", "/abs/a.pem") == "/abs/a.pem");
  CHECK(resolveFilePath("sy.toml", "a.pem") == "a.pem");
  CHECK(resolveFilePath("conf/sy.toml", "") == "");
  const std::string listener = R"(
[[listener]]
address = "127.0.0.1:8443"
tls = { cert = "tests/unit/config/testdata/test-cert.pem", key = "tests/unit/config/testdata/test-cert.pem" }
)";
  const std::string text = std::string(kRoute) + std::string(kPools) + listener;
  const LoadResult result =
      loadSnapshotFromString(text, kSourceRoot + "/virtual.toml", fakeResolve);
  INFO(formatErrors(result.errors));
  REQUIRE(result.ok());
  CHECK(result.snapshot->listeners.at(0).default_cert.cert_file == kReadableFile);
}

TEST_CASE("SNI certificates need names") {
  CHECK_REJECTED(std::string(kRoute) + R"([[listener]]
address = "127.0.0.1:8443"
tls = { cert = "@READABLE@", key = "@READABLE@" }
[[listener.sni]]
names = []
cert = "@READABLE@"
key = "@READABLE@"
)",
                 "t.toml:10:9: listener[0].sni[0].names", "at least one name");
}

TEST_CASE("a listener needs a parsable address") {
  CHECK_REJECTED(std::string(kRoute) + R"([[listener]]
address = "127.0.0.1:http"
tls = { cert = "@READABLE@", key = "@READABLE@" }
)",
                 "t.toml:7:11: listener[0].address", "port must be 1..65535");
  CHECK_REJECTED(std::string(kRoute) + "[[listener]]\nproxy_protocol = true\n",
                 "t.toml:6:1: listener[0].address", "is required");
  CHECK_REJECTED(std::string(kRoute) + R"([[listener]]
address = "127.0.0.1:8443"
tls = { cert = "@READABLE@" }
)",
                 "t.toml:8:7: listener[0].tls.key", "is required");
}

// ---- The client's address (SPEC §13): trusted_proxies, proxy_protocol
// ----------------------------

TEST_CASE("trusted_proxies and a plain [[listener]] with proxy_protocol") {
  REQUIRE_LOADS(result, R"([server]
listen = ["127.0.0.1:8080"]
trusted_proxies = ["10.0.0.0/8", "::1", "192.168.1.7"]
[[listener]]
address = "127.0.0.1:8081"
proxy_protocol = true
)" + std::string(kRoute));
  const Snapshot& s = *result.snapshot;
  REQUIRE(s.server.trusted_proxies.size() == 3);
  CHECK(s.server.trusted_proxies[0].prefix_len == 96 + 8);
  CHECK(s.server.trusted_proxies[1].prefix_len == 128);
  CHECK(s.server.trusted_proxies[2].prefix_len == 128);
  REQUIRE(s.listeners.size() == 1);
  CHECK(s.listeners[0].address.text == "127.0.0.1:8081");
  CHECK(s.listeners[0].proxy_protocol);
  CHECK(s.listeners[0].tls == nullptr);  // plain HTTP
}

TEST_CASE("trusted_proxies: a bad CIDR or a wrong type is rejected with its position") {
  CHECK_REJECTED("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n" + std::string(kRoute),
                 "t.toml:2:20: server.trusted_proxies[0]",
                 "invalid CIDR \"10.0.0.0/33\": prefix length must be 0..32");
  CHECK_REJECTED(
      "[server]\ntrusted_proxies = [\"10.0.0.1\", \"proxy.example\"]\n" + std::string(kRoute),
      "t.toml:2:32: server.trusted_proxies[1]", "not an IPv4 or IPv6 address");
  CHECK_REJECTED("[server]\ntrusted_proxies = \"10.0.0.0/8\"\n" + std::string(kRoute),
                 "t.toml:2:19: server.trusted_proxies", "expected an array");
  CHECK_REJECTED("[server]\ntrusted_proxies = [8]\n" + std::string(kRoute),
                 "t.toml:2:20: server.trusted_proxies[0]", "expected a string");
  CHECK_REJECTED(std::string(kRoute) + "[[listener]]\naddress = \"127.0.0.1:8081\"\n" +
                     "proxy_protocol = \"yes\"\n",
                 "t.toml:8:18: listener[0].proxy_protocol", "expected true or false");
}

TEST_CASE("a plain [[listener]] cannot have SNI certificates") {
  CHECK_REJECTED(std::string(kRoute) + R"([[listener]]
address = "127.0.0.1:8443"
[[listener.sni]]
names = ["a.example"]
cert = "@READABLE@"
key = "@READABLE@"
)",
                 "t.toml:8:1: listener[0].sni[0]", "needs listener.tls");
}

TEST_CASE("the default server.listen gives way to a [[listener]] on its port") {
  SUBCASE("SPEC §13's example: 0.0.0.0:8080 with proxy_protocol") {
    REQUIRE_LOADS(result, std::string(kRoute) + R"([[listener]]
address = "0.0.0.0:8080"
proxy_protocol = true
)");
    CHECK(result.snapshot->server.listen.empty());
    REQUIRE(result.snapshot->listeners.size() == 1);
  }
  SUBCASE("a [[listener]] on another port leaves the default") {
    REQUIRE_LOADS(result, std::string(kRoute) + "[[listener]]\naddress = \"127.0.0.1:8081\"\n");
    REQUIRE(result.snapshot->server.listen.size() == 1);
    CHECK(result.snapshot->server.listen[0].text == "127.0.0.1:8080");
  }
}

TEST_CASE("an explicit listen address on a [[listener]]'s port is an error") {
  CHECK_REJECTED("[server]\nlisten = [\"127.0.0.1:8080\"]\n" + std::string(kRoute) +
                     "[[listener]]\naddress = \"0.0.0.0:8080\"\n",
                 "t.toml:9:11: listener[0].address",
                 "listens on the same port as \"127.0.0.1:8080\" (line 2)");
  CHECK_REJECTED(std::string(kRoute) + "[[listener]]\naddress = \"[::1]:8443\"\n" +
                     "[[listener]]\naddress = \"[0:0::1]:8443\"\n",
                 "t.toml:9:11: listener[1].address", "same port");
  // server.listen among itself is not checked (a dual-stack pair), nor different hosts.
  REQUIRE_LOADS(a, "[server]\nlisten = [\"0.0.0.0:8080\", \"[::]:8080\"]\n" + std::string(kRoute));
  REQUIRE_LOADS(b, "[server]\nlisten = [\"127.0.0.1:8080\"]\n" + std::string(kRoute) +
                       "[[listener]]\naddress = \"127.0.0.2:8080\"\n");
}

// ---- Rejections: pools --------------------------------------------------------------------------

TEST_CASE("a pool with no servers") {
  CHECK_REJECTED(std::string(kRoute) + "[upstreams.x]\nservers = []\n",
                 "t.toml:7:11: upstreams.x.servers", "must list at least one server");
  CHECK_REJECTED(std::string(kRoute) + "[upstreams.x]\nbalance = \"least_conn\"\n",
                 "t.toml:6:1: upstreams.x.servers", "is required");
}

TEST_CASE("an unknown balance") {
  CHECK_REJECTED(
      std::string(kRoute) + "[upstreams.x]\nservers = [\"127.0.0.1:1\"]\nbalance = \"random\"\n",
      "t.toml:8:11: upstreams.x.balance", "\"round_robin\" or \"least_conn\"");
}

TEST_CASE("health check values") {
  CHECK_REJECTED(
      std::string(kRoute) +
          "[upstreams.x]\nservers = [\"127.0.0.1:1\"]\nhealth = { path = \"healthz\" }\n",
      "t.toml:8:19: upstreams.x.health.path", "must start with \"/\"");
  CHECK_REJECTED(std::string(kRoute) +
                     "[upstreams.x]\nservers = [\"127.0.0.1:1\"]\nhealth = { interval_ms = 0 }\n",
                 "t.toml:8:26: upstreams.x.health.interval_ms", "must be > 0");
}

// ---- Rejections: routes -------------------------------------------------------------------------

TEST_CASE("a route without a name") {
  CHECK_REJECTED("[[routes]]\nupstreams = { blue = \"b\" }\nweights = { blue = 1 }\n",
                 "t.toml:1:1: routes[0].name", "is required");
  CHECK_REJECTED("[[routes]]\nname = \"\"\nupstreams = { blue = \"b\" }\nweights = { blue = 1 }\n",
                 "t.toml:2:8: routes[0].name", "must not be empty");
}

TEST_CASE("duplicate route names") {
  CHECK_REJECTED(std::string(kRoute) + std::string(kRoute), "t.toml:8:8: routes[1].name",
                 "duplicate route name \"r\" (first defined at line 3)");
}

TEST_CASE("a weight below zero") {
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b", canary = "c" }
[routes.weights]
blue = 1
canary = -5
)",
                 "t.toml:6:10: routes[0].weights.canary", "must be >= 0");
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b" }
weights = { blue = nan }
)",
                 "t.toml:4:20: routes[0].weights.blue", "must be a finite number");
}

TEST_CASE("all weights zero, or none") {
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b", green = "g" }
[routes.weights]
blue = 0
green = 0.0
)",
                 "t.toml:4:1: routes[0].weights",
                 "at least one of blue, green, canary must be > 0");
  CHECK_REJECTED("[[routes]]\nname = \"r\"\nupstreams = { blue = \"b\" }\n",
                 "t.toml:1:1: routes[0].weights", "must be > 0");
}

TEST_CASE("a variant with weight > 0 and no pool") {
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b" }
weights = { blue = 90, canary = 10 }
)",
                 "t.toml:4:33: routes[0].weights.canary", "routes[0].upstreams.canary is not set");
}

TEST_CASE("a pool name that is not defined") {
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b", green = "nope" }
weights = { blue = 1 }
)",
                 "t.toml:3:35: routes[0].upstreams.green", "no pool named \"nope\" in [upstreams]");
}

TEST_CASE("an invalid RE2 pattern carries RE2's own message") {
  CHECK_REJECTED(R"([[routes]]
name = "r"
match = { path = "^/(api" }
upstreams = { blue = "b" }
weights = { blue = 1 }
)",
                 "t.toml:3:18: routes[0].match.path", "invalid RE2 pattern: missing ): ^/(api");
  CHECK_REJECTED(std::string(kRoute) + R"([[routes.override]]
header = "X-Canary"
regex = "a**"
variant = "blue"
)",
                 "t.toml:8:9: routes[0].override[0].regex", "invalid RE2 pattern: bad repetition");
}

TEST_CASE("an invalid CIDR in client_ip") {
  CHECK_REJECTED(std::string(kRoute) + R"([[routes.override]]
client_ip = ["10.0.0.0/8", "10.0.0.0/33"]
variant = "blue"
)",
                 "t.toml:7:28: routes[0].override[0].client_ip[1]",
                 "invalid CIDR \"10.0.0.0/33\": prefix length must be 0..32");
  CHECK_REJECTED(std::string(kRoute) + R"([[routes.override]]
client_ip = ["fe80::/200"]
variant = "blue"
)",
                 "t.toml:7:14: routes[0].override[0].client_ip[0]", "0..128");
  CHECK_REJECTED(std::string(kRoute) + R"([[routes.override]]
client_ip = ["office"]
variant = "blue"
)",
                 "t.toml:7:14: routes[0].override[0].client_ip[0]", "not an IPv4 or IPv6 address");
}

TEST_CASE("shadow settings without a shadow pool") {
  CHECK_REJECTED(R"([[routes]]
name = "r"
upstreams = { blue = "b" }
weights = { blue = 1 }
[routes.shadow]
percent = 5
)",
                 "t.toml:5:1: routes[0].shadow", "requires routes[0].upstreams.shadow");
}

TEST_CASE("shadow percent outside 0..100") {
  const std::string route = R"([[routes]]
name = "r"
upstreams = { blue = "b", shadow = "s" }
weights = { blue = 1 }
)";
  CHECK_REJECTED(route + "shadow = { percent = 100.5 }\n", "t.toml:5:22: routes[0].shadow.percent",
                 "must be between 0 and 100");
  CHECK_REJECTED(route + "shadow = { percent = -1 }\n", "t.toml:5:22: routes[0].shadow.percent",
                 "must be between 0 and 100");
}

TEST_CASE("override, failover and fallback naming an unknown variant") {
  CHECK_REJECTED(std::string(kRoute) +
                     "[[routes.override]]\nheader = \"X-A\"\nregex = \"1\"\n"
                     "variant = \"purple\"\n",
                 "t.toml:9:11: routes[0].override[0].variant", "\"blue\", \"green\" or \"canary\"");
  CHECK_REJECTED(R"([[routes]]
name = "r"
failover = "shadow"
upstreams = { blue = "b", shadow = "s" }
weights = { blue = 1 }
)",
                 "t.toml:3:12: routes[0].failover", "\"blue\", \"green\" or \"canary\"");
  CHECK_REJECTED(R"([[routes]]
name = "r"
fallback = "sticky"
upstreams = { blue = "b" }
weights = { blue = 1 }
)",
                 "t.toml:3:12: routes[0].fallback", "\"random\", \"client_ip\", \"blue\"");
}

TEST_CASE("override, failover and fallback variants need a pool") {
  CHECK_REJECTED(std::string(kRoute) +
                     "[[routes.override]]\nheader = \"X-A\"\nregex = \"1\"\n"
                     "variant = \"canary\"\n",
                 "t.toml:9:11: routes[0].override[0].variant",
                 "routes[0].upstreams.canary is not set");
  CHECK_REJECTED(R"([[routes]]
name = "r"
failover = "green"
upstreams = { blue = "b" }
weights = { blue = 1 }
)",
                 "t.toml:3:12: routes[0].failover", "routes[0].upstreams.green is not set");
  CHECK_REJECTED(R"([[routes]]
name = "r"
fallback = "canary"
upstreams = { blue = "b" }
weights = { blue = 1 }
)",
                 "t.toml:3:12: routes[0].fallback", "routes[0].upstreams.canary is not set");
}

TEST_CASE("override sources: exactly one, regex only with header or cookie") {
  CHECK_REJECTED(std::string(kRoute) + "[[routes.override]]\nvariant = \"blue\"\n",
                 "t.toml:6:1: routes[0].override[0]",
                 "needs one of header, cookie, client_ip or segment");
  CHECK_REJECTED(std::string(kRoute) +
                     "[[routes.override]]\nheader = \"X-A\"\ncookie = \"a\"\n"
                     "regex = \"1\"\nvariant = \"blue\"\n",
                 "t.toml:6:1: routes[0].override[0]",
                 "only one of header, cookie, client_ip or segment");
  CHECK_REJECTED(std::string(kRoute) + "[[routes.override]]\ncookie = \"a\"\nvariant = \"blue\"\n",
                 "t.toml:6:1: routes[0].override[0].regex", "is required with header or cookie");
  CHECK_REJECTED(std::string(kRoute) +
                     "[[routes.override]]\nclient_ip = [\"::1\"]\nregex = \"1\"\n"
                     "variant = \"blue\"\n",
                 "t.toml:8:9: routes[0].override[0].regex", "not allowed with client_ip");
  CHECK_REJECTED(std::string(kRoute) + "[[routes.override]]\nheader = \"X-A\"\nregex = \"1\"\n",
                 "t.toml:6:1: routes[0].override[0].variant", "is required");
}

TEST_CASE("key sources need a header: or cookie: prefix and a name") {
  const std::string tail = "upstreams = { blue = \"b\" }\nweights = { blue = 1 }\n";
  CHECK_REJECTED("[[routes]]\nname = \"r\"\nkey = [\"header:X-A\", \"X-User\"]\n" + tail,
                 "t.toml:3:22: routes[0].key[1]", "must be \"header:NAME\" or \"cookie:NAME\"");
  CHECK_REJECTED("[[routes]]\nname = \"r\"\nkey = [\"cookie:\"]\n" + tail,
                 "t.toml:3:8: routes[0].key[0]", "missing the name");
  CHECK_REJECTED("[[routes]]\nname = \"r\"\nkey = [\"header:X User\"]\n" + tail,
                 "t.toml:3:8: routes[0].key[0]", "RFC 9110 token");
}

TEST_CASE("match.host must be a host name or a leading wildcard") {
  const std::string tail = "upstreams = { blue = \"b\" }\nweights = { blue = 1 }\n";
  CHECK_REJECTED("[[routes]]\nname = \"r\"\nmatch = { host = \"shop.example.com:8080\" }\n" + tail,
                 "t.toml:3:18: routes[0].match.host", "must not include a port");
  CHECK_REJECTED("[[routes]]\nname = \"r\"\nmatch = { host = \"shop.*.com\" }\n" + tail,
                 "t.toml:3:18: routes[0].match.host", "leading \"*.\"");
}

// ---- Rollouts (SPEC §11) ------------------------------------------------------------------------

TEST_CASE("parseDuration: a number, decimals allowed, and ms, s, m or h") {
  std::string why;
  CHECK(parseDuration("500ms", &why) == 500);
  CHECK(parseDuration("30s", &why) == 30000);
  CHECK(parseDuration("10m", &why) == 600000);
  CHECK(parseDuration("2h", &why) == 7200000);
  CHECK(parseDuration("0s", &why) == 0);
  CHECK(parseDuration("1.5s", &why) == 1500);
  CHECK(parseDuration("0.25m", &why) == 15000);
  CHECK(parseDuration("1.000ms", &why) == 1);
  CHECK(parseDuration("0.001s", &why) == 1);
  for (const char* bad : {"", "30", "s", "30 s", "30S", "30sec", "1d", "-5s", "+5s", ".5s", "1.s",
                          "1.2.3s", "1h30m", " 30s", "30s "}) {
    INFO(bad);
    CHECK_FALSE(parseDuration(bad, &why));
    CHECK(why == "expected a duration like \"30s\", \"10m\", \"500ms\" or \"2h\", got \"" +
                     std::string(bad) + "\"");
  }
  CHECK_FALSE(parseDuration("1.5ms", &why));
  CHECK(why == "must be a whole number of milliseconds");
  CHECK_FALSE(parseDuration("0.0001s", &why));
  CHECK(why == "must be a whole number of milliseconds");
  CHECK_FALSE(parseDuration("99999999999999999999ms", &why));
  CHECK(why == "duration is too long");
  CHECK_FALSE(parseDuration("9999999999999h", &why));
  CHECK(why == "duration is too long");
}

TEST_CASE("parseRfc3339: a date-time with an offset, as unix milliseconds") {
  std::string why;
  CHECK(parseRfc3339("2025-03-01T09:00:00.250Z", &why) == 1740819600250);
  CHECK(parseRfc3339("2025-03-01T10:00:00.250+01:00", &why) == 1740819600250);
  CHECK(parseRfc3339("2025-03-01t04:30:00.2509-04:30", &why) == 1740819600250);
  CHECK(parseRfc3339("2025-03-01 09:00:00.25z", &why) == 1740819600250);
  CHECK(parseRfc3339("1969-12-31T23:59:59Z", &why) == -1000);
  CHECK(parseRfc3339("2024-02-29T23:00:00Z", &why) == 1709247600000);
  CHECK_FALSE(parseRfc3339("2025-03-01T09:00:00", &why));
  CHECK(why.find("has no UTC offset") != std::string::npos);
  CHECK_FALSE(parseRfc3339("2025-02-29T09:00:00Z", &why));
  CHECK(why == "\"2025-02-29T09:00:00Z\" is not a valid date and time");
  for (const char* bad : {"", "on_load", "2025-03-01", "2025-03-01T09:00Z", "2025-3-01T09:00:00Z",
                          "2025-03-01T09:00:00.Z", "2025-03-01T09:00:00+0100",
                          "2025-03-01T09:00:00Z ", "2025-03-01T25:00:00Z"}) {
    INFO(bad);
    CHECK_FALSE(parseRfc3339(bad, &why));
  }
}

TEST_CASE("parseHttpUrl: http://host[:port]/path only") {
  std::string why;
  std::optional<HttpUrl> url = parseHttpUrl("http://hooks.internal:8080/switchyard?x=1", &why);
  REQUIRE(url);
  CHECK(url->address.host == "hooks.internal");
  CHECK(url->address.port == 8080);
  CHECK(url->address.text == "hooks.internal:8080");
  CHECK(url->target == "/switchyard?x=1");
  url = parseHttpUrl("HTTP://127.0.0.1", &why);
  REQUIRE(url);
  CHECK(url->address.port == 80);
  CHECK(url->target == "/");
  url = parseHttpUrl("http://[::1]?a", &why);
  REQUIRE(url);
  CHECK(url->address.host == "::1");
  CHECK(url->address.port == 80);
  CHECK(url->target == "/?a");
  CHECK(parseHttpUrl("http://[::1]:81/", &why)->address.port == 81);

  CHECK_FALSE(parseHttpUrl("https://hooks.internal/", &why));
  CHECK(why.find("https is not supported") != std::string::npos);
  for (const char* bad :
       {"", "hooks.internal/x", "ftp://h/", "http://", "http:///x", "http://h:0/",
        "http://h:99999/", "http://u@h/", "http://h/a b", "http://h/#frag", "http://::1/"}) {
    INFO(bad);
    CHECK_FALSE(parseHttpUrl(bad, &why));
  }
}

TEST_CASE("fileNameError: ids and route names that become file names") {
  CHECK(fileNameError("checkout-2.14_b").empty());
  CHECK(fileNameError("").find("empty") != std::string::npos);
  CHECK(fileNameError(".hidden") == "must not start with \".\"");
  CHECK(fileNameError("..") == "must not start with \".\"");
  CHECK(fileNameError("a/b").find("may only contain") != std::string::npos);
  CHECK(fileNameError("a b").find("may only contain") != std::string::npos);
  CHECK(fileNameError(std::string(128, 'a')).empty());
  CHECK(fileNameError(std::string(129, 'a')).find("at most 128") != std::string::npos);
}

TEST_CASE("a full rollout compiles to every configured value") {
  REQUIRE_LOADS(result, R"(
[server]
state_dir = "journals"
[[routes]]
name = "shop.v2_x-1"
upstreams = { blue = "b", green = "g", canary = "c", shadow = "s" }
weights = { blue = 90, canary = 10 }
shadow = { percent = 5, compare = true }
[routes.rollout]
id = "checkout-2.14"
variant = "green"
baseline = "canary"
start = "2025-03-01T10:00:00.250+01:00"
on_failure = "pause"
notify_url = "http://127.0.0.1:9000/hooks/rollout?x=1"
stages = [
  { percent = 0.5, hold = "500ms" },
  { percent = 5, hold = "1.5s" },
  { percent = 25, hold = "10m", gate = "manual" },
  { percent = 100, hold = "2h" },
]
[routes.rollout.analysis]
interval = "10s"
warmup = "0s"
confidence = 0.95
min_requests = 0
error_ratio = { relative = 2, absolute = 0.01 }
latency = { quantile = 0.99, relative = 1.2 }
shadow_mismatch = 0
critical_error_ratio = 1
)");
  const Snapshot& s = *result.snapshot;
  CHECK(s.server.state_dir == "journals");
  const Route& route = s.routes.at(0);
  // The variant's configured weight (absent = 0 here) stays as configured in the snapshot.
  CHECK(route.weights == std::array<double, kWeightedVariants>{90, 0, 10});
  REQUIRE(route.rollout);
  const Rollout& rollout = *route.rollout;
  CHECK(rollout.id == "checkout-2.14");
  CHECK(rollout.variant == Variant::Green);
  CHECK(rollout.baseline == Variant::Canary);
  CHECK(rollout.start_unix_ms == 1740819600250);
  CHECK(rollout.on_failure == RolloutFailure::Pause);
  CHECK(rollout.notify_url == "http://127.0.0.1:9000/hooks/rollout?x=1");
  REQUIRE(rollout.stages.size() == 4);
  CHECK(rollout.stages[0].percent == 0.5);
  CHECK(rollout.stages[0].hold_ms == 500);
  CHECK_FALSE(rollout.stages[0].manual_gate);
  CHECK(rollout.stages[1].percent == 5);
  CHECK(rollout.stages[1].hold_ms == 1500);
  CHECK(rollout.stages[2].percent == 25);
  CHECK(rollout.stages[2].hold_ms == 600000);
  CHECK(rollout.stages[2].manual_gate);
  CHECK(rollout.stages[3].percent == 100);
  CHECK(rollout.stages[3].hold_ms == 7200000);
  CHECK_FALSE(rollout.stages[3].manual_gate);
  const RolloutAnalysis& analysis = rollout.analysis;
  CHECK(analysis.interval_ms == 10000);
  CHECK(analysis.warmup_ms == 0);
  CHECK(analysis.confidence == 0.95);
  CHECK(analysis.min_requests == 0);
  CHECK(analysis.error_relative == 2);
  CHECK(analysis.error_absolute == 0.01);
  CHECK(analysis.latency_quantile == 0.99);
  CHECK(analysis.latency_relative == 1.2);
  CHECK(analysis.shadow_mismatch == 0.0);
  CHECK(analysis.critical_error_ratio == 1);
}

TEST_CASE("a minimal rollout takes the defaults") {
  REQUIRE_LOADS(result, R"(
[server]
state_dir = "/var/lib/switchyard"
[[routes]]
name = "r"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1, canary = 70 }
[routes.rollout]
id = "1"
stages = [{ percent = 100 }]
[[routes]]
name = "plain"
upstreams = { blue = "b" }
weights = { blue = 1 }
)");
  const Snapshot& s = *result.snapshot;
  CHECK(s.server.state_dir == "/var/lib/switchyard");
  CHECK_FALSE(s.routes.at(1).rollout);
  REQUIRE(s.routes.at(0).rollout);
  const Rollout& rollout = *s.routes[0].rollout;
  CHECK(rollout.id == "1");
  CHECK(rollout.variant == Variant::Canary);
  CHECK(rollout.baseline == Variant::Blue);
  CHECK_FALSE(rollout.start_unix_ms);  // "on_load"
  CHECK(rollout.on_failure == RolloutFailure::Rollback);
  CHECK(rollout.notify_url.empty());
  REQUIRE(rollout.stages.size() == 1);
  CHECK(rollout.stages[0].percent == 100);
  CHECK(rollout.stages[0].hold_ms == 0);
  CHECK_FALSE(rollout.stages[0].manual_gate);
  const RolloutAnalysis& analysis = rollout.analysis;
  CHECK(analysis.interval_ms == 30000);
  CHECK(analysis.warmup_ms == 60000);
  CHECK(analysis.confidence == 0.99);
  CHECK(analysis.min_requests == 500);
  CHECK(analysis.error_relative == 1.5);
  CHECK(analysis.error_absolute == 0.002);
  CHECK(analysis.latency_quantile == 0.95);
  CHECK(analysis.latency_relative == 1.5);
  CHECK_FALSE(analysis.shadow_mismatch);
  CHECK(analysis.critical_error_ratio == 0.5);
}

TEST_CASE("start may be \"on_load\" or a TOML offset date-time; partial analysis tables") {
  REQUIRE_LOADS(result, R"(
[server]
state_dir = "state"
[[routes]]
name = "a"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1 }
[routes.rollout]
id = "a1"
start = 1979-05-27T00:32:00.999999-07:00
stages = [{ percent = 10 }]
analysis = { warmup = "2m", error_ratio = { absolute = 0.05 } }
[[routes]]
name = "b"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1 }
[routes.rollout]
id = "b1"
start = "on_load"
stages = [{ percent = 10 }]
[routes.rollout.analysis.latency]
relative = 3
)");
  const Rollout& a = result.snapshot->routes.at(0).rollout.value();
  CHECK(a.start_unix_ms == 296638320999);
  CHECK(a.analysis.warmup_ms == 120000);
  CHECK(a.analysis.interval_ms == 30000);
  CHECK(a.analysis.error_absolute == 0.05);
  CHECK(a.analysis.error_relative == 1.5);
  const Rollout& b = result.snapshot->routes.at(1).rollout.value();
  CHECK_FALSE(b.start_unix_ms);
  CHECK(b.analysis.latency_relative == 3);
  CHECK(b.analysis.latency_quantile == 0.95);
}

TEST_CASE("state_dir is relative to the config file's directory") {
  const std::string text = R"(
[server]
state_dir = "state/sy"
[[routes]]
name = "r"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1 }
rollout = { id = "x", stages = [{ percent = 50 }] }
)" + std::string(kPools);
  const LoadResult result = loadSnapshotFromString(text, "/etc/switchyard/sy.toml", fakeResolve);
  INFO(formatErrors(result.errors));
  REQUIRE(result.ok());
  CHECK(result.snapshot->server.state_dir == "/etc/switchyard/state/sy");
  // Without a rollout, state_dir is optional (and kept when set).
  REQUIRE_LOADS(plain, kRoute);
  CHECK(plain.snapshot->server.state_dir.empty());
}

// A route with every variant and a shadow pool, and the head of its rollout: tests append the
// rollout's keys from line 8 on.
constexpr std::string_view kRolloutHead = R"([server]
state_dir = "state"
[[routes]]
name = "shop"
upstreams = { blue = "b", green = "g", canary = "c", shadow = "s" }
weights = { blue = 95, canary = 5 }
[routes.rollout]
)";

std::string rollout(std::string_view keys) { return std::string(kRolloutHead) + std::string(keys); }

// id and stages, valid; appended after the keys under test.
constexpr std::string_view kRolloutValid = "id = \"r1\"\nstages = [{ percent = 50 }]\n";

std::string rolloutWith(std::string_view keys) {
  return rollout(std::string(keys) + std::string(kRolloutValid));
}

TEST_CASE("a rollout needs server.state_dir") {
  CHECK_REJECTED(R"([[routes]]
name = "shop"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1 }
[routes.rollout]
id = "r1"
stages = [{ percent = 50 }]
)",
                 "t.toml:5:1: routes[0].rollout",
                 "server.state_dir is required when a route has a rollout");
  CHECK_REJECTED("[server]\nstate_dir = \"\"\n" + std::string(kRolloutHead).substr(29) +
                     std::string(kRolloutValid),
                 "t.toml:2:13: server.state_dir",
                 "must not be empty when a route has a rollout (routes[0].rollout)");
  CHECK_REJECTED("[server]\nstate_dir = 1\n" + std::string(kRolloutHead).substr(29) +
                     std::string(kRolloutValid),
                 "t.toml:2:13: server.state_dir", "expected a string, got an integer");
}

TEST_CASE("a rollout id is required and must be a file name") {
  CHECK_REJECTED(rollout("stages = [{ percent = 50 }]\n"), "t.toml:7:1: routes[0].rollout.id",
                 "is required");
  CHECK_REJECTED(rollout("id = \"\"\nstages = [{ percent = 50 }]\n"),
                 "t.toml:8:6: routes[0].rollout.id", "must not be empty");
  CHECK_REJECTED(rollout("id = \"../etc\"\nstages = [{ percent = 50 }]\n"),
                 "t.toml:8:6: routes[0].rollout.id",
                 "state_dir/rollouts/<route>/<id>.jsonl, so it may only contain letters, digits");
  CHECK_REJECTED(rollout("id = \".r1\"\nstages = [{ percent = 50 }]\n"),
                 "t.toml:8:6: routes[0].rollout.id", "must not start with \".\"");
  CHECK_REJECTED(rollout("id = 7\nstages = [{ percent = 50 }]\n"),
                 "t.toml:8:6: routes[0].rollout.id", "expected a string, got an integer");
}

TEST_CASE("the name of a route with a rollout must be a file name too") {
  std::string text = rolloutWith("");
  text.replace(text.find("name = \"shop\""), 13, "name = \"shop/eu\"");
  CHECK_REJECTED(text, "t.toml:4:8: routes[0].name",
                 "with a rollout, the route name names its journal directory "
                 "(state_dir/rollouts/<route>/), so it may only contain");
  // Without a rollout, any name is fine.
  REQUIRE_LOADS(result,
                "[[routes]]\nname = \"shop/eu\"\nupstreams = { blue = \"b\" }\n"
                "weights = { blue = 1 }\n");
}

TEST_CASE("a rollout's variant: canary or green, with a pool; its weight may be anything") {
  CHECK_REJECTED(rolloutWith("variant = \"blue\"\n"), "t.toml:8:11: routes[0].rollout.variant",
                 "must be \"canary\" or \"green\"");
  CHECK_REJECTED(rolloutWith("variant = \"shadow\"\n"), "t.toml:8:11: routes[0].rollout.variant",
                 "must be \"canary\" or \"green\"");
  CHECK_REJECTED(rolloutWith("variant = true\n"), "t.toml:8:11: routes[0].rollout.variant",
                 "expected a string, got a boolean");
  std::string no_green = rolloutWith("variant = \"green\"\n");
  no_green.replace(no_green.find("green = \"g\", "), 13, "");
  CHECK_REJECTED(no_green, "t.toml:8:11: routes[0].rollout.variant",
                 "needs a pool, but routes[0].upstreams.green is not set");
  CHECK_REJECTED(R"([server]
state_dir = "state"
[[routes]]
name = "shop"
upstreams = { blue = "b" }
weights = { blue = 1 }
rollout = { id = "r1", stages = [{ percent = 50 }] }
)",
                 "t.toml:7:11: routes[0].rollout.variant",
                 "defaults to \"canary\", which needs a pool, but routes[0].upstreams.canary is "
                 "not set");
  std::string heavy = rolloutWith("");
  heavy.replace(heavy.find("canary = 5"), 10, "canary = 500");
  REQUIRE_LOADS(result, heavy);
  CHECK(result.snapshot->routes[0].weights[static_cast<size_t>(Variant::Canary)] == 500);
}

TEST_CASE("a rollout's baseline: a pool, a weight > 0, not the variant") {
  CHECK_REJECTED(rolloutWith("baseline = \"shadow\"\n"), "t.toml:8:12: routes[0].rollout.baseline",
                 "\"blue\", \"green\" or \"canary\"");
  CHECK_REJECTED(rolloutWith("baseline = \"green\"\n"), "t.toml:8:12: routes[0].rollout.baseline",
                 "the baseline \"green\" has weight 0 in routes[0].weights");
  std::string explicit_zero = rolloutWith("baseline = \"green\"\n");
  explicit_zero.replace(explicit_zero.find("canary = 5"), 10, "canary = 5, green = 0");
  CHECK_REJECTED(explicit_zero, "t.toml:8:12: routes[0].rollout.baseline",
                 "has weight 0 in routes[0].weights");
  std::string zero_blue = rolloutWith("");
  zero_blue.replace(zero_blue.find("blue = 95"), 9, "blue = 0");
  CHECK_REJECTED(zero_blue, "t.toml:7:1: routes[0].rollout.baseline",
                 "the default baseline \"blue\" has weight 0 in routes[0].weights; a rollout "
                 "needs baseline traffic to compare with");
  CHECK_REJECTED(rolloutWith("baseline = \"canary\"\n"), "t.toml:8:12: routes[0].rollout.baseline",
                 "must differ from the rollout's variant (\"canary\")");
  std::string no_blue = rolloutWith("");
  no_blue.replace(no_blue.find("blue = \"b\", "), 12, "");
  no_blue.replace(no_blue.find("blue = 95, "), 11, "green = 1, ");
  CHECK_REJECTED(no_blue, "t.toml:7:1: routes[0].rollout.baseline",
                 "defaults to \"blue\", which needs a pool, but routes[0].upstreams.blue is not "
                 "set");
}

TEST_CASE("rollout stages: required, percent in (0, 100], strictly increasing") {
  CHECK_REJECTED(rollout("id = \"r1\"\n"), "t.toml:7:1: routes[0].rollout.stages", "is required");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = []\n"), "t.toml:9:10: routes[0].rollout.stages",
                 "must list at least one stage");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = \"1,5,100\"\n"),
                 "t.toml:9:10: routes[0].rollout.stages",
                 "expected an array of stages like [{ percent = 1, hold = \"10m\" }, ...], got a "
                 "string");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = 1 }, 5]\n"),
                 "t.toml:9:28: routes[0].rollout.stages[1]", "expected a table, got an integer");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ hold = \"1m\" }]\n"),
                 "t.toml:9:11: routes[0].rollout.stages[0].percent", "is required");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = 0 }]\n"),
                 "t.toml:9:23: routes[0].rollout.stages[0].percent", "must be > 0 and <= 100");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = 100.5 }]\n"),
                 "t.toml:9:23: routes[0].rollout.stages[0].percent", "must be > 0 and <= 100");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = -5 }]\n"),
                 "t.toml:9:23: routes[0].rollout.stages[0].percent", "must be > 0 and <= 100");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = \"5%\" }]\n"),
                 "t.toml:9:23: routes[0].rollout.stages[0].percent",
                 "expected a number, got a string");
  CHECK_REJECTED(rollout(R"(id = "r1"
stages = [
  { percent = 1 },
  { percent = 25 },
  { percent = 25 },
]
)"),
                 "t.toml:12:15: routes[0].rollout.stages[2].percent",
                 "stages must be strictly increasing in percent, but 25 follows 25");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = 5 }, { percent = 2.5 }]\n"),
                 "t.toml:9:40: routes[0].rollout.stages[1].percent",
                 "strictly increasing in percent, but 2.5 follows 5");
  // Also written as an array of tables.
  REQUIRE_LOADS(result, rollout("id = \"r1\"\n[[routes.rollout.stages]]\npercent = 5\n"
                                "[[routes.rollout.stages]]\npercent = 50\nhold = \"1h\"\n"));
  const Rollout& written = result.snapshot->routes[0].rollout.value();
  REQUIRE(written.stages.size() == 2);
  CHECK(written.stages[1].hold_ms == 3600000);
}

TEST_CASE("rollout stages: hold is a duration, gate is \"manual\" or absent") {
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = 5, hold = \"10 minutes\" }]\n"),
                 "t.toml:9:33: routes[0].rollout.stages[0].hold",
                 "expected a duration like \"30s\", \"10m\", \"500ms\" or \"2h\", got \"10 "
                 "minutes\"");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = 5, hold = 600 }]\n"),
                 "t.toml:9:33: routes[0].rollout.stages[0].hold",
                 "expected a duration like \"30s\", \"10m\", \"500ms\" or \"2h\", got an integer");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = 5, gate = \"auto\" }]\n"),
                 "t.toml:9:33: routes[0].rollout.stages[0].gate",
                 "must be \"manual\" (leave it out for no gate)");
  CHECK_REJECTED(rollout("id = \"r1\"\nstages = [{ percent = 5, hodl = \"1m\" }]\n"),
                 "t.toml:9:26: routes[0].rollout.stages[0].hodl",
                 "unknown key (did you mean \"hold\"?)");
}

TEST_CASE("rollout start, on_failure and notify_url") {
  CHECK_REJECTED(rolloutWith("start = \"tomorrow\"\n"), "t.toml:8:9: routes[0].rollout.start",
                 "must be \"on_load\" or an RFC 3339 time: \"tomorrow\" is not like "
                 "\"2025-03-01T09:00:00Z\"");
  CHECK_REJECTED(rolloutWith("start = \"2025-03-01T09:00:00\"\n"),
                 "t.toml:8:9: routes[0].rollout.start",
                 "\"2025-03-01T09:00:00\" has no UTC offset, so its moment would depend on the "
                 "host's time zone: add \"Z\"");
  CHECK_REJECTED(rolloutWith("start = 2025-03-01T09:00:00\n"),
                 "t.toml:8:9: routes[0].rollout.start",
                 "a local date-time has no UTC offset, so its moment would depend on the host's "
                 "time zone");
  CHECK_REJECTED(rolloutWith("start = 2025-03-01\n"), "t.toml:8:9: routes[0].rollout.start",
                 "a date alone is not a moment");
  CHECK_REJECTED(rolloutWith("start = 1740819600\n"), "t.toml:8:9: routes[0].rollout.start",
                 "expected \"on_load\" or an RFC 3339 time such as \"2025-03-01T09:00:00Z\", got "
                 "an integer");
  CHECK_REJECTED(rolloutWith("on_failure = \"retry\"\n"),
                 "t.toml:8:14: routes[0].rollout.on_failure", "must be \"rollback\" or \"pause\"");
  CHECK_REJECTED(rolloutWith("notify_url = \"https://hooks.example.com/sy\"\n"),
                 "t.toml:8:14: routes[0].rollout.notify_url", "https is not supported");
  CHECK_REJECTED(rolloutWith("notify_url = \"hooks.example.com/sy\"\n"),
                 "t.toml:8:14: routes[0].rollout.notify_url",
                 "must be \"http://host[:port]/path\"");
  CHECK_REJECTED(rolloutWith("notify_url = \"http://hooks:99999/sy\"\n"),
                 "t.toml:8:14: routes[0].rollout.notify_url", "port must be 1..65535");
  REQUIRE_LOADS(result, rolloutWith("notify_url = \"\"\n"));
  CHECK(result.snapshot->routes[0].rollout->notify_url.empty());
}

TEST_CASE("unknown keys in the rollout tables, with hints") {
  CHECK_REJECTED(rolloutWith("varaint = \"canary\"\n"), "t.toml:8:1: routes[0].rollout.varaint",
                 "unknown key (did you mean \"variant\"?)");
  CHECK_REJECTED(rolloutWith("source = \"prometheus\"\n"), "t.toml:8:1: routes[0].rollout.source",
                 "unknown key");
  CHECK_REJECTED(
      rollout(std::string(kRolloutValid) + "[routes.rollout.analysis]\nintreval = \"1s\"\n"),
      "t.toml:11:1: routes[0].rollout.analysis.intreval",
      "unknown key (did you mean \"interval\"?)");
  CHECK_REJECTED(rolloutWith("analysis = { error_ratio = { relativ = 2 } }\n"),
                 "t.toml:8:30: routes[0].rollout.analysis.error_ratio.relativ",
                 "did you mean \"relative\"");
  CHECK_REJECTED(rolloutWith("analysis = { latency = { p = 0.9 } }\n"),
                 "t.toml:8:26: routes[0].rollout.analysis.latency.p", "unknown key");
  CHECK_REJECTED(rolloutWith("analysis = \"strict\"\n"), "t.toml:8:12: routes[0].rollout.analysis",
                 "expected a table, got a string");
  CHECK_REJECTED(std::string(kRolloutHead).substr(0, std::string(kRolloutHead).size() - 17) +
                     "rollout = \"canary\"\n",
                 "t.toml:7:11: routes[0].rollout", "expected a table, got a string");
}

// The analysis keys go in an inline table on line 8, so the positions are predictable.
std::string analysis(std::string_view keys) {
  return rolloutWith("analysis = { " + std::string(keys) + " }\n");
}

TEST_CASE("rollout analysis: durations, confidence and ratios in range") {
  CHECK_REJECTED(analysis("interval = \"0s\""), "t.toml:8:25: routes[0].rollout.analysis.interval",
                 "must be > 0");
  CHECK_REJECTED(analysis("interval = \"1d\""), "t.toml:8:25: routes[0].rollout.analysis.interval",
                 "expected a duration like \"30s\", \"10m\", \"500ms\" or \"2h\"");
  CHECK_REJECTED(analysis("warmup = \"-1s\""), "t.toml:8:23: routes[0].rollout.analysis.warmup",
                 "expected a duration like");
  for (const char* bad : {"0.5", "1", "1.5", "0", "nan"}) {
    INFO(bad);
    CHECK_REJECTED(analysis("confidence = " + std::string(bad)),
                   "t.toml:8:27: routes[0].rollout.analysis.confidence",
                   "must be > 0.5 and < 1 (e.g. 0.99)");
  }
  CHECK_REJECTED(analysis("confidence = \"high\""),
                 "t.toml:8:27: routes[0].rollout.analysis.confidence", "expected a number");
  CHECK_REJECTED(analysis("min_requests = -1"),
                 "t.toml:8:29: routes[0].rollout.analysis.min_requests", "must be >= 0");
  CHECK_REJECTED(analysis("error_ratio = { relative = 0.9 }"),
                 "t.toml:8:41: routes[0].rollout.analysis.error_ratio.relative", "must be >= 1");
  CHECK_REJECTED(analysis("error_ratio = { absolute = 1 }"),
                 "t.toml:8:41: routes[0].rollout.analysis.error_ratio.absolute",
                 "must be >= 0 and < 1");
  CHECK_REJECTED(analysis("latency = { quantile = 1 }"),
                 "t.toml:8:37: routes[0].rollout.analysis.latency.quantile", "must be > 0 and < 1");
  CHECK_REJECTED(analysis("latency = { relative = 0.5 }"),
                 "t.toml:8:37: routes[0].rollout.analysis.latency.relative", "must be >= 1");
  CHECK_REJECTED(analysis("critical_error_ratio = 0"),
                 "t.toml:8:37: routes[0].rollout.analysis.critical_error_ratio",
                 "must be > 0 and <= 1");
  CHECK_REJECTED(analysis("critical_error_ratio = 1.01"),
                 "t.toml:8:37: routes[0].rollout.analysis.critical_error_ratio",
                 "must be > 0 and <= 1");
  REQUIRE_LOADS(result, analysis("confidence = 0.51, critical_error_ratio = 1"));
}

TEST_CASE("rollout shadow_mismatch needs shadow comparisons") {
  // kRolloutHead's route has a shadow pool but no [routes.shadow].
  CHECK_REJECTED(analysis("shadow_mismatch = 0.01"),
                 "t.toml:8:32: routes[0].rollout.analysis.shadow_mismatch",
                 "needs shadow comparisons, but routes[0].shadow is not set");
  const auto with_shadow = [](std::string_view shadow, std::string_view mismatch = "0.01") {
    std::string text = analysis("shadow_mismatch = " + std::string(mismatch));
    text.replace(text.find("[routes.rollout]"), 16,
                 "shadow = { " + std::string(shadow) + " }\n[routes.rollout]");
    return text;
  };
  CHECK_REJECTED(with_shadow("percent = 10, compare = false"),
                 "t.toml:9:32: routes[0].rollout.analysis.shadow_mismatch",
                 "routes[0].shadow.compare is false");
  CHECK_REJECTED(with_shadow("compare = true"),
                 "t.toml:9:32: routes[0].rollout.analysis.shadow_mismatch",
                 "routes[0].shadow.percent is 0 (nothing is mirrored)");
  CHECK_REJECTED(with_shadow("percent = 10", "1"),
                 "t.toml:9:32: routes[0].rollout.analysis.shadow_mismatch", "must be >= 0 and < 1");
  {
    REQUIRE_LOADS(result, with_shadow("percent = 10"));  // compare defaults to true
    CHECK(result.snapshot->routes[0].rollout->analysis.shadow_mismatch == 0.01);
  }
  // Without a shadow pool, [routes.shadow] itself is the error (once).
  std::string no_pool = with_shadow("percent = 10");
  no_pool.replace(no_pool.find(", shadow = \"s\""), 14, "");
  CHECK_REJECTED(no_pool, "t.toml:7:10: routes[0].shadow", "requires routes[0].upstreams.shadow");
}

TEST_CASE("every rollout error is reported in one run") {
  const LoadResult result = loadWithPools(R"([[routes]]
name = "shop"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1 }
[routes.rollout]
id = ".x"
baseline = "canary"
stages = [{ percent = 50, hold = "1x" }, { percent = 10 }]
analysis = { confidence = 2 }
)");
  INFO(formatErrors(result.errors));
  CHECK_FALSE(result.ok());
  CHECK(hasError(result, "t.toml:5:1: routes[0].rollout", "server.state_dir is required"));
  CHECK(hasError(result, "t.toml:6:6: routes[0].rollout.id", "must not start with"));
  // Equal to the variant: that is the error, not also the baseline's weight of 0.
  CHECK(hasError(result, "t.toml:7:12: routes[0].rollout.baseline", "must differ"));
  CHECK(hasError(result, "t.toml:8:34: routes[0].rollout.stages[0].hold", "expected a duration"));
  CHECK(
      hasError(result, "t.toml:8:54: routes[0].rollout.stages[1].percent", "strictly increasing"));
  CHECK(hasError(result, "t.toml:9:27: routes[0].rollout.analysis.confidence", "must be > 0.5"));
  CHECK(result.errors.size() == 6);
}

TEST_CASE("every error is reported, not only the first") {
  const LoadResult result = load(R"([server]
workers = "x"
listen = ["nope"]
[[routes]]
upstreams = { blue = "missing" }
weights = { blue = -1 }
[[routes.override]]
client_ip = ["1.2.3.4/40"]
variant = "blue"
[upstreams.x]
servers = ["nowhere.invalid:80"]
)");
  INFO(formatErrors(result.errors));
  CHECK_FALSE(result.ok());
  CHECK(hasError(result, "t.toml:2:11: server.workers", "expected an integer"));
  CHECK(hasError(result, "t.toml:3:11: server.listen[0]", "must be host:port"));
  CHECK(hasError(result, "t.toml:4:1: routes[0].name", "is required"));
  CHECK(hasError(result, "t.toml:5:22: routes[0].upstreams.blue", "no pool named"));
  CHECK(hasError(result, "t.toml:6:20: routes[0].weights.blue", "must be >= 0"));
  CHECK(hasError(result, "t.toml:8:14: routes[0].override[0].client_ip[0]", "invalid CIDR"));
  CHECK(hasError(result, "t.toml:11:12: upstreams.x.servers[0]", "does not resolve"));
  CHECK(result.errors.size() == 7);
  // In file order, whichever stage found them.
  for (size_t i = 1; i < result.errors.size(); ++i) {
    CHECK(result.errors[i - 1].line <= result.errors[i].line);
  }
}

TEST_CASE("loadSnapshot reports a file it cannot read") {
  const LoadResult missing = loadSnapshot("/nonexistent/switchyard.toml");
  CHECK_FALSE(missing.ok());
  REQUIRE(missing.errors.size() == 1);
  CHECK(missing.errors[0].toString() ==
        "/nonexistent/switchyard.toml: cannot read: No such file or directory");
  const LoadResult directory = loadSnapshot(kSourceRoot);
  CHECK_FALSE(directory.ok());
  REQUIRE(directory.errors.size() == 1);
  CHECK(directory.errors[0].message.find("cannot read") != std::string::npos);
}

}  // namespace
TEST_CASE("certificates are loaded at load time: a bad PEM or a mismatched key is an error") {
  const std::string bad_pem = std::string(kRoute) + R"(
[[listener]]
address = "127.0.0.1:8443"
tls = { cert = "@ROOT@/meson.build", key = "@READABLE@" }
)";
  CHECK_REJECTED(bad_pem, "t.toml:9:16: listener[0].tls.cert", "cannot load certificate");
  const std::string mismatch = std::string(kRoute) + R"(
[[listener]]
address = "127.0.0.1:8443"
tls = { cert = "@READABLE@", key = ")" +
                               kOtherKey + R"(" }
)";
  // The key's column depends on the length of the (absolute) certificate path before it.
  const size_t key_col = std::string_view(R"(tls = { cert = ")").size() + kReadableFile.size() +
                         std::string_view(R"(", key = )").size() + 1;
  CHECK_REJECTED(mismatch, "t.toml:9:" + std::to_string(key_col) + ": listener[0].tls.key",
                 "key values mismatch");
}

// ---- Segments and location (SPEC §13) -----------------------------------------------------------

const std::string kTestData = kSourceRoot + "/tests/unit/config/testdata";

TEST_CASE("keys files: one key per line, trimmed; blank lines and # comments skipped") {
  const std::shared_ptr<const KeySet> keys =
      KeySet::parse("# header\nalice\n\n  bob \t\n\t# indented comment\ncarol\r\nalice\nlast", 7);
  CHECK(keys->size() == 4);  // alice twice counts once
  for (const char* key : {"alice", "bob", "carol", "last"}) CHECK(keys->contains(key));
  for (const char* key : {"", "# header", "bob ", "Alice", "dave", "# indented comment"}) {
    CHECK_FALSE(keys->contains(key));
  }
  CHECK(KeySet::parse("", 1)->size() == 0);
}

TEST_CASE("keys files: loaded relative to the config file; unreadable is an error at keys_file") {
  const LoadResult loaded = loadSnapshotFromString(R"(
[segments.beta]
keys_file = "beta-users.txt"
)" + std::string(kRoute) + std::string(kPools),
                                                   kTestData + "/t.toml", fakeResolve);
  INFO(formatErrors(loaded.errors));
  REQUIRE(loaded.ok());
  REQUIRE(loaded.snapshot->segments.size() == 1);
  const Segment& beta = loaded.snapshot->segments[0];
  CHECK(beta.name == "beta");
  CHECK(beta.keys_file == kTestData + "/beta-users.txt");
  REQUIRE(beta.keys != nullptr);
  CHECK(beta.keys->size() == 3);
  CHECK(beta.keys->contains("bob"));
  CHECK_FALSE(beta.keys->contains("beta testers"));

  CHECK_REJECTED(R"(
[segments.beta]
keys_file = "/nonexistent/users.txt"
)" + std::string(kRoute),
                 "t.toml:3:13: segments.beta.keys_file", "cannot read \"/nonexistent/users.txt\"");
  CHECK_REJECTED(R"(
[segments.beta]
keys_file = ""
)" + std::string(kRoute),
                 "t.toml:3:13: segments.beta.keys_file", "must not be empty");
}

TEST_CASE("country codes: only assigned ISO 3166-1 alpha-2 codes, upper-case") {
  std::string why;
  CHECK(parseCountryCode("NZ", &why) == countryCode('N', 'Z'));
  CHECK(parseCountryCode("GB", &why).has_value());
  CHECK(parseCountryCode("AX", &why).has_value());
  for (const char* bad : {"UK", "ZZ", "EU", "XK", "N", "NZL", "", "N1"}) {
    INFO(bad);
    CHECK_FALSE(parseCountryCode(bad, &why).has_value());
  }
  CHECK_FALSE(parseCountryCode("UK", &why));
  CHECK(why.find("\"GB\"") != std::string::npos);
  CHECK_FALSE(parseCountryCode("nz", &why));
  CHECK(why == "country codes are upper-case: \"NZ\", not \"nz\"");
  char buf[2];
  CHECK(countryText(countryCode('A', 'U'), buf) == "AU");
  CHECK(countryText(0, buf).empty());
}

TEST_CASE("geoip_database: opened at load; countries of the test database; invalid is an error") {
  const LoadResult loaded = loadSnapshotFromString(R"(
[server]
geoip_database = "countries.mmdb"
[segments.oceania]
country = ["NZ", "AU"]
)" + std::string(kRoute) + std::string(kPools),
                                                   kTestData + "/t.toml", fakeResolve);
  INFO(formatErrors(loaded.errors));
  REQUIRE(loaded.ok());
  const Snapshot& s = *loaded.snapshot;
  REQUIRE(s.geoip != nullptr);
  CHECK(s.server.geoip_database == kTestData + "/countries.mmdb");
  REQUIRE(s.segments.size() == 1);
  CHECK(s.segments[0].countries ==
        std::vector<CountryCode>{countryCode('N', 'Z'), countryCode('A', 'U')});
  const auto mapped = [](uint8_t last) {
    std::array<uint8_t, 16> a{};
    a[10] = a[11] = 0xff;
    a[12] = 127;
    a[15] = last;
    return a;
  };
  CHECK(s.geoip->country(mapped(2)) == countryCode('N', 'Z'));
  CHECK(s.geoip->country(mapped(3)) == countryCode('A', 'U'));
  CHECK(s.geoip->country(mapped(4)) == countryCode('U', 'S'));
  CHECK(s.geoip->country(mapped(1)) == 0);
  std::array<uint8_t, 16> v6{};
  v6[0] = 0x20;
  v6[1] = 0x01;
  CHECK(s.geoip->country(v6) == 0);
  // A derived snapshot (a rollout's share) shares the handle.
  CHECK(cloneSnapshot(s)->geoip == s.geoip);

  CHECK_REJECTED(R"(
[server]
geoip_database = "@READABLE@"
)" + std::string(kRoute),
                 "t.toml:3:18: server.geoip_database", "cannot open the MaxMind DB");
  CHECK_REJECTED(R"(
[server]
geoip_database = "/nonexistent.mmdb"
)" + std::string(kRoute),
                 "t.toml:3:18: server.geoip_database", "cannot read \"/nonexistent.mmdb\"");
}

TEST_CASE("segments: conditions compile; overrides and stages refer to them by index") {
  REQUIRE_LOADS(result, R"(
[segments.staff]
header = "X-Staff"
regex = "^yes$"
client_ip = ["10.0.0.0/8", "::1"]
[segments.beta]
cookie = "plan"
regex = "pro|max"
[[routes]]
name = "r"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1 }
[[routes.override]]
segment = "staff"
variant = "canary"
[routes.rollout]
id = "x"
stages = [{ percent = 1, hold = "1m", segments = ["beta", "staff"] }, { percent = 5, hold = "1m" }]
[server]
state_dir = "/tmp"
)");
  const Snapshot& s = *result.snapshot;
  REQUIRE(s.segments.size() == 2);
  // Segments are in key order: beta, staff.
  CHECK(s.segments[0].name == "beta");
  CHECK(s.segments[0].source == Segment::Source::Cookie);
  CHECK(s.segments[0].source_name == "plan");
  REQUIRE(s.segments[0].regex != nullptr);
  CHECK(s.segments[0].regex->pattern() == "pro|max");
  CHECK(s.segments[1].name == "staff");
  CHECK(s.segments[1].source == Segment::Source::Header);
  CHECK(s.segments[1].networks.size() == 2);
  CHECK(s.segments[1].keys == nullptr);
  const Route& r = s.routes[0];
  REQUIRE(r.overrides.size() == 1);
  CHECK(r.overrides[0].kind == Override::Kind::Segment);
  CHECK(r.overrides[0].segment == 1);
  REQUIRE(r.rollout);
  CHECK(r.rollout->stages[0].segments == std::vector<uint32_t>{0, 1});
  CHECK(r.rollout->stages[1].segments.empty());
  CHECK(r.rollout_segments == 0);  // set with the share, not at load
}

TEST_CASE("segments: every rejection at its position") {
  CHECK_REJECTED("[segments.empty]\n" + std::string(kRoute), "t.toml:1:1: segments.empty",
                 "needs at least one condition");
  CHECK_REJECTED("[segments.s]\nregex = \"x\"\nclient_ip = [\"::1\"]\n" + std::string(kRoute),
                 "t.toml:2:9: segments.s.regex", "needs header or cookie");
  CHECK_REJECTED("[segments.s]\nheader = \"X-A\"\n" + std::string(kRoute),
                 "t.toml:1:1: segments.s.regex", "is required with header or cookie");
  CHECK_REJECTED(
      "[segments.s]\nheader = \"X-A\"\ncookie = \"a\"\nregex = \"x\"\n" + std::string(kRoute),
      "t.toml:3:10: segments.s.cookie", "only one of header or cookie");
  CHECK_REJECTED("[segments.s]\nheader = \"X-A\"\nregex = \"(\"\n" + std::string(kRoute),
                 "t.toml:3:9: segments.s.regex", "invalid RE2 pattern");
  CHECK_REJECTED("[segments.s]\nclient_ip = [\"10.0.0.0/33\"]\n" + std::string(kRoute),
                 "t.toml:2:14: segments.s.client_ip[0]", "invalid CIDR");
  CHECK_REJECTED("[segments.s]\nclient_ip = []\n" + std::string(kRoute),
                 "t.toml:2:13: segments.s.client_ip", "at least one network");
  CHECK_REJECTED("[server]\ngeoip_database = \"@READABLE@\"\n[segments.s]\ncountry = []\n" +
                     std::string(kRoute),
                 "t.toml:4:11: segments.s.country", "at least one country code");
  CHECK_REJECTED("[segments.s]\ncountry = [\"NZ\"]\n" + std::string(kRoute),
                 "t.toml:2:11: segments.s.country", "needs server.geoip_database");
  CHECK_REJECTED("[segments.s]\nclient_ip = [\"::1\"]\n" + std::string(kRoute) +
                     "[[routes.override]]\nsegment = \"t\"\nvariant = \"blue\"\n",
                 "t.toml:9:11: routes[0].override[0].segment",
                 "no segment named \"t\" in [segments] (defined: s)");
  CHECK_REJECTED("[segments.s]\nclient_ip = [\"::1\"]\n" + std::string(kRoute) +
                     "[[routes.override]]\nsegment = \"s\"\nregex = \"x\"\nvariant = \"blue\"\n",
                 "t.toml:10:9: routes[0].override[0].regex", "is not allowed with segment");
  CHECK_REJECTED("[segments.s]\nclient_ip = [\"::1\"]\n" + std::string(kRoute) +
                     "[[routes.override]]\nsegment = \"s\"\nheader = \"X\"\nregex = \"x\"\nvariant "
                     "= \"blue\"\n",
                 "t.toml:8:1: routes[0].override[0]",
                 "only one of header, cookie, client_ip or segment");
  CHECK_REJECTED(R"(
[server]
state_dir = "/tmp"
[[routes]]
name = "r"
upstreams = { blue = "b", canary = "c" }
weights = { blue = 1 }
[routes.rollout]
id = "x"
stages = [{ percent = 1, hold = "1m", segments = ["nobody"] }]
)",
                 "t.toml:10:51: routes[0].rollout.stages[0].segments[0]",
                 "no segment named \"nobody\" in [segments] (none is defined)");
  std::string many;
  for (int i = 0; i <= 64; ++i)
    many += "[segments.s" + std::to_string(i) + "]\nclient_ip = [\"::1\"]\n";
  const LoadResult too_many = loadWithPools(many + std::string(kRoute));
  CHECK_FALSE(too_many.ok());
  CHECK(hasError(too_many, "t.toml:1:1: segments", "at most 64 segments"));
}

// ---- Rollouts across replicas (SPEC §14) --------------------------------------------------------

TEST_CASE("rollout analysis source: local by default; prometheus with its URL and lag") {
  REQUIRE_LOADS(local, rolloutWith(""));
  const RolloutAnalysis& l = local.snapshot->routes.at(0).rollout->analysis;
  CHECK_FALSE(l.prometheus);
  CHECK(l.prometheus_url.empty());
  CHECK(l.lag_ms == 30000);
  REQUIRE_LOADS(prom, analysis("source = \"prometheus\", prometheus_url = "
                               "\"http://prometheus:9090/prom\", lag = \"45s\""));
  const RolloutAnalysis& p = prom.snapshot->routes.at(0).rollout->analysis;
  CHECK(p.prometheus);
  CHECK(p.prometheus_url == "http://prometheus:9090/prom");
  CHECK(p.lag_ms == 45000);
  REQUIRE_LOADS(explicit_local, analysis("source = \"local\""));
  CHECK_FALSE(explicit_local.snapshot->routes.at(0).rollout->analysis.prometheus);
}

TEST_CASE("rollout analysis source: validation with positions") {
  CHECK_REJECTED(analysis("source = \"gossip\""), "t.toml:8:23: routes[0].rollout.analysis.source",
                 "must be \"local\" or \"prometheus\"");
  CHECK_REJECTED(analysis("source = \"prometheus\""),
                 "t.toml:8:23: routes[0].rollout.analysis.source",
                 "source = \"prometheus\" needs routes[0].rollout.analysis.prometheus_url");
  CHECK_REJECTED(analysis("source = \"prometheus\", prometheus_url = \"https://p:9090\""),
                 "t.toml:8:54: routes[0].rollout.analysis.prometheus_url",
                 "https is not supported: Prometheus is queried over plain http://");
  CHECK_REJECTED(analysis("source = \"prometheus\", prometheus_url = \"http://p:9090\", lag = "
                          "\"0s\""),
                 "t.toml:8:77: routes[0].rollout.analysis.lag", "must be > 0");
  CHECK_REJECTED(analysis("source = \"prometheus\", prometheus_url = \"http://p:9090\", lag = 3"),
                 "t.toml:8:77: routes[0].rollout.analysis.lag", "expected a duration");
  CHECK_REJECTED(analysis("prometheus_url = \"http://p:9090\""),
                 "t.toml:8:31: routes[0].rollout.analysis.prometheus_url",
                 "is only used with source = \"prometheus\"");
}

TEST_CASE("a rollout judged through Prometheus needs no state_dir (no journal)") {
  const std::string keys =
      "analysis = { source = \"prometheus\", prometheus_url = \"http://127.0.0.1:9090\" }\n";
  REQUIRE_LOADS(result, std::string(kRolloutHead).substr(29) + keys + std::string(kRolloutValid));
  CHECK(result.snapshot->server.state_dir.empty());
  CHECK(result.snapshot->routes.at(0).rollout->analysis.prometheus);
}

}  // namespace sy::config
