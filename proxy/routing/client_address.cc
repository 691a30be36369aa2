#include "proxy/routing/client_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "common/ascii.h"

namespace sy::proxy {
namespace {

bool cidrContains(const config::Cidr& net, const ClientIp& ip) {
  const unsigned bits = net.prefix_len > 128 ? 128u : net.prefix_len;
  const unsigned whole = bits / 8;
  if (std::memcmp(net.addr.data(), ip.bytes.data(), whole) != 0) return false;
  const unsigned rest = bits % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (net.addr[whole] & mask) == (ip.bytes[whole] & mask);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool allDigits(std::string_view s) {
  if (s.empty() || s.size() > 5) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// inet_pton wants a terminated string.
bool pton(int family, std::string_view text, void* out) {
  char buf[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof(buf)) return false;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  return inet_pton(family, buf, out) == 1;
}

// Walks one field's elements right to left. Returns false when the walk is over (`client` is
// decided), true to go on with the field left of this one.
bool walkField(std::string_view field, const std::vector<config::Cidr>& trusted, ClientIp& client) {
  while (true) {
    const size_t comma = field.rfind(',');
    const std::string_view element =
        trim(comma == std::string_view::npos ? field : field.substr(comma + 1));
    if (!element.empty()) {
      const std::optional<ClientIp> ip = parseForwardedAddress(element);
      if (!ip) return false;  // broken: the last good address stays the client
      client = *ip;
      if (!inNetworks(trusted, *ip)) return false;
    }
    if (comma == std::string_view::npos) return true;
    field = field.substr(0, comma);
  }
}

}  // namespace

bool inNetworks(const std::vector<config::Cidr>& networks, const ClientIp& ip) {
  for (const config::Cidr& net : networks) {
    if (cidrContains(net, ip)) return true;
  }
  return false;
}

std::optional<ClientIp> parseForwardedAddress(std::string_view element) {
  ClientIp ip;
  if (!element.empty() && element.front() == '[') {
    const size_t close = element.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view rest = element.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !allDigits(rest.substr(1)))) return std::nullopt;
    if (!pton(AF_INET6, element.substr(1, close - 1), ip.bytes.data())) return std::nullopt;
    return ip;
  }
  if (pton(AF_INET6, element, ip.bytes.data())) return ip;
  // IPv4, or IPv4:port.
  const size_t colon = element.find(':');
  if (colon != std::string_view::npos && !allDigits(element.substr(colon + 1))) {
    return std::nullopt;
  }
  ip.bytes[10] = 0xff;
  ip.bytes[11] = 0xff;
  if (!pton(AF_INET, element.substr(0, colon), ip.bytes.data() + 12)) return std::nullopt;
  return ip;
}

ClientIp requestClient(const ClientIp& peer, const Headers& headers,
                       const std::vector<config::Cidr>& trusted) {
  if (trusted.empty() || !inNetworks(trusted, peer)) return peer;
  ClientIp client = peer;
  // Fields right to left (the last one is the nearest hop's), each walked right to left.
  for (auto it = headers.rbegin(); it != headers.rend(); ++it) {
    if (!equalsIgnoreCase(it->name, "x-forwarded-for")) continue;
    if (!walkField(it->value, trusted, client)) return client;
  }
  return client;  // every address trusted: the left-most
}

}  // namespace sy::proxy
