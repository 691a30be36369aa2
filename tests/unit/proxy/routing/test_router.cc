// Route matching (SPEC §4.1): host without port, exact or "*.suffix", case-insensitive; path
// regex searched on the path without query; first match wins.

#include <memory>
#include <string>

#include <doctest.h>

#include "proxy/http/http_message.h"
#include "proxy/routing/router.h"

namespace sy::proxy {
namespace {

// Routes as the snapshot stores them: lower-case host, "*.suffix" as ".suffix" + wildcard.
config::Route route(std::string name, std::string host, const char* path = nullptr) {
  config::Route r;
  r.name = std::move(name);
  if (host.rfind("*.", 0) == 0) {
    r.host = host.substr(1);
    r.host_wildcard = true;
  } else {
    r.host = std::move(host);
  }
  if (path != nullptr) {
    r.path = std::make_shared<RE2>(path);
    REQUIRE(r.path->ok());
  }
  return r;
}

const char* matched(const config::Snapshot& s, std::string_view host, std::string_view path) {
  const config::Route* r = matchRoute(s, host, path);
  return r ? r->name.c_str() : nullptr;
}

}  // namespace

TEST_CASE("hostWithoutPort") {
  CHECK(hostWithoutPort("example.com") == "example.com");
  CHECK(hostWithoutPort("example.com:8080") == "example.com");
  CHECK(hostWithoutPort("example.com:") == "example.com");
  CHECK(hostWithoutPort("10.0.0.1:80") == "10.0.0.1");
  CHECK(hostWithoutPort("[::1]") == "[::1]");
  CHECK(hostWithoutPort("[::1]:8443") == "[::1]");
  CHECK(hostWithoutPort("[2001:db8::1]:80") == "[2001:db8::1]");
  CHECK(hostWithoutPort("::1") == "::1");  // bare v6 (invalid Host): nothing stripped
  CHECK(hostWithoutPort("[::1") == "[::1");
  CHECK(hostWithoutPort("") == "");
}

TEST_CASE("matchRoute: host exact, wildcard, port and case") {
  config::Snapshot s;
  s.routes.push_back(route("exact", "shop.example.com"));
  s.routes.push_back(route("wild", "*.example.com"));
  s.routes.push_back(route("v6", "[2001:db8::1]"));

  CHECK(matched(s, "shop.example.com", "/") == std::string("exact"));
  CHECK(matched(s, "SHOP.Example.COM:8080", "/") == std::string("exact"));
  CHECK(matched(s, "shop.example.com.", "/") == std::string("exact"));  // absolute form
  CHECK(matched(s, "a.example.com", "/") == std::string("wild"));
  CHECK(matched(s, "A.B.Example.Com:443", "/") == std::string("wild"));
  CHECK(matched(s, "example.com", "/") == nullptr);  // the bare domain is not "*.example.com"
  CHECK(matched(s, ".example.com", "/") == nullptr);
  CHECK(matched(s, "badexample.com", "/") == nullptr);
  CHECK(matched(s, "shop.example.com.evil", "/") == nullptr);
  CHECK(matched(s, "[2001:db8::1]:8080", "/") == std::string("v6"));
  CHECK(matched(s, "[2001:DB8::1]", "/") == std::string("v6"));
  CHECK(matched(s, "", "/") == nullptr);
}

TEST_CASE("matchRoute: a wildcard stored as \"*.suffix\" still works") {
  config::Snapshot s;
  config::Route r = route("wild", "x");
  r.host = "*.example.org";
  r.host_wildcard = true;
  s.routes.push_back(std::move(r));
  CHECK(matched(s, "a.example.org", "/") == std::string("wild"));
  CHECK(matched(s, "example.org", "/") == nullptr);
}

TEST_CASE("matchRoute: path regex is searched, on the path without query") {
  config::Snapshot s;
  s.routes.push_back(route("api", "shop.example.com", "^/(api|cart)/"));
  s.routes.push_back(route("img", "", "\\.png$"));
  s.routes.push_back(route("v2", "", "/v2/"));

  RequestHead req;
  req.target = "/api/items?id=1";
  CHECK(matched(s, "shop.example.com", req.path()) == std::string("api"));
  CHECK(matched(s, "other.example.com", "/api/items") == nullptr);
  CHECK(matched(s, "shop.example.com", "/apix/items") == nullptr);

  // "$" anchors at the end of the path, which only works if the query is gone.
  req.target = "/logo.png?v=3";
  CHECK(matched(s, "any", req.path()) == std::string("img"));
  // Searched, not anchored: "/v2/" anywhere in the path.
  CHECK(matched(s, "any", "/x/v2/y") == std::string("v2"));
  // A query is never part of the match, even if a caller forgets to strip it.
  CHECK(matched(s, "any", "/x?next=/v2/") == nullptr);
}

TEST_CASE("matchRoute: first match wins; null when none; empty match = any") {
  config::Snapshot s;
  CHECK(matched(s, "a", "/") == nullptr);
  s.routes.push_back(route("api", "", "^/api/"));
  s.routes.push_back(route("shop", "shop.example.com"));
  s.routes.push_back(route("all", ""));
  s.routes.push_back(route("never", "shop.example.com"));
  CHECK(matched(s, "shop.example.com", "/api/x") == std::string("api"));
  CHECK(matched(s, "shop.example.com", "/") == std::string("shop"));
  CHECK(matched(s, "else.example.com", "/") == std::string("all"));
  CHECK(matchRoute(s, "shop.example.com", "/") == &s.routes[1]);
}

}  // namespace sy::proxy
