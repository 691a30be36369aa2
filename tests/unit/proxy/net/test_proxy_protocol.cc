// The PROXY protocol parser (v1 text, v2 binary; HAProxy's proxy-protocol.txt), fed whole and
// byte by byte as a reader would see it across reads.

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include <doctest.h>

#include "proxy/net/proxy_protocol.h"

namespace sy::proxy {
namespace {

using Status = ProxyHeader::Status;

const std::string kV2Sig("\r\n\r\n\0\r\nQUIT\n", 12);

std::string sourceText(const ProxyHeader& h) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (h.source.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&h.source);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
    return std::string(buf) + ":" + std::to_string(ntohs(sin->sin_port));
  }
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&h.source);
  inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
  return "[" + std::string(buf) + "]:" + std::to_string(ntohs(sin6->sin6_port));
}

// A v2 header: version/command, family, the payload (addresses and TLVs).
std::string v2(uint8_t ver_cmd, uint8_t family, const std::string& payload) {
  std::string out = kV2Sig;
  out.push_back(static_cast<char>(ver_cmd));
  out.push_back(static_cast<char>(family));
  out.push_back(static_cast<char>(payload.size() >> 8));
  out.push_back(static_cast<char>(payload.size() & 0xff));
  return out + payload;
}

std::string v4Payload(const char* src, const char* dst, uint16_t sport, uint16_t dport) {
  std::string out(12, '\0');
  inet_pton(AF_INET, src, out.data());
  inet_pton(AF_INET, dst, out.data() + 4);
  out[8] = static_cast<char>(sport >> 8);
  out[9] = static_cast<char>(sport & 0xff);
  out[10] = static_cast<char>(dport >> 8);
  out[11] = static_cast<char>(dport & 0xff);
  return out;
}

std::string v6Payload(const char* src, const char* dst, uint16_t sport, uint16_t dport) {
  std::string out(36, '\0');
  inet_pton(AF_INET6, src, out.data());
  inet_pton(AF_INET6, dst, out.data() + 16);
  out[32] = static_cast<char>(sport >> 8);
  out[33] = static_cast<char>(sport & 0xff);
  out[34] = static_cast<char>(dport >> 8);
  out[35] = static_cast<char>(dport & 0xff);
  return out;
}

// Every strict prefix of a complete header is Incomplete (the reader's "all of it is header"
// rule), and the whole is the same header.
void checkPrefixesIncomplete(const std::string& header) {
  for (size_t n = 0; n < header.size(); ++n) {
    CAPTURE(n);
    CHECK(parseProxyHeader(std::string_view(header).substr(0, n)).status == Status::Incomplete);
  }
}

TEST_CASE("v1 TCP4: the source address and port; data after the header is not the header's") {
  const std::string header = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
  const std::string data = header + "GET / HTTP/1.1\r\n";
  const ProxyHeader h = parseProxyHeader(data);
  REQUIRE(h.status == Status::Complete);
  CHECK(h.version == 1);
  CHECK(h.size == header.size());
  CHECK(h.has_source);
  CHECK(sourceText(h) == "192.0.2.7:56324");
  checkPrefixesIncomplete(header);
}

TEST_CASE("v1 TCP6") {
  const ProxyHeader h = parseProxyHeader("PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n\x16\x03");
  REQUIRE(h.status == Status::Complete);
  CHECK(sourceText(h) == "[2001:db8::1]:1234");
}

