#include "proxy/net/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace sy::proxy {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::string_view kV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};

bool startsLike(std::string_view data, std::string_view prefix) {
  const size_t n = std::min(data.size(), prefix.size());
  return data.substr(0, n) == prefix.substr(0, n);
}

ProxyHeader error(ProxyProtocolError why, uint8_t version) {
  ProxyHeader h;
  h.status = ProxyHeader::Status::Error;
  h.error = why;
  h.version = version;
  return h;
}

// A decimal port 0..65535 (the spec's form: no sign, at most 5 digits).
bool parsePort(std::string_view text, uint16_t* port) {
  if (text.empty() || text.size() > 5) return false;
  uint32_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  if (n > 65535) return false;
  *port = static_cast<uint16_t>(n);
  return true;
}

// inet_pton wants a terminated string; v1 addresses are at most 39 characters.
bool parseAddress(int family, std::string_view text, void* out) {
  char buf[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof(buf)) return false;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  return inet_pton(family, buf, out) == 1;
}

void setV4(ProxyHeader& h, const void* addr, uint16_t port_host_order) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  std::memcpy(&sin.sin_addr, addr, 4);
  sin.sin_port = htons(port_host_order);
  std::memcpy(&h.source, &sin, sizeof(sin));
  h.has_source = true;
}

void setV6(ProxyHeader& h, const void* addr, uint16_t port_host_order) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  std::memcpy(&sin6.sin6_addr, addr, 16);
  sin6.sin6_port = htons(port_host_order);
  std::memcpy(&h.source, &sin6, sizeof(sin6));
  h.has_source = true;
}

ProxyHeader parseV1(std::string_view data) {
  const size_t lf = data.substr(0, kProxyV1MaxBytes).find('\n');
  if (lf == std::string_view::npos) {
    if (data.size() >= kProxyV1MaxBytes) return error(ProxyProtocolError::TooLarge, 1);
    ProxyHeader h;  // Incomplete
    h.version = 1;
    return h;
  }
  if (lf == 0 || data[lf - 1] != '\r') return error(ProxyProtocolError::Invalid, 1);
  std::string_view line = data.substr(kV1Prefix.size(), lf - 1 - kV1Prefix.size());
  // Fields are separated by exactly one space (the spec's grammar).
  std::array<std::string_view, 5> fields;
  size_t count = 0;
  while (true) {
    const size_t space = line.find(' ');
    const std::string_view field = line.substr(0, space);
    if (count == fields.size()) return error(ProxyProtocolError::Invalid, 1);
    fields[count++] = field;
    if (space == std::string_view::npos) break;
    line.remove_prefix(space + 1);
    if (fields[0] == "UNKNOWN") break;  // the rest of the line is ignored
  }
  ProxyHeader h;
  h.status = ProxyHeader::Status::Complete;
  h.size = lf + 1;
  h.version = 1;
  if (fields[0] == "UNKNOWN") return h;
  const bool v4 = fields[0] == "TCP4";
  if ((!v4 && fields[0] != "TCP6") || count != 5) return error(ProxyProtocolError::Invalid, 1);
  const int family = v4 ? AF_INET : AF_INET6;
  uint8_t src[16];
  uint8_t dst[16];
  uint16_t sport = 0;
  uint16_t dport = 0;
  if (!parseAddress(family, fields[1], src) || !parseAddress(family, fields[2], dst) ||
      !parsePort(fields[3], &sport) || !parsePort(fields[4], &dport)) {
    return error(ProxyProtocolError::Invalid, 1);
  }
  if (v4) {
    setV4(h, src, sport);
  } else {
    setV6(h, src, sport);
  }
  return h;
}

uint16_t bigEndian16(const char* p) {
  return static_cast<uint16_t>((static_cast<uint8_t>(p[0]) << 8) | static_cast<uint8_t>(p[1]));
}

ProxyHeader parseV2(std::string_view data) {
  ProxyHeader h;  // Incomplete until the length is known and its bytes are here
  h.version = 2;
  if (data.size() < kProxyV2HeaderBytes) return h;
  const uint8_t ver_cmd = static_cast<uint8_t>(data[12]);
  const uint8_t family = static_cast<uint8_t>(data[13]);
  const size_t length = bigEndian16(data.data() + 14);
  if ((ver_cmd >> 4) != 2) return error(ProxyProtocolError::Invalid, 2);
  const uint8_t command = ver_cmd & 0x0f;  // 0 LOCAL, 1 PROXY
  if (command > 1) return error(ProxyProtocolError::Invalid, 2);
  const uint8_t af = family >> 4;           // 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX
  const uint8_t transport = family & 0x0f;  // 0 UNSPEC, 1 STREAM, 2 DGRAM
  if (af > 3 || transport > 2) return error(ProxyProtocolError::Invalid, 2);
  if (length > kProxyV2MaxPayload) return error(ProxyProtocolError::TooLarge, 2);
  if (data.size() < kProxyV2HeaderBytes + length) return h;
  h.status = ProxyHeader::Status::Complete;
  h.size = kProxyV2HeaderBytes + length;
  if (command == 0) return h;  // LOCAL: the balancer's own connection; addresses ignored
  const char* addr = data.data() + kProxyV2HeaderBytes;
  switch (af) {
    case 1:  // src 4, dst 4, sport 2, dport 2
      if (length < 12) return error(ProxyProtocolError::Invalid, 2);
      setV4(h, addr, bigEndian16(addr + 8));
      break;
    case 2:  // src 16, dst 16, sport 2, dport 2
      if (length < 36) return error(ProxyProtocolError::Invalid, 2);
      setV6(h, addr, bigEndian16(addr + 32));
      break;
    case 3:  // src 108, dst 108: a Unix socket has no address to route by
      if (length < 216) return error(ProxyProtocolError::Invalid, 2);
      break;
    default:  // UNSPEC: the spec lets the receiver use the real peer
      break;
  }
  return h;
}

}  // namespace

ProxyHeader parseProxyHeader(std::string_view data) {
  if (data.empty()) return {};
  if (data[0] == kV1Prefix[0]) {
    if (!startsLike(data, kV1Prefix)) return error(ProxyProtocolError::Missing, 0);
    if (data.size() < kV1Prefix.size()) return {};
    return parseV1(data);
  }
  if (!startsLike(data, kV2Signature)) return error(ProxyProtocolError::Missing, 0);
  if (data.size() < kV2Signature.size()) return {};
  return parseV2(data);
}

}  // namespace sy::proxy
