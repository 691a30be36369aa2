#pragma once
// The client's address in one form for routing (client_ip overrides, fallback = "client_ip"),
// X-Forwarded-For and the access log.
//
// Thread: any (pure functions).

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>

namespace sy::proxy {

// A client address in 16-byte form; IPv4 is IPv4-mapped (::ffff:a.b.c.d), matching
// config::Cidr.
struct ClientIp {
  std::array<uint8_t, 16> bytes{};
};
ClientIp clientIpFromSockaddr(const sockaddr* sa);
// The address as text: dotted quad for IPv4 (mapped or not), RFC 5952 form for IPv6.
std::string clientIpText(const ClientIp& ip);

}  // namespace sy::proxy
