// The per-request routing cost: matchRoute + decide on a realistic config, and the two hashing
// primitives alone. The route that matches is near the end of the list and no override fires,
// so every matcher and override is evaluated: this is the worst ordinary case, not the best.

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>
#include <memory>
#include <string>

#include <benchmark/benchmark.h>

#include "config/geoip.h"
#include "config/key_set.h"
#include "proxy/routing/router.h"
#include "proxy/routing/segments.h"
#include "proxy/routing/splitter.h"

namespace sy::proxy {
namespace {

using config::Variant;

config::Cidr cidr(const char* v4, unsigned len) {
  config::Cidr c;
  c.addr[10] = 0xff;
  c.addr[11] = 0xff;
  inet_pton(AF_INET, v4, c.addr.data() + 12);
  c.prefix_len = static_cast<uint8_t>(96 + len);
  return c;
}

config::Override regexOverride(config::Override::Kind kind, std::string name, const char* re,
                               Variant v) {
  config::Override o;
  o.kind = kind;
  o.name = std::move(name);
  o.regex = std::make_shared<RE2>(re);
  o.variant = v;
  return o;
}

// 20 routes over a handful of hosts, each with a path regex; route 18 is the one that matches.
std::unique_ptr<config::Snapshot> makeSnapshot() {
  auto s = std::make_unique<config::Snapshot>();
  const char* hosts[] = {"www.example.com", "api.example.com", ".cdn.example.com",
                         "shop.example.com", "admin.example.com"};
  const char* paths[] = {"^/v1/users/[0-9]+$", "^/static/", "\\.(png|jpg|css|js)$",
                         "^/(login|logout)$", "^/api/v2/(orders|items)/"};
  for (int i = 0; i < 20; ++i) {
    config::Route r;
    r.name = "route-" + std::to_string(i);
    r.salt = r.name;
    r.host = hosts[i % 5];
    r.host_wildcard = r.host.front() == '.';
    r.path = std::make_shared<RE2>(paths[(i / 5 + i) % 5]);
    r.weights = {90, 0, 10};
    r.keys = {{config::KeySource::Kind::Header, "X-User-Id"},
              {config::KeySource::Kind::Cookie, "session"}};
    s->routes.push_back(std::move(r));
  }
  // The target: shop.example.com with the cart/checkout API, 10 overrides that do not fire.
  config::Route& target = s->routes[18];
  target.host = "shop.example.com";
  target.host_wildcard = false;
  target.path = std::make_shared<RE2>("^/(api|cart)/");
  target.weights = {80, 15, 5};
  target.assign_cookie = "sy_id";
  using K = config::Override::Kind;
  target.overrides = {
      regexOverride(K::Header, "X-Canary", "^(1|true|yes)$", Variant::Canary),
      regexOverride(K::Header, "X-Debug-Variant", "blue|green|canary", Variant::Green),
      regexOverride(K::Cookie, "beta", "on", Variant::Canary),
      regexOverride(K::Header, "User-Agent", ".*InternalQA/[0-9.]+.*", Variant::Green),
      regexOverride(K::Cookie, "force_green", "1", Variant::Green),
      regexOverride(K::Header, "X-Tenant", "acme|globex|initech", Variant::Canary),
      regexOverride(K::Cookie, "employee", "[0-9a-f]{8}", Variant::Canary),
  };
  config::Override office;
  office.kind = K::ClientIp;
  office.networks = {cidr("10.0.0.0", 8), cidr("172.16.0.0", 12), cidr("192.168.0.0", 16)};
  office.variant = Variant::Canary;
  target.overrides.push_back(office);
  office.networks = {cidr("198.51.100.0", 24)};
  target.overrides.push_back(office);
  office.networks = {cidr("100.64.0.0", 10), cidr("192.0.2.0", 24)};
  target.overrides.push_back(office);
  return s;
}

RequestHead makeRequest() {
  RequestHead req;
  req.method = "GET";
  req.target = "/api/cart/items?page=2";
  req.headers = {
      {"Host", "shop.example.com"},
      {"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari"},
      {"Accept", "application/json, text/plain, */*"},
      {"Accept-Language", "en-GB,en;q=0.9"},
      {"Accept-Encoding", "gzip, deflate, br"},
      {"Connection", "keep-alive"},
      {"Referer", "https://shop.example.com/cart"},
      {"Cookie",
       "_ga=GA1.2.1234567890.1700000000; theme=dark; "
       "session=7f3c9a2e-41b8-4d2a-9c6e-0b5f8e2d1a47; consent=\"yes\"; lang=en"},
      {"X-Request-Id", "0d9f6c1e-5b7a-4e3c-8a2f-6c1d9e0b7a35"},
      {"X-Forwarded-For", "203.0.113.9"},
      {"Cache-Control", "no-cache"},
      {"Sec-Fetch-Mode", "cors"},
  };
  return req;
}

ClientIp clientIp() {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  inet_pton(AF_INET, "203.0.113.9", &sin.sin_addr);
  return clientIpFromSockaddr(reinterpret_cast<const sockaddr*>(&sin));
}

void BM_RouteAndSplit(benchmark::State& state) {
  const auto snapshot = makeSnapshot();
  const RequestHead req = makeRequest();
  const ClientIp ip = clientIp();
  uint64_t random = 1;
  for (auto _ : state) {
    const std::string_view host = *findHeader(req.headers, "Host");
    const config::Route* route = matchRoute(*snapshot, host, req.path());
    SplitDecision d = decide(*route, req.headers, ip, random, random + 1);
    ++random;
    benchmark::DoNotOptimize(d);
  }
  // The whole point: the decision must land on the intended route and key.
  const config::Route* route = matchRoute(*snapshot, "shop.example.com", req.path());
  if (route != &snapshot->routes[18] ||
      decide(*route, req.headers, ip, 0, 0).reason != SplitDecision::Reason::Key) {
    state.SkipWithError("benchmark setup does not route as intended");
  }
}
BENCHMARK(BM_RouteAndSplit);

void BM_MatchRoute(benchmark::State& state) {
  const auto snapshot = makeSnapshot();
  const RequestHead req = makeRequest();
  for (auto _ : state) {
    benchmark::DoNotOptimize(matchRoute(*snapshot, "shop.example.com", req.path()));
  }
}
BENCHMARK(BM_MatchRoute);

void BM_Decide(benchmark::State& state) {
  const auto snapshot = makeSnapshot();
  const RequestHead req = makeRequest();
  const ClientIp ip = clientIp();
  for (auto _ : state) {
    SplitDecision d = decide(snapshot->routes[18], req.headers, ip, 1, 2);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_Decide);

void BM_PickWeighted(benchmark::State& state) {
  const std::array<double, config::kWeightedVariants> weights = {80, 15, 5};
  const std::string key = "7f3c9a2e-41b8-4d2a-9c6e-0b5f8e2d1a47";
  for (auto _ : state) {
    benchmark::DoNotOptimize(pickWeighted("route-18", weights, key));
  }
}
BENCHMARK(BM_PickWeighted);

void BM_ShadowSampled(benchmark::State& state) {
  const std::string key = "7f3c9a2e-41b8-4d2a-9c6e-0b5f8e2d1a47";
  for (auto _ : state) {
    benchmark::DoNotOptimize(shadowSampled("route-18", key, 10.0));
  }
}
BENCHMARK(BM_ShadowSampled);

void BM_FindCookie(benchmark::State& state) {
  const RequestHead req = makeRequest();
  for (auto _ : state) {
    benchmark::DoNotOptimize(findCookie(req.headers, "session"));
  }
}
BENCHMARK(BM_FindCookie);

// ---- Segments (SPEC §13) ------------------------------------------------------------------------

// Five segments, each named by an override of the route, none of which the request is in, so
// every condition is evaluated: a keys_file of 1,000,000 keys (the request's key is looked up),
// a country list (one GeoIP lookup in the test database, tests/unit/config/testdata), a header
// regex, client networks and a cookie regex. Built once: the keys take ~0.5 s.
struct SegmentFixture {
  config::Snapshot snapshot;
  config::Route route;
  RequestHead request = makeRequest();
  ClientIp ip = clientIp();
};

const SegmentFixture& segmentFixture() {
  static const SegmentFixture* fixture = [] {
    auto* f = new SegmentFixture;
    // Values for the two regex conditions to run on (and miss).
    f->request.headers.push_back({"X-Plan", "free"});
    f->request.headers.push_back({"Cookie", "role=customer"});
    std::string keys;
    keys.reserve(13 * 1000000);
    char line[32];
    for (int i = 0; i < 1000000; ++i) {
      keys.append(line, static_cast<size_t>(std::snprintf(line, sizeof line, "user-%07d\n", i)));
    }
    config::Segment beta;
    beta.name = "beta";
    beta.keys = config::KeySet::parse(keys, 0x5eed);
    config::Segment oceania;
    oceania.name = "oceania";
    oceania.countries = {config::countryCode('N', 'Z'), config::countryCode('A', 'U')};
    config::Segment pro;
    pro.name = "pro";
    pro.source = config::Segment::Source::Header;
    pro.source_name = "X-Plan";
    pro.regex = std::make_shared<RE2>("^(pro|enterprise)$");
    config::Segment office;
    office.name = "office";
    office.networks = {cidr("10.0.0.0", 8), cidr("172.16.0.0", 12), cidr("192.168.0.0", 16)};
    config::Segment staff;
    staff.name = "staff";
    staff.source = config::Segment::Source::Cookie;
    staff.source_name = "role";
    staff.regex = std::make_shared<RE2>("staff|admin");
    f->snapshot.segments = {beta, oceania, pro, office, staff};
    std::string error;
    f->snapshot.geoip = config::GeoIpDatabase::open(
        std::string(SY_SOURCE_ROOT) + "/tests/unit/config/testdata/countries.mmdb", &error);
    f->route.name = "shop";
    f->route.salt = "shop";
    f->route.keys = {{config::KeySource::Kind::Header, "X-User-Id"},
                     {config::KeySource::Kind::Cookie, "session"}};
    f->route.weights = {95, 0, 5};
    for (uint32_t i = 0; i < 5; ++i) {
      config::Override o;
      o.kind = config::Override::Kind::Segment;
      o.segment = i;
      o.variant = Variant::Canary;
      f->route.overrides.push_back(o);
    }
    return f;
  }();
  return *fixture;
}

void BM_DecideSegments(benchmark::State& state) {
  const SegmentFixture& f = segmentFixture();
  uint64_t random = 1;
  for (auto _ : state) {
    SegmentMatcher segments(f.snapshot.segments, f.snapshot.geoip.get(), f.request.headers, f.ip);
    SplitDecision d = decide(f.route, f.request.headers, f.ip, random, random + 1, &segments);
    ++random;
    benchmark::DoNotOptimize(d);
  }
  // Every segment must have been evaluated (and missed), with the database and the keys there.
  SegmentMatcher segments(f.snapshot.segments, f.snapshot.geoip.get(), f.request.headers, f.ip);
  const SplitDecision d = decide(f.route, f.request.headers, f.ip, 0, 0, &segments);
  if (!f.snapshot.geoip || f.snapshot.segments[0].keys->size() != 1000000 ||
      d.reason != SplitDecision::Reason::Key || segments.all() != 0 ||
      !f.snapshot.segments[0].keys->contains("user-0999999")) {
    state.SkipWithError("segment benchmark setup is not as intended");
  }
}
BENCHMARK(BM_DecideSegments);

// The same request and route without its five segment overrides: what the segments add.
void BM_DecideSegmentsBaseline(benchmark::State& state) {
  const SegmentFixture& f = segmentFixture();
  config::Route plain = f.route;
  plain.overrides.clear();
  uint64_t random = 1;
  for (auto _ : state) {
    SegmentMatcher segments(f.snapshot.segments, f.snapshot.geoip.get(), f.request.headers, f.ip);
    SplitDecision d = decide(plain, f.request.headers, f.ip, random, random + 1, &segments);
    ++random;
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_DecideSegmentsBaseline);

void BM_KeySetContains(benchmark::State& state) {
  const SegmentFixture& f = segmentFixture();
  const config::KeySet& keys = *f.snapshot.segments[0].keys;
  char key[32];
  uint64_t i = 0;
  for (auto _ : state) {
    // Keys spread over the whole set, half of them absent, as real traffic would hit it.
    const int n =
        std::snprintf(key, sizeof key, "user-%07u", static_cast<unsigned>((i * 7919) % 2000000));
    benchmark::DoNotOptimize(keys.contains(std::string_view(key, static_cast<size_t>(n))));
    ++i;
  }
}
BENCHMARK(BM_KeySetContains);

void BM_GeoIpCountry(benchmark::State& state) {
  const SegmentFixture& f = segmentFixture();
  for (auto _ : state) benchmark::DoNotOptimize(f.snapshot.geoip->country(f.ip.bytes));
}
BENCHMARK(BM_GeoIpCountry);

}  // namespace
}  // namespace sy::proxy

BENCHMARK_MAIN();
