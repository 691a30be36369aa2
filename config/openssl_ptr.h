#pragma once
// The one place that names OpenSSL's free functions: every OpenSSL handle is held by one of
// these aliases. It lives in config/ because the snapshot owns the SSL_CTXs; proxy/ uses it too.

#include <memory>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/c_deleter.h"

namespace sy::config {

using SslPtr = std::unique_ptr<SSL, CDeleter<&SSL_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, CDeleter<&SSL_CTX_free>>;
// Contexts are shared: by the per-address copies of a listener and by connections that
// outlive a reload.
using SslCtxShared = std::shared_ptr<SSL_CTX>;
inline SslCtxShared shareSslCtx(SslCtxPtr ctx) {
  return SslCtxShared(ctx.release(), CDeleter<&SSL_CTX_free>{});
}

}  // namespace sy::config
