#pragma once
// TLS contexts compiled into the snapshot: built once per (re)load on the main thread, then
// shared read-only by every worker (SSL_CTX is safe for concurrent SSL_new).
//
// Downstream: TLS 1.2 and 1.3 only, a modern cipher list with server preference, ALPN
// h2 (with `http2`, preferred) and http/1.1, SNI choosing among the listener's certificates (exact
// names, then "*.suffix" wildcards, then the listener's default). Session tickets use OpenSSL's
// per-context random keys, so every reload rotates them. Upstream: TLS 1.2+, peer verification
// against ca_file (or the system store) with hostname (or IP) checks, SNI from `sni` or the host
// part of the server address.
//
// Thread: building: main. Using: any.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/openssl_ptr.h"

namespace sy::config {

struct TlsCertificate;

class ServerTls {
 public:
  // The context for a ClientHello naming `servername` ("" = no SNI): never null.
  SSL_CTX* select(std::string_view servername) const;
  SSL_CTX* defaultContext() const { return default_ctx_.get(); }

 private:
  friend std::optional<std::string> buildServerTls(const TlsCertificate&,
                                                   const std::vector<TlsCertificate>&, bool,
                                                   std::shared_ptr<const ServerTls>&, size_t*);
  SslCtxShared default_ctx_;
  // Lower-case names: "shop.example.com", or ".shop.example.com" for "*.shop.example.com".
  std::vector<std::pair<std::string, SslCtxShared>> by_name_;
};

// Builds the contexts of one listener; with `http2` ALPN offers h2 before http/1.1. On failure
// returns the reason (OpenSSL's, with the file named) and sets *failed_sni to the index of the
// failing SNI certificate, or to SIZE_MAX when the default certificate failed.
std::optional<std::string> buildServerTls(const TlsCertificate& default_cert,
                                          const std::vector<TlsCertificate>& sni, bool http2,
                                          std::shared_ptr<const ServerTls>& out,
                                          size_t* failed_sni);

// The client context of a pool with tls = true.
std::optional<std::string> buildClientTls(bool verify, const std::string& ca_file,
                                          SslCtxShared& out);

// The last OpenSSL error as text ("" when none), clearing the error queue.
std::string lastOpenSslError();

}  // namespace sy::config
