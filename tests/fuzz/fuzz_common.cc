#include "tests/fuzz/fuzz_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sy::fuzz {

std::optional<std::string> fakeResolve(const config::HostPort& address,
                                       std::vector<config::SocketAddress>& out) {
  config::SocketAddress sa;
  sa.text = address.text;
  std::string_view host = address.host;
  if (host.size() >= 8 && host.substr(host.size() - 8) == ".invalid") {
    return std::string("Name or service not known (fuzz resolver)");
  }
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(address.port);
  if (inet_pton(AF_INET6, address.host.c_str(), &v6.sin6_addr) == 1) {
    std::memcpy(&sa.addr, &v6, sizeof v6);
    sa.len = sizeof v6;
  } else {
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    v4.sin_port = htons(address.port);
    if (inet_pton(AF_INET, address.host.c_str(), &v4.sin_addr) != 1) {
      v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    std::memcpy(&sa.addr, &v4, sizeof v4);
    sa.len = sizeof v4;
  }
  out.push_back(std::move(sa));
  return std::nullopt;
}

std::string printable(std::string_view s, size_t limit) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n\n";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > limit) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

void fail(std::string_view what, std::string_view detail) {
  std::fprintf(stderr, "\n==== fuzz invariant broken: %.*s\n%.*s\n====\n",
               static_cast<int>(what.size()), what.data(), static_cast<int>(detail.size()),
               detail.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace sy::fuzz
