#pragma once
// A response the proxy makes itself (an error status, SPEC §4): what the exchange decides,
// independent of the HTTP version. The server connection encodes it (HTTP/1: a small
// text/plain response, with "Connection: close" when `close`).
//
// Thread: any (a plain value; the views must outlive the encode call).

#include <string_view>

namespace sy::proxy {

struct LocalReply {
  int status = 500;
  std::string_view message;     // the body, a short plain-text reason (a newline is added)
  std::string_view request_id;  // X-Request-Id to send back; "" when the client sent its own
  // The request's framing can no longer be trusted (a malformed or oversized request): the
  // connection must not be reused after this reply.
  bool close = false;
};

}  // namespace sy::proxy
