#pragma once
// Data-plane error results (no exceptions on the data plane). They carry where the error came
// from and whether retrying is safe, so retry and status mapping never parse strings. Only
// the Exchange turns them into HTTP statuses (as a LocalReply).

#include <cstdint>

namespace sy::proxy {

enum class ErrorSource : uint8_t { Downstream, Upstream };

enum class ErrorKind : uint8_t {
  // Downstream (the client's request)
  MalformedRequest,      // 400
  HeadTimeout,           // 408: the head did not arrive within client_header_ms
  HeadTooLarge,          // 431
  BodyTooLarge,          // 413
  NoRoute,               // 404
  VersionNotSupported,   // 505
  MethodNotImplemented,  // 501: CONNECT (no tunnels), a method the HTTP/1.1 hop cannot carry
  // Upstream
  ConnectFailed,        // 502, retryable (nothing was sent)
  ResetBeforeResponse,  // 502
  MalformedResponse,    // 502
  ResponseTimeout,      // 504
  NoHealthyServer,      // 503
};

struct ProxyError {
  ErrorSource source;
  ErrorKind kind;
  bool retryable = false;  // safe to retry on another server: nothing reached the upstream
};

// The SPEC §4 status for an error, and its short plain-text reason.
int statusFor(ErrorKind kind);
const char* messageFor(ErrorKind kind);

}  // namespace sy::proxy