TEST_CASE("v1 the longest line (107 bytes) is accepted, one more byte is too large") {
  const std::string longest =
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "65535 65535\r\n";
  REQUIRE(longest.size() == kProxyV1MaxBytes);
  const ProxyHeader h = parseProxyHeader(longest);
  CHECK(h.status == Status::Complete);
  CHECK(h.size == kProxyV1MaxBytes);
  // The longest TCP6 line is shorter.
  CHECK(parseProxyHeader("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
            .status == Status::Complete);
  const ProxyHeader over = parseProxyHeader("PROXY UNKNOWN " + std::string(100, 'x') + "\r\n");
  CHECK(over.status == Status::Error);
  CHECK(over.error == ProxyProtocolError::TooLarge);
}

TEST_CASE("v1 UNKNOWN: the real peer, whatever follows on the line") {
  for (const char* line : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"}) {
    CAPTURE(line);
    const ProxyHeader h = parseProxyHeader(std::string(line) + "rest");
    REQUIRE(h.status == Status::Complete);
    CHECK(h.size == std::string(line).size());
    CHECK_FALSE(h.has_source);
  }
}

TEST_CASE("v1 malformed lines are invalid") {
  for (const char* line : {
           "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",      // no CR
           "PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",        // a field missing
           "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 1\r\n",  // one too many
           "PROXY TCP4 192.0.2.7  198.51.100.1 56324 443\r\n",   // two spaces
           "PROXY TCP4 2001:db8::1 198.51.100.1 56324 443\r\n",  // family mismatch
           "PROXY TCP6 192.0.2.7 198.51.100.1 56324 443\r\n",
           "PROXY TCP4 192.0.2.300 198.51.100.1 56324 443\r\n",  // not an address
           "PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",    // port out of range
           "PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",
           "PROXY UDP4 192.0.2.7 198.51.100.1 56324 443\r\n",  // not a TCP protocol
           "PROXY \r\n",
       }) {
    CAPTURE(line);
    const ProxyHeader h = parseProxyHeader(line);
    CHECK(h.status == Status::Error);
    CHECK(h.error == ProxyProtocolError::Invalid);
  }
}

TEST_CASE("a connection that does not start with a signature: missing, from the first byte") {
  for (const char* start :
       {"GET / HTTP/1.1\r\n", "G", "\x16\x03\x01", "PRI * HTTP/2.0", "PROXZ", "\r\n\r\n\x01"}) {
    CAPTURE(start);
    const ProxyHeader h = parseProxyHeader(start);
    CHECK(h.status == Status::Error);
    CHECK(h.error == ProxyProtocolError::Missing);
  }
  CHECK(parseProxyHeader("").status == Status::Incomplete);
  CHECK(parseProxyHeader("PROX").status == Status::Incomplete);
}

TEST_CASE("v2 PROXY INET: the source; TLVs are skipped; data after the header is kept") {
  const std::string tlvs = std::string("\x03\x00\x04", 3) + "abcd";  // PP2_TYPE_CRC32C
  const std::string header =
      v2(0x21, 0x11, v4Payload("203.0.113.9", "10.0.0.1", 40000, 443) + tlvs);
  const ProxyHeader h = parseProxyHeader(header + "\x16\x03\x01 the TLS hello");
  REQUIRE(h.status == Status::Complete);
  CHECK(h.version == 2);
  CHECK(h.size == header.size());
  CHECK(sourceText(h) == "203.0.113.9:40000");
  checkPrefixesIncomplete(header);
}

TEST_CASE("v2 PROXY INET6") {
  const std::string header = v2(0x21, 0x21, v6Payload("2001:db8::7", "2001:db8::1", 5000, 80));
  const ProxyHeader h = parseProxyHeader(header);
  REQUIRE(h.status == Status::Complete);
  CHECK(sourceText(h) == "[2001:db8::7]:5000");
}

TEST_CASE("v2 LOCAL, UNSPEC and UNIX: the real peer") {
  SUBCASE("LOCAL with no payload (a balancer's health check)") {
    const ProxyHeader h = parseProxyHeader(v2(0x20, 0x00, ""));
    REQUIRE(h.status == Status::Complete);
    CHECK(h.size == 16);
    CHECK_FALSE(h.has_source);
  }
  SUBCASE("LOCAL ignores the addresses it carries") {
    const ProxyHeader h = parseProxyHeader(v2(0x20, 0x11, v4Payload("1.2.3.4", "5.6.7.8", 1, 2)));
    REQUIRE(h.status == Status::Complete);
    CHECK_FALSE(h.has_source);
  }
  SUBCASE("PROXY UNSPEC") {
    const ProxyHeader h = parseProxyHeader(v2(0x21, 0x00, ""));
    REQUIRE(h.status == Status::Complete);
    CHECK_FALSE(h.has_source);
  }
  SUBCASE("PROXY UNIX") {
    const ProxyHeader h = parseProxyHeader(v2(0x21, 0x31, std::string(216, '\0')));
    REQUIRE(h.status == Status::Complete);
    CHECK_FALSE(h.has_source);
  }
}

TEST_CASE("v2 invalid: version, command, family, addresses shorter than the family needs") {
  for (const std::string& header : {
           v2(0x11, 0x11, v4Payload("1.2.3.4", "5.6.7.8", 1, 2)),  // version 1
           v2(0x22, 0x11, v4Payload("1.2.3.4", "5.6.7.8", 1, 2)),  // command 2
           v2(0x21, 0x41, ""),                                     // family 4
           v2(0x21, 0x13, ""),                                     // transport 3
           v2(0x21, 0x11, std::string(11, '\0')),                  // INET needs 12
           v2(0x21, 0x21, std::string(35, '\0')),                  // INET6 needs 36
           v2(0x21, 0x31, std::string(215, '\0')),                 // UNIX needs 216
       }) {
    const ProxyHeader h = parseProxyHeader(header);
    CHECK(h.status == Status::Error);
    CHECK(h.error == ProxyProtocolError::Invalid);
  }
  // A wrong signature byte.
  std::string bad = v2(0x21, 0x11, v4Payload("1.2.3.4", "5.6.7.8", 1, 2));
  bad[8] = 'X';
  CHECK(parseProxyHeader(bad).error == ProxyProtocolError::Missing);
}

TEST_CASE("v2 a length above the bound is refused from the fixed part alone") {
  std::string header = v2(0x21, 0x11, std::string(kProxyV2MaxPayload, '\0'));
  CHECK(parseProxyHeader(header).status == Status::Complete);
  std::string fixed = kV2Sig + "\x21\x11";
  fixed.push_back(static_cast<char>((kProxyV2MaxPayload + 1) >> 8));
  fixed.push_back(static_cast<char>((kProxyV2MaxPayload + 1) & 0xff));
  const ProxyHeader h = parseProxyHeader(fixed);
  CHECK(h.status == Status::Error);
  CHECK(h.error == ProxyProtocolError::TooLarge);
}

TEST_CASE("a header split across reads is found once its last byte arrives") {
  const std::string header = v2(0x21, 0x11, v4Payload("203.0.113.9", "10.0.0.1", 40000, 443));
  std::string got;
  ProxyHeader h;
  for (char c : header + "GET") {
    got.push_back(c);
    h = parseProxyHeader(got);
    if (h.status != Status::Incomplete) break;
  }
  REQUIRE(h.status == Status::Complete);
  CHECK(got.size() == header.size());
  CHECK(sourceText(h) == "203.0.113.9:40000");
}

}  // namespace
}  // namespace sy::proxy
