#include "proxy/upstream/connector.h"

#include <arpa/inet.h>

#include <event2/bufferevent_ssl.h>

#include "config/openssl_ptr.h"

namespace sy::proxy {

UpstreamTls upstreamTls(const config::Pool& pool) {
  UpstreamTls t;
  if (pool.tls) t.ctx = pool.tls_ctx;
  t.verify = pool.tls_verify;
  t.sni = pool.sni;
  return t;
}

BufferEventPtr newTlsBufferEvent(event_base* base, const UpstreamTls& tls,
                                 const config::SocketAddress& address) {
  config::SslPtr ssl(SSL_new(tls.ctx.get()));
  if (!ssl) return nullptr;
  // The name to send as SNI and to verify: `sni`, else the host part of "host:port".
  std::string name = tls.sni;
  if (name.empty()) {
    name = address.text.substr(0, address.text.rfind(':'));
    if (name.size() >= 2 && name.front() == '[') name = name.substr(1, name.size() - 2);
  }
  in6_addr ignored6;
  in_addr ignored4;
  const bool ip_literal = inet_pton(AF_INET, name.c_str(), &ignored4) == 1 ||
                          inet_pton(AF_INET6, name.c_str(), &ignored6) == 1;
  if (ip_literal) {
    // RFC 6066: no SNI for addresses; verify the certificate's IP SAN instead.
    if (tls.verify) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), name.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl.get(), name.c_str());
    if (tls.verify) SSL_set1_host(ssl.get(), name.c_str());
  }
  BufferEventPtr bev(bufferevent_openssl_socket_new(base, -1, ssl.get(), BUFFEREVENT_SSL_CONNECTING,
                                                    BEV_OPT_CLOSE_ON_FREE));
  if (!bev) return nullptr;
  ssl.release();  // the bufferevent owns the SSL from here (BEV_OPT_CLOSE_ON_FREE)
  bufferevent_openssl_set_allow_dirty_shutdown(bev.get(), 1);
  return bev;
}

std::unique_ptr<Transport> connectUpstream(event_base* base, const config::SocketAddress& address,
                                           const UpstreamTls& tls, uint32_t connect_timeout_ms) {
  const auto* addr = reinterpret_cast<const sockaddr*>(&address.addr);
  if (!tls) return PlainTransport::connect(base, addr, address.len, connect_timeout_ms);
  BufferEventPtr bev = newTlsBufferEvent(base, tls, address);
  if (!bev) return nullptr;
  auto transport = std::make_unique<TlsTransport>(std::move(bev));
  transport->connect(addr, address.len, connect_timeout_ms);
  return transport;
}

}  // namespace sy::proxy
