#pragma once
// Data-plane error results (no exceptions on the data plane). They carry where the error came
// from and whether retrying is safe, so retry and status mapping never parse strings. Only
// DownstreamConn turns them into HTTP statuses.

#include <cstdint>

namespace sy::proxy {

enum class ErrorSource : uint8_t { Downstream, Upstream, Internal };

enum class ErrorKind : uint8_t {
  // Downstream (the client's request)
  MalformedRequest,   // 400
  HeadTooLarge,       // 431
  BodyTooLarge,       // 413
  NoRoute,            // 404
  VersionNotSupported,// 505
  // Upstream
  ConnectFailed,      // 502, retryable (nothing was sent)
  ResetBeforeResponse,// 502
  MalformedResponse,  // 502
  ResponseTimeout,    // 504
  NoHealthyServer,    // 503
};

struct ProxyError {
  ErrorSource source;
  ErrorKind kind;
  bool retryable = false;  // safe to retry on another server: nothing reached the upstream
};

// The SPEC §4 status for an error, and its short plain-text reason.
int statusFor(ErrorKind kind);
const char* messageFor(ErrorKind kind);
// The upstream_errors_total{kind} label for upstream errors ("connect", "timeout", ...).
const char* metricKindFor(ErrorKind kind);

}  // namespace sy::proxy
