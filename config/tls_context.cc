#include "config/tls_context.h"

#include <openssl/err.h>

#include <cstdint>

#include "common/ascii.h"
#include "config/snapshot.h"

namespace sy::config {
namespace {

// Mozilla's "intermediate" TLS 1.2 suites (forward secrecy, AEAD only); TLS 1.3 keeps
// OpenSSL's defaults.
constexpr const char* kCiphers12 =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// ALPN offers in preference order (the server's order wins: h2 whenever the client offers it).
constexpr unsigned char kOfferH2[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kOfferH1[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

// `arg`: non-null when the listener speaks HTTP/2.
int selectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void* arg) {
  const bool h2 = arg != nullptr;
  const unsigned char* offer = h2 ? kOfferH2 : kOfferH1;
  const unsigned int offer_len = h2 ? sizeof(kOfferH2) : sizeof(kOfferH1);
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, offer, offer_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no ALPN in the answer; the client may still speak 1.1
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// The host name of a ClientHello's server_name extension (RFC 6066 §3), or "" when absent.
std::string_view clientHelloServerName(SSL* ssl) {
  const unsigned char* p = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) != 1 || len < 5) {
    return {};
  }
  const size_t list_len = (static_cast<size_t>(p[0]) << 8) | p[1];
  if (list_len + 2 != len || p[2] != TLSEXT_NAMETYPE_host_name) return {};
  const size_t name_len = (static_cast<size_t>(p[3]) << 8) | p[4];
  if (name_len + 5 > len) return {};
  return std::string_view(reinterpret_cast<const char*>(p + 5), name_len);
}

// Chooses the certificate from the ClientHello, before OpenSSL decides on resuming a session:
// switching later (in the servername callback) would let a session made for one name resume
// under another and skip that name's certificate.
int onClientHello(SSL* ssl, int*, void* arg) {
  const std::string_view name = clientHelloServerName(ssl);
  if (name.empty()) return SSL_CLIENT_HELLO_SUCCESS;
  SSL_CTX* chosen = static_cast<const ServerTls*>(arg)->select(name);
  if (chosen != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen);
  return SSL_CLIENT_HELLO_SUCCESS;
}

std::optional<std::string> makeServerContext(const TlsCertificate& cert, std::string_view sid,
                                             bool http2, SslCtxPtr& out) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) return "cannot create a TLS context: " + lastOpenSslError();
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  // IGNORE_UNEXPECTED_EOF: clients that close without close_notify are the norm; HTTP's own
  // framing tells a truncated message from a complete one.
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                     SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_cipher_list(ctx.get(), kCiphers12);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  // (Any non-null argument means h2; the callback never dereferences it.)
  SSL_CTX_set_alpn_select_cb(ctx.get(), &selectAlpn,
                             http2 ? const_cast<unsigned char*>(kOfferH2) : nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_SERVER);
  // A session belongs to the certificate it was made with: resuming it under another SNI name
  // would skip that name's certificate. Distinct ids make OpenSSL refuse such a resumption.
  SSL_CTX_set_session_id_context(ctx.get(), reinterpret_cast<const unsigned char*>(sid.data()),
                                 static_cast<unsigned int>(sid.size()));
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.cert_file.c_str()) != 1) {
    return cert.cert_file + ": cannot load certificate: " + lastOpenSslError();
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), cert.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return cert.key_file + ": cannot load private key: " + lastOpenSslError();
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    return cert.key_file + ": private key does not match " + cert.cert_file;
  }
  out = std::move(ctx);
  return std::nullopt;
}

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::string lastOpenSslError() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

SSL_CTX* ServerTls::select(std::string_view servername) const {
  const std::string name = asciiLowered(servername);
  for (const auto& [pattern, ctx] : by_name_) {
    if (pattern[0] != '.' && pattern == name) return ctx.get();
  }
  for (const auto& [pattern, ctx] : by_name_) {
    // "*.shop.example.com" covers one or more labels before the suffix, not the suffix itself.
    if (pattern[0] == '.' && name.size() > pattern.size() && endsWith(name, pattern)) {
      return ctx.get();
    }
  }
  return default_ctx_.get();
}

std::optional<std::string> buildServerTls(const TlsCertificate& default_cert,
                                          const std::vector<TlsCertificate>& sni, bool http2,
                                          std::shared_ptr<const ServerTls>& out,
                                          size_t* failed_sni) {
  auto tls = std::make_shared<ServerTls>();
  SslCtxPtr ctx;
  if (auto error = makeServerContext(default_cert, "sy-default", http2, ctx)) {
    *failed_sni = SIZE_MAX;
    return error;
  }
  tls->default_ctx_ = shareSslCtx(std::move(ctx));
  for (size_t i = 0; i < sni.size(); ++i) {
    SslCtxPtr sni_ctx;
    if (auto error = makeServerContext(sni[i], "sy-sni-" + std::to_string(i), http2, sni_ctx)) {
      *failed_sni = i;
      return error;
    }
    SslCtxShared shared = shareSslCtx(std::move(sni_ctx));
    for (const std::string& name : sni[i].names) {
      tls->by_name_.emplace_back(name.rfind("*.", 0) == 0 ? name.substr(1) : name, shared);
    }
  }
  // The callback runs on the context the handshake starts with: the default one. Its argument
  // lives as long as the snapshot, which every TLS connection holds while it lives.
  SSL_CTX_set_client_hello_cb(tls->default_ctx_.get(), &onClientHello, tls.get());
  out = std::move(tls);
  return std::nullopt;
}

std::optional<std::string> buildClientTls(bool verify, const std::string& ca_file,
                                          SslCtxShared& out) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return "cannot create a TLS context: " + lastOpenSslError();
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  // IGNORE_UNEXPECTED_EOF: many servers end a close-delimited body with a bare TCP close;
  // OpenSSL 3 would call that an error, libevent would then report an error instead of EOF.
  SSL_CTX_set_options(
      ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  if (verify) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    const int ok = ca_file.empty()
                       ? SSL_CTX_set_default_verify_paths(ctx.get())
                       : SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr);
    if (ok != 1) return ca_file + ": cannot load CA certificates: " + lastOpenSslError();
  } else {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  }
  out = shareSslCtx(std::move(ctx));
  return std::nullopt;
}

}  // namespace sy::config
