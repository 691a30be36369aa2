#pragma once
// The one place that names OpenSSL's free functions: every OpenSSL handle is held by one of
// these aliases. It lives in config/ (not proxy/) because the snapshot owns the SSL_CTXs and
// config/ never includes proxy/; proxy/ uses it too.

#include <memory>

#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace sy::config {

template <auto Fn>
struct OpenSslDeleter {
  template <class T>
  void operator()(T* p) const {
    Fn(p);
  }
};

using SslPtr = std::unique_ptr<SSL, OpenSslDeleter<&SSL_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, OpenSslDeleter<&SSL_CTX_free>>;
// Contexts are shared: by the per-address copies of a listener and by connections that
// outlive a reload.
using SslCtxShared = std::shared_ptr<SSL_CTX>;
inline SslCtxShared shareSslCtx(SslCtxPtr ctx) {
  return SslCtxShared(ctx.release(), OpenSslDeleter<&SSL_CTX_free>{});
}

}  // namespace sy::config
