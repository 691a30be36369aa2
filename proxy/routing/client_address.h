#pragma once
// The request's client address behind load balancers (SPEC §13 server.trusted_proxies).
//
// A connection has one address: its TCP peer, or the source a PROXY protocol header named
// (proxy/net/proxy_protocol.h). When that address is in trusted_proxies, the request's client
// is taken from X-Forwarded-For: all its fields joined in order as one list (RFC 9110 §5.3),
// walked from the right, skipping trusted addresses; the first untrusted one is the client.
//   - Every address trusted: the left-most (the farthest hop anyone vouches for).
//   - An element that is not an address ("unknown", a name, garbage): the walk stops and the
//     last good address seen is the client (the trusted hop right of it, or the peer). What is
//     left of a broken element cannot be attributed to anyone, and taking it would let a client
//     hide behind a malformed value.
//   - Empty elements (", ,") are skipped, as RFC 9110 §5.6.1 asks of list recipients.
// Elements may be IPv4, IPv6, "[IPv6]", "[IPv6]:port" or "IPv4:port" (some balancers add the
// port). From a peer not in the list X-Forwarded-For is never believed: anyone can send one.
//
// Thread: any (pure functions).

#include <optional>
#include <string_view>
#include <vector>

#include "config/snapshot.h"
#include "proxy/http/client_ip.h"
#include "proxy/http/http_message.h"

namespace sy::proxy {

// Whether `ip` is in one of `networks`.
bool inNetworks(const std::vector<config::Cidr>& networks, const ClientIp& ip);

// One X-Forwarded-For element (already trimmed), or nullopt when it is not an address.
std::optional<ClientIp> parseForwardedAddress(std::string_view element);

// The request's client: `peer` itself unless it is in `trusted` (see above).
ClientIp requestClient(const ClientIp& peer, const Headers& headers,
                       const std::vector<config::Cidr>& trusted);

}  // namespace sy::proxy
