// SPEC §13 trusted_proxies: the request's client from X-Forwarded-For, only behind a trusted
// peer.

#include <string>
#include <vector>

#include <doctest.h>

#include "config/validate.h"
#include "proxy/routing/client_address.h"

namespace sy::proxy {
namespace {

ClientIp ip(std::string_view text) {
  const std::optional<ClientIp> parsed = parseForwardedAddress(text);
  REQUIRE(parsed.has_value());
  return *parsed;
}

std::vector<config::Cidr> networks(std::initializer_list<const char*> list) {
  std::vector<config::Cidr> out;
  for (const char* text : list) {
    std::string why;
    const std::optional<config::Cidr> cidr = config::parseCidr(text, &why);
    REQUIRE_MESSAGE(cidr.has_value(), why);
    out.push_back(*cidr);
  }
  return out;
}

Headers xff(std::initializer_list<const char*> values) {
  Headers out;
  out.push_back({"Host", "shop.example"});
  for (const char* v : values) out.push_back({"X-Forwarded-For", v});
  out.push_back({"Accept", "*/*"});
  return out;
}

// The client for a request from `peer` with those X-Forwarded-For fields, as text.
std::string client(const char* peer, std::initializer_list<const char*> fields,
                   const std::vector<config::Cidr>& trusted) {
  return clientIpText(requestClient(ip(peer), xff(fields), trusted));
}

// The balancers of the tests (made inside a test case: REQUIRE needs one).
std::vector<config::Cidr> balancers() { return networks({"10.0.0.0/8", "2001:db8:ffff::/48"}); }

TEST_CASE("from an untrusted peer X-Forwarded-For is never believed (spoofing)") {
  CHECK(client("203.0.113.5", {"1.2.3.4"}, balancers()) == "203.0.113.5");
  CHECK(client("203.0.113.5", {"10.1.1.1, 1.2.3.4"}, balancers()) == "203.0.113.5");
  // No trusted_proxies at all: the peer, whatever the header says.
  CHECK(client("10.0.0.1", {"1.2.3.4"}, {}) == "10.0.0.1");
}

TEST_CASE("from a trusted peer: the right-most address not trusted") {
  CHECK(client("10.0.0.1", {"198.51.100.7"}, balancers()) == "198.51.100.7");
  // The client put its own guess first; the balancers appended what they saw.
  CHECK(client("10.0.0.1", {"6.6.6.6, 198.51.100.7, 10.2.2.2"}, balancers()) == "198.51.100.7");
  // Several fields are one list, in order.
  CHECK(client("10.0.0.1", {"6.6.6.6, 198.51.100.7", "10.2.2.2", "10.3.3.3"}, balancers()) ==
        "198.51.100.7");
  CHECK(client("10.0.0.1", {"6.6.6.6", "198.51.100.7, 10.2.2.2"}, balancers()) == "198.51.100.7");
  // No X-Forwarded-For from a trusted peer: the peer.
  CHECK(client("10.0.0.1", {}, balancers()) == "10.0.0.1");
}

TEST_CASE("every address trusted: the left-most") {
  CHECK(client("10.0.0.1", {"10.9.9.9, 10.2.2.2"}, balancers()) == "10.9.9.9");
}

TEST_CASE("IPv6 peers, elements, brackets and ports") {
  CHECK(client("2001:db8:ffff::1", {"2001:db8:1::7"}, balancers()) == "2001:db8:1::7");
  CHECK(client("2001:db8:ffff::1", {"[2001:db8:1::7]:4711"}, balancers()) == "2001:db8:1::7");
  CHECK(client("2001:db8:ffff::1", {"[2001:db8:1::7]"}, balancers()) == "2001:db8:1::7");
  CHECK(client("10.0.0.1", {"198.51.100.7:4711"}, balancers()) == "198.51.100.7");
  // An IPv4-mapped IPv6 element is that IPv4 address (trusted or not alike).
  CHECK(client("10.0.0.1", {"198.51.100.7, ::ffff:10.2.2.2"}, balancers()) == "198.51.100.7");
  // A trusted IPv4-mapped peer (as an IPv6 socket reports IPv4 clients).
  CHECK(client("::ffff:10.0.0.1", {"198.51.100.7"}, balancers()) == "198.51.100.7");
}

TEST_CASE("a malformed element stops the walk at the last good address") {
  // Right-most is broken: nothing after the peer can be vouched for.
  CHECK(client("10.0.0.1", {"198.51.100.7, unknown"}, balancers()) == "10.0.0.1");
  // Broken behind a trusted hop: that hop.
  CHECK(client("10.0.0.1", {"198.51.100.7, bad, 10.2.2.2"}, balancers()) == "10.2.2.2");
  // Broken left of the client: the client was already found.
  CHECK(client("10.0.0.1", {"bad, 198.51.100.7, 10.2.2.2"}, balancers()) == "198.51.100.7");
  for (const char* bad : {"1.2.3", "1.2.3.4.5", "[::1", "[::1]x", "[::1]:", "1.2.3.4:x",
                          "1.2.3.4:123456", "example.com", "fe80::1%eth0", "_hidden"}) {
    CAPTURE(bad);
    CHECK_FALSE(parseForwardedAddress(bad).has_value());
    CHECK(client("10.0.0.1", {bad}, balancers()) == "10.0.0.1");
  }
}

TEST_CASE("empty elements and whitespace are skipped") {
  CHECK(client("10.0.0.1", {" 198.51.100.7 ,, \t10.2.2.2 , "}, balancers()) == "198.51.100.7");
  CHECK(client("10.0.0.1", {""}, balancers()) == "10.0.0.1");
}

TEST_CASE("inNetworks") {
  CHECK(inNetworks(balancers(), ip("10.255.0.1")));
  CHECK_FALSE(inNetworks(balancers(), ip("11.0.0.1")));
  CHECK(inNetworks(balancers(), ip("2001:db8:ffff:1::1")));
  CHECK_FALSE(inNetworks(balancers(), ip("2001:db8:fffe::1")));
  CHECK(inNetworks(networks({"0.0.0.0/0"}), ip("8.8.8.8")));
  CHECK_FALSE(inNetworks(networks({"0.0.0.0/0"}), ip("2001:db8::1")));
  CHECK_FALSE(inNetworks({}, ip("8.8.8.8")));
}

}  // namespace
}  // namespace sy::proxy
