#include "proxy/http/client_ip.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace sy::proxy {
namespace {

bool isMappedV4(const ClientIp& ip) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(ip.bytes.data(), kPrefix, sizeof(kPrefix)) == 0;
}

}  // namespace

std::string clientIpText(const ClientIp& ip) {
  char buf[INET6_ADDRSTRLEN];
  const char* ok = isMappedV4(ip) ? inet_ntop(AF_INET, ip.bytes.data() + 12, buf, sizeof(buf))
                                  : inet_ntop(AF_INET6, ip.bytes.data(), buf, sizeof(buf));
  return ok ? std::string(buf) : std::string();
}

ClientIp clientIpFromSockaddr(const sockaddr* sa) {
  ClientIp ip;
  if (sa == nullptr) return ip;
  if (sa->sa_family == AF_INET) {
    sockaddr_in sin;
    std::memcpy(&sin, sa, sizeof(sin));
    ip.bytes[10] = 0xff;
    ip.bytes[11] = 0xff;
    std::memcpy(ip.bytes.data() + 12, &sin.sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    sockaddr_in6 sin6;
    std::memcpy(&sin6, sa, sizeof(sin6));
    std::memcpy(ip.bytes.data(), &sin6.sin6_addr, 16);
  }
  // Other families (a Unix socket) have no address: all zeros (::).
  return ip;
}

}  // namespace sy::proxy
