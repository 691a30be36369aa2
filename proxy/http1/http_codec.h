#pragma once
// HTTP/1.1 message framing on top of Debian's http-parser. No I/O: bytes in, heads and body
// pieces out. One decoder per direction of a connection; it decodes successive messages
// (keep-alive, pipelining) and stops after each head and after each message so the caller
// can act before the next bytes are consumed.
//
// Thread: worker-local.

#include <cstdint>
#include <string_view>

#include <http_parser.h>

#include "proxy/http/http_message.h"

namespace sy::proxy {

class MessageDecoder {
 public:
  enum class Kind : uint8_t { Request, Response };
  enum class Event : uint8_t {
    NeedMore,         // all input consumed; give more
    HeadComplete,     // head() is ready; the body (if any) follows on the next decode()
    MessageComplete,  // the whole message, body included, has been decoded
    Error,            // malformed input; error() says what. The decoder is unusable after this.
  };

  // Receives body bytes as they are decoded (chunk framing removed). The view is valid only
  // during the call.
  class BodySink {
   public:
    virtual ~BodySink() = default;
    virtual void onBodyData(std::string_view data) = 0;
  };

  MessageDecoder(Kind kind, BodySink& sink);
  MessageDecoder(const MessageDecoder&) = delete;
  MessageDecoder& operator=(const MessageDecoder&) = delete;

  // Decodes from `data`, stopping at the first event. `consumed` is how many bytes were used;
  // the caller keeps the rest for the next call.
  Event decode(const char* data, size_t len, size_t& consumed);

  // The peer closed its side: completes a close-delimited body (MessageComplete), or reports
  // a truncated message (Error), or NeedMore when no message was in progress.
  Event finish();

  // Starts over for a new connection (or a reused upstream connection).
  void reset();

  // Responses only: the request was HEAD, so the response has no body whatever it says.
  void setHeadRequest(bool head) { head_request_ = head; }
  // Heads longer than this are an error (headTooLarge()), and so is a trailer section longer
  // than this (a budget of its own, counted the same way). 0 = no limit of ours.
  void setMaxHeadBytes(uint64_t max) { max_head_bytes_ = max; }

  const RequestHead& request() const { return request_; }
  RequestHead& request() { return request_; }
  const ResponseHead& response() const { return response_; }
  ResponseHead& response() { return response_; }
  // The trailer section of the chunked message just decoded (RFC 9112 §7.1.2), as received:
  // names are tokens, values carry no control bytes, nothing is filtered yet. Valid after
  // MessageComplete until the next decode(); empty for none (and for other framings).
  const Headers& trailers() const { return trailers_; }

  // Valid after HeadComplete.
  BodyFraming framing() const { return framing_; }
  uint64_t contentLength() const { return content_length_; }
  bool keepAlive() const { return http_should_keep_alive(&parser_) != 0; }
  bool upgrade() const { return parser_.upgrade != 0; }
  // The head, or the trailer section, went beyond setMaxHeadBytes (or http-parser's own bound).
  bool headTooLarge() const { return head_too_large_; }
  // http-parser's description of the error (after Event::Error).
  const char* errorDescription() const;
  // True while between messages (no byte of a next message decoded yet).
  bool idle() const { return !in_message_; }

 private:
  static int onMessageBegin(http_parser* p);
  static int onUrl(http_parser* p, const char* at, size_t len);
  static int onStatus(http_parser* p, const char* at, size_t len);
  static int onHeaderField(http_parser* p, const char* at, size_t len);
  static int onHeaderValue(http_parser* p, const char* at, size_t len);
  static int onHeadersComplete(http_parser* p);
  static int onBody(http_parser* p, const char* at, size_t len);
  static int onMessageComplete(http_parser* p);
  static const http_parser_settings kSettings;

  Headers& headers() { return kind_ == Kind::Request ? request_.headers : response_.headers; }
  // The field list being decoded and how much of it this message uses: the head's, or after
  // the head (http-parser reports trailer fields through the same callbacks) the trailers'.
  Headers& fields() { return in_head_ ? headers() : trailers_; }
  size_t& fieldsUsed() { return in_head_ ? headers_used_ : trailers_used_; }
  // What makes the decoded trailer section unacceptable, or null (as invalidHead's fields).
  const char* invalidTrailers() const;
  bool addHeadBytes(size_t n);
  bool scanHead(const char* data, size_t len);
  void resetScan();
  // What makes the decoded head unacceptable, or null (header names are tokens, values carry
  // no NUL/CR/LF, Transfer-Encoding is exactly "chunked", responses are HTTP/1.x with a
  // three-digit status).
  const char* invalidHead() const;
  // Checks the pending CRLF after a chunk's data, from `from` to the end of the buffer being
  // decoded; false (and an error) when the bytes are not CRLF.
  bool checkChunkEnd(const char* from);

  Kind kind_;
  BodySink& sink_;
  http_parser parser_{};
  RequestHead request_;
  ResponseHead response_;
  BodyFraming framing_ = BodyFraming::None;
  uint64_t content_length_ = 0;
  uint64_t max_head_bytes_ = 0;
  uint64_t head_bytes_ = 0;
  size_t headers_used_ = 0;  // headers of the message being decoded (the vector may hold more)
  // Reused from message to message like the head's fields: no allocation for messages without.
  Headers trailers_;
  size_t trailers_used_ = 0;
  // The buffer being decoded, and the check of the CRLF after chunk data (checkChunkEnd).
  const char* exec_end_ = nullptr;
  int chunk_end_pending_ = 0;  // bytes of the CRLF after chunk data still to check
  // Raw-head scan state (scanHead).
  const char* scan_error_ = nullptr;
  char scan_prev_ = 0;              // the start line's last byte so far
  bool scan_cr_ = false;            // the last byte scanned was a CR
  bool scan_line_started_ = false;  // the current header line has a byte other than CR
  bool scan_done_ = false;
  bool scan_seen_start_ = false;
  bool scan_in_start_line_ = true;
  Event pending_ = Event::NeedMore;
  bool in_message_ = false;
  bool in_head_ = false;
  bool last_was_value_ = false;
  bool head_request_ = false;
  bool head_too_large_ = false;
};

// Whether http-parser (so this decoder) knows `method`: the methods an HTTP/1.1 client can
// send through the proxy. HTTP/2 clients are held to the same list, so that a request means
// the same over both (nghttp2 accepts any token).
bool isKnownMethod(std::string_view method);

}  // namespace sy::proxy
