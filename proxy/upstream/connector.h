#pragma once
// The one place upstream connections are made: plain TCP, or TLS with SNI and certificate
// verification (the pool's `sni`, else the host part of the address; an IP literal is
// verified against the certificate's IP SAN and sends no SNI, RFC 6066). Pools and the
// health checker both use it, so a health check connects exactly as a request does.
//
// Thread: the thread owning `base`.

#include <cstdint>
#include <memory>
#include <string>

#include "config/snapshot.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/net/transport.h"

namespace sy::proxy {

// A pool's TLS settings, as a connection needs them.
struct UpstreamTls {
  std::shared_ptr<SSL_CTX> ctx;  // null: plain TCP
  bool verify = true;
  std::string sni;  // "" = the host part of the server address
  explicit operator bool() const { return ctx != nullptr; }
};
UpstreamTls upstreamTls(const config::Pool& pool);

// A TLS client bufferevent (not yet connected, fd -1) set up for `address`. Null on failure.
BufferEventPtr newTlsBufferEvent(event_base* base, const UpstreamTls& tls,
                                 const config::SocketAddress& address);

// Starts a connect to `address`: its outcome is a transport event (CONNECTED, or ERROR, or a
// write timeout after connect_timeout_ms). Null if no socket could be made.
std::unique_ptr<Transport> connectUpstream(event_base* base, const config::SocketAddress& address,
                                           const UpstreamTls& tls, uint32_t connect_timeout_ms);

}  // namespace sy::proxy
