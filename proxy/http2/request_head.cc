#include "proxy/http2/request_head.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <charconv>

#include "common/ascii.h"
#include "proxy/http1/http_codec.h"

namespace sy::proxy {
namespace {

// RFC 9113 §6.5.2: SETTINGS_INITIAL_WINDOW_SIZE at most 2^31-1.
constexpr uint64_t kMaxWindow = 0x7fffffff;
// The connection-level receive window (consumed at once, see server_connection.h): room for
// this many streams' windows in flight.
constexpr uint64_t kConnectionWindowStreams = 16;
// nghttp2's own bounds (the reasons are at the top of server_connection.cc).
constexpr size_t kMaxOutboundAck = 1000;  // nghttp2's defaults, set explicitly
constexpr size_t kMaxSettingsEntries = 32;
constexpr uint64_t kNghttp2ResetBurst = 1000;
constexpr uint64_t kNghttp2ResetRate = 33;
constexpr size_t kMinContinuations = 8;
// nghttp2 1.52 counts a CONTINUATION once per read its frame header spans (see the top of
// server_connection.cc): room for each header to straddle one read boundary.
constexpr size_t kContinuationsPerFrame = 2;
constexpr uint64_t kDefaultMaxFrameBytes = 16384;  // SETTINGS_MAX_FRAME_SIZE, not raised

}  // namespace

void Http2RequestHeaders::add(std::string_view name, std::string_view value) {
  bytes_ += name.size() + value.size() + 32;
  if (bytes_ > max_bytes_) too_large_ = true;
  if (too_large_) return;  // answered 431 when the head is complete
  if (!name.empty() && name[0] == ':') {
    if (name == ":method") {
      head_.method.assign(value);
    } else if (name == ":path") {
      head_.target.assign(value);
    } else if (name == ":authority") {
      authority_.assign(value);
    }
    // :scheme is not passed on: X-Forwarded-Proto says how the client reached us.
    return;
  }
  if (name == "cookie") {
    // RFC 9113 §8.2.3: crumbs are joined with "; " for an HTTP/1.1 hop.
    if (!cookie_.empty()) cookie_.append("; ");
    cookie_.append(value);
    return;
  }
  head_.headers.push_back(Header{std::string(name), std::string(value)});
}

void Http2RequestHeaders::addTrailer(std::string_view name, std::string_view value) {
  trailer_bytes_ += name.size() + value.size() + 32;
  if (trailer_bytes_ > max_bytes_) trailers_too_large_ = true;
  if (trailers_too_large_) return;
  trailers_.push_back(Header{std::string(name), std::string(value)});
}

Http2RequestHeaders::Verdict Http2RequestHeaders::complete(bool end_stream,
                                                           RequestFraming& framing) {
  RequestHead& head = head_;
  if (!cookie_.empty()) head.headers.push_back(Header{"cookie", std::move(cookie_)});
  if (!authority_.empty()) {
    // RFC 9113 §8.3.1: :authority wins over a Host field.
    std::erase_if(head.headers, [](const Header& h) { return h.name == "host"; });
    head.headers.insert(head.headers.begin(), Header{"host", authority_});
  }
  if (too_large_) return Verdict::TooLarge;
  // No tunnels; and a method means the same over HTTP/1.1 and HTTP/2 (see isKnownMethod).
  if (head.method == "CONNECT" || !isKnownMethod(head.method)) return Verdict::NotImplemented;
  if (auto cl = findHeader(head.headers, "content-length")) {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(cl->data(), cl->data() + cl->size(), n);
    if (ec != std::errc() || end != cl->data() + cl->size()) return Verdict::Refuse;
    // As the HTTP/1 decoder: "Content-Length: 0" is no body (nghttp2 refuses DATA beyond it).
    framing.framing = n == 0 ? BodyFraming::None : BodyFraming::ContentLength;
    framing.content_length = n;
  } else if (end_stream) {
    framing.framing = BodyFraming::None;
  } else {
    // A body of unknown length: chunked to the HTTP/1.1 upstream.
    framing.framing = BodyFraming::Chunked;
  }
  if (framing.framing != BodyFraming::None) {
    if (auto expect = findHeader(head.headers, "expect");
        expect && equalsIgnoreCase(*expect, "100-continue")) {
      framing.expect_continue = true;
    }
  }
  return Verdict::Forward;
}

nghttp2_session* newHttp2ServerSession(const nghttp2_session_callbacks* callbacks, void* user_data,
                                       uint64_t max_header_list_bytes) {
  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) return nullptr;
  // Windows reopen only for what the exchanges took (nghttp2_session_consume*).
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // What nghttp2 bounds itself (see the budgets at the top of server_connection.cc).
  nghttp2_option_set_max_outbound_ack(opt, kMaxOutboundAck);
  nghttp2_option_set_max_settings(opt, kMaxSettingsEntries);
  nghttp2_option_set_stream_reset_rate_limit(opt, kNghttp2ResetBurst, kNghttp2ResetRate);
  nghttp2_option_set_max_continuations(
      opt, kContinuationsPerFrame *
               static_cast<size_t>(std::max<uint64_t>(
                   kMinContinuations,
                   (max_header_list_bytes + kDefaultMaxFrameBytes - 1) / kDefaultMaxFrameBytes)));
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, kHttp2HpackTableBytes);
  nghttp2_session* session = nullptr;
  const int rv = nghttp2_session_server_new2(&session, callbacks, user_data, opt);
  nghttp2_option_del(opt);
  return rv == 0 ? session : nullptr;
}

void submitHttp2ServerSettings(nghttp2_session* session, const config::Http2Settings& h2) {
  const nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h2.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, h2.initial_window_bytes},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
       static_cast<uint32_t>(std::min<uint64_t>(h2.max_header_list_bytes, UINT32_MAX))},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, kHttp2HpackTableBytes},
  };
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
  const uint64_t window = std::min<uint64_t>(
      kMaxWindow, std::max<uint64_t>(NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE,
                                     uint64_t{h2.initial_window_bytes} * kConnectionWindowStreams));
  nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(window));
}

}  // namespace sy::proxy
