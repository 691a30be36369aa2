// Route matching (SPEC §4.1): host first because it is a cheap comparison and rejects most
// routes of a multi-host config before any regex runs.

#include "proxy/routing/router.h"

#include "proxy/http/http_message.h"

namespace sy::proxy {
namespace {

bool endsWithIgnoreCase(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && equalsIgnoreCase(s.substr(s.size() - suffix.size()), suffix);
}

bool hostMatches(const config::Route& route, std::string_view host) {
  if (route.host.empty()) return true;
  if (!route.host_wildcard) return equalsIgnoreCase(host, route.host);
  // Wildcard routes hold ".suffix"; tolerate "*.suffix" too so a differently normalised
  // snapshot cannot silently stop matching.
  std::string_view suffix(route.host);
  if (suffix.front() == '*') suffix.remove_prefix(1);
  // "*.example.com" needs at least one character before ".example.com": the bare domain
  // "example.com" is not covered, as with TLS wildcard certificates and nginx server_name.
  return host.size() > suffix.size() && endsWithIgnoreCase(host, suffix);
}

}  // namespace

std::string_view hostWithoutPort(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    // "[v6]" or "[v6]:port": keep the brackets so the result is still unambiguous.
    const size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  const size_t colon = host.find(':');
  // A second colon means a bare IPv6 literal (not valid in Host, but not ours to reject):
  // there is no port to strip.
  if (colon == std::string_view::npos || host.find(':', colon + 1) != std::string_view::npos) {
    return host;
  }
  return host.substr(0, colon);
}

const config::Route* matchRoute(const config::Snapshot& snapshot, std::string_view host,
                                std::string_view path) {
  std::string_view name = hostWithoutPort(host);
  // "example.com." is the same name as "example.com" (absolute form); nginx strips the dot too.
  if (name.size() > 1 && name.back() == '.') name.remove_suffix(1);
  // The contract is a path without query; strip one anyway so a "?" can never be matched.
  if (const size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);

  for (const config::Route& route : snapshot.routes) {
    if (!hostMatches(route, name)) continue;
    if (route.path && !RE2::PartialMatch(path, *route.path)) continue;
    return &route;
  }
  return nullptr;
}

}  // namespace sy::proxy
