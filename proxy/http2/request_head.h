#pragma once
// The parts of Http2Connection without I/O, shared with tests/fuzz/fuzz_request.cc (its HTTP/2
// mode): how a stream's header list becomes the RequestHead and framing its exchange gets, and
// how the nghttp2 server session is configured.

#include <cstdint>
#include <string>
#include <string_view>

#include "config/snapshot.h"
#include "proxy/http/http_message.h"
#include "proxy/http/server_exchange.h"

struct nghttp2_session;
struct nghttp2_session_callbacks;

namespace sy::proxy {

// One stream's request header list as nghttp2 delivers it (after its HTTP messaging checks:
// pseudo-headers, lower-case names, connection-specific fields).
class Http2RequestHeaders {
 public:
  explicit Http2RequestHeaders(uint64_t max_header_list_bytes) : max_bytes_(max_header_list_bytes) {
    head_.http_major = 2;
    head_.http_minor = 0;
  }

  // One field (nghttp2's on_header callback). Past max_header_list_bytes (counted as RFC 9113
  // §6.5.2 does) nothing more is kept and the head is HeadTooLarge.
  void add(std::string_view name, std::string_view value);

  enum class Verdict {
    Forward,         // head() and `framing` go to the exchange (decodeHead)
    TooLarge,        // the exchange answers 431 (decodeError HeadTooLarge)
    NotImplemented,  // the exchange answers 501: CONNECT, or a method HTTP/1.1 clients cannot
                     // send either (isKnownMethod)
    Refuse,          // RST_STREAM(PROTOCOL_ERROR): a malformed content-length
  };
  // The header block ended (END_HEADERS): crumbs joined, :authority made the Host, the framing
  // chosen (Content-Length, else none at END_STREAM, else chunked). Call once.
  Verdict complete(bool end_stream, RequestFraming& framing);

  // One field of the trailer section (a HEADERS frame after the head's, ending the stream;
  // nghttp2 has refused pseudo-headers and upper-case names). The section is bounded by
  // max_header_list_bytes on its own, counted as the head is: past it nothing more is kept
  // and trailersTooLarge().
  void addTrailer(std::string_view name, std::string_view value);

  RequestHead& head() { return head_; }
  const RequestHead& head() const { return head_; }
  const Headers& trailers() const { return trailers_; }
  bool trailersTooLarge() const { return trailers_too_large_; }

 private:
  RequestHead head_;
  Headers trailers_;
  std::string cookie_;     // the cookie crumbs, joined with "; "
  std::string authority_;  // :authority
  uint64_t max_bytes_;
  uint64_t bytes_ = 0;  // the header list's size as RFC 9113 §6.5.2 counts it
  bool too_large_ = false;
  uint64_t trailer_bytes_ = 0;
  bool trailers_too_large_ = false;
};

// A server session as the proxy runs it: windows reopened by hand (no automatic
// WINDOW_UPDATE), nghttp2's own flood bounds set explicitly (see server_connection.cc), the
// CONTINUATION bound derived from max_header_list_bytes. Null when nghttp2 cannot allocate.
nghttp2_session* newHttp2ServerSession(const nghttp2_session_callbacks* callbacks, void* user_data,
                                       uint64_t max_header_list_bytes);

// Queues the server's SETTINGS and its connection-level window (the start of the connection).
void submitHttp2ServerSettings(nghttp2_session* session, const config::Http2Settings& h2);

// Announced as SETTINGS_HEADER_TABLE_SIZE, and the most our deflater uses.
inline constexpr uint32_t kHttp2HpackTableBytes = 4096;

}  // namespace sy::proxy
