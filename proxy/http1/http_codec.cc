#include "proxy/http1/http_codec.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>

namespace sy::proxy {
namespace {

MessageDecoder& self(http_parser* p) { return *static_cast<MessageDecoder*>(p->data); }

// RFC 9110 §5.6.2 tchar, as a table: field names are checked byte by byte on every head.
constexpr auto kTchar = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (unsigned char c : std::string_view("!#$%&'*+-.^_`|~")) t[c] = true;
  return t;
}();

bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!kTchar[c]) return false;
  }
  return true;
}

// Whether `s` has a byte no field value may carry: NUL, CR, LF (RFC 9110 §5.5), the other
// controls but HTAB, and DEL. Values are most of a head's bytes (User-Agent, Cookie...), so
// this looks at 16 bytes a step with the compiler's vector extension (SSE2 on x86-64, NEON on
// arm64; GCC and clang both have it): no early exit, the flags are OR-ed and tested at the end.
// The last step is the value's last 16 bytes, overlapping the previous step where the length
// is not a multiple of 16; values shorter than one step go byte by byte.
bool hasControl(std::string_view s) {
  using Bytes = unsigned char __attribute__((vector_size(16)));
  using Flags = signed char __attribute__((vector_size(16)));  // what a vector compare gives
  constexpr size_t kStep = sizeof(Bytes);
  if (s.size() < kStep) {
    bool found = false;
    for (unsigned char c : s) found |= (c < 0x20 && c != '\t') || c == 0x7f;
    return found;
  }
  Flags bad{};
  auto check = [&](const char* p) {
    Bytes v;
    std::memcpy(&v, p, kStep);
    bad |= ((v < 0x20) & (v != '\t')) | (v == 0x7f);
  };
  const char* const last = s.data() + s.size() - kStep;
  for (const char* p = s.data(); p < last; p += kStep) check(p);
  check(last);
  uint64_t halves[2];
  std::memcpy(halves, &bad, sizeof(halves));
  return (halves[0] | halves[1]) != 0;
}

// What makes a field of a head or of a trailer section unacceptable, or null.
const char* invalidField(const Header& h) {
  if (!isToken(h.name)) return "invalid character in a field name";
  // NUL, CR, LF (RFC 9110 §5.5) and the other controls but HTAB: http-parser refuses them
  // inside a value but not as its first byte, so without this a value like "\x01x" passes
  // while "x\x01" does not, and a merged X-Forwarded-For could carry one into the middle.
  if (hasControl(h.value)) return "invalid character in a field value";
  return nullptr;
}

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

const http_parser_settings MessageDecoder::kSettings = [] {
  http_parser_settings s{};
  s.on_message_begin = &MessageDecoder::onMessageBegin;
  s.on_url = &MessageDecoder::onUrl;
  s.on_status = &MessageDecoder::onStatus;
  s.on_header_field = &MessageDecoder::onHeaderField;
  s.on_header_value = &MessageDecoder::onHeaderValue;
  s.on_headers_complete = &MessageDecoder::onHeadersComplete;
  s.on_body = &MessageDecoder::onBody;
  s.on_message_complete = &MessageDecoder::onMessageComplete;
  return s;
}();

MessageDecoder::MessageDecoder(Kind kind, BodySink& sink) : kind_(kind), sink_(sink) { reset(); }

void MessageDecoder::reset() {
  http_parser_init(&parser_, kind_ == Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE);
  parser_.data = this;
  in_message_ = false;
  in_head_ = false;
  head_too_large_ = false;
  scan_error_ = nullptr;
  chunk_end_pending_ = 0;
  resetScan();
  pending_ = Event::NeedMore;
}

const char* MessageDecoder::invalidHead() const {
  const bool request = kind_ == Kind::Request;
  const Headers& hs = request ? request_.headers : response_.headers;
  if (parser_.http_major != 1) return request ? nullptr : "response version is not HTTP/1.x";
  if (!request && (parser_.status_code < 100 || parser_.status_code > 999)) {
    return "response status is not three digits";
  }
  int transfer_encodings = 0;
  for (const Header& h : hs) {
    if (const char* problem = invalidField(h)) return problem;
    if (h.name.size() == 17 && equalsIgnoreCase(h.name, "transfer-encoding")) {
      // Only "chunked", once: any other coding (or a list ending in chunked) is something
      // the next hop might read differently than we do (RFC 9112 §6.1, §11.2).
      ++transfer_encodings;
      if (!equalsIgnoreCase(trimOws(h.value), "chunked")) return "unsupported transfer coding";
    }
  }
  if (transfer_encodings > 1) return "repeated Transfer-Encoding";
  // http-parser 2.9 flags any field whose name merely starts with "transfer-encoding"
  // ("Transfer-Encodings: x") and refuses such a request only after on_headers_complete has
  // returned, i.e. after HeadComplete (the head was routed and an upstream connection taken).
  if (request && parser_.uses_transfer_encoding && transfer_encodings == 0) {
    return "unsupported transfer coding";
  }
  if (transfer_encodings > 0 && parser_.http_minor == 0) return "Transfer-Encoding in HTTP/1.0";
  return nullptr;
}

const char* MessageDecoder::invalidTrailers() const {
  // Trailer fields are forwarded (re-serialized, never as the bytes received), so they must be
  // as clean as the head's.
  for (const Header& h : trailers_) {
    if (const char* problem = invalidField(h)) return problem;
  }
  return nullptr;
}

bool MessageDecoder::addHeadBytes(size_t n) {
  head_bytes_ += n;
  if (max_head_bytes_ != 0 && head_bytes_ > max_head_bytes_) {
    head_too_large_ = true;
    return false;
  }
  return true;
}

// http-parser (as Debian builds it, without HTTP_PARSER_STRICT) accepts a few things RFC 9112
// forbids and request smuggling relies on: obs-fold (a header line starting with SP/HT), runs
// of spaces or tabs in the start line. This pass over the head's raw bytes, before the parser
// sees them, refuses them. It stops at the empty line that ends the head.
//
// It goes a line at a time: memchr (vectorized in glibc) finds each LF, and a header line is
// checked only at its first byte and for a CR before its end; only the short start line is
// looked at byte by byte. A line may span buffers: scan_line_started_ and scan_cr_ carry its
// state to the next call. Where a line has several faults, the one nearest its start is
// reported (the one a byte-by-byte pass meets first).
bool MessageDecoder::scanHead(const char* data, size_t len) {
  const char* p = data;
  const char* const end = data + len;
  while (p < end && !scan_done_) {
    // A CR must start a CRLF: http-parser (not strict) takes CR + any byte as the end of the
    // head, so "\r\n\rX" would end it where this scan does not see an empty line. This is the
    // byte after a CR that ended the previous line piece (or buffer).
    if (scan_cr_ && *p != '\n') {
      scan_error_ = "bare CR in the head";
      return false;
    }
    if (!scan_seen_start_) {
      // Empty lines before the start line: http-parser skips them, and so do we.
      if (*p == '\r' || *p == '\n') {
        scan_cr_ = *p == '\r';
        ++p;
        continue;
      }
      scan_seen_start_ = true;
    }
    // This buffer's piece of the current line: [p, stop), stop being its LF or the end.
    const char* const lf = static_cast<const char*>(std::memchr(p, '\n', end - p));
    const char* const stop = lf != nullptr ? lf : end;
    if (scan_in_start_line_) {
      for (const char* q = p; q < stop; ++q) {
        const unsigned char u = static_cast<unsigned char>(*q);
        if (u == '\r') {
          // Not followed by the LF (there is none before stop): a bare CR, unless the piece
          // ends here and the next buffer brings the LF (scan_cr_ below).
          if (q + 1 < stop) {
            scan_error_ = "bare CR in the head";
            return false;
          }
          continue;
        }
        // Controls too: http-parser (not strict) takes a form feed inside the request-target.
        if (u < 0x20 || u == 0x7f || (u == ' ' && scan_prev_ == ' ')) {
          scan_error_ = "extra whitespace in the start line";
          return false;
        }
        scan_prev_ = static_cast<char>(u);
      }
    } else {
      if (!scan_line_started_ && (*p == ' ' || *p == '\t')) {
        scan_error_ = "obs-fold (a header line starting with whitespace)";
        return false;
      }
      // A CR anywhere but last in the piece is followed by a byte other than LF.
      if (stop - p > 1 && std::memchr(p, '\r', stop - p - 1) != nullptr) {
        scan_error_ = "bare CR in the head";
        return false;
      }
    }
    const bool cr_last = stop > p && stop[-1] == '\r';
    // Whether the line has any byte but its CR: the line that has none ends the head.
    const bool started = scan_line_started_ || stop - p > (cr_last ? 1 : 0);
    if (lf == nullptr) {  // the line goes on in the next buffer
      scan_line_started_ = started;
      scan_cr_ = cr_last;
      return true;
    }
    if (!started && !scan_in_start_line_) {
      scan_done_ = true;  // the empty line: the head ends here
      return true;
    }
    scan_in_start_line_ = false;
    scan_line_started_ = false;
    scan_cr_ = false;
    p = lf + 1;
  }
  return true;
}

void MessageDecoder::resetScan() {
  scan_done_ = false;
  scan_seen_start_ = false;
  scan_in_start_line_ = true;
  scan_line_started_ = false;
  scan_prev_ = 0;
  scan_cr_ = false;
}

MessageDecoder::Event MessageDecoder::decode(const char* data, size_t len, size_t& consumed) {
  consumed = 0;
  // http-parser reads a zero-length buffer as the end of the stream; that is finish()'s job.
  if (len == 0) return Event::NeedMore;
  if (HTTP_PARSER_ERRNO(&parser_) == HPE_PAUSED) http_parser_pause(&parser_, 0);
  if (HTTP_PARSER_ERRNO(&parser_) != HPE_OK) return Event::Error;
  if (scan_error_ != nullptr || !scanHead(data, len)) return Event::Error;
  pending_ = Event::NeedMore;
  exec_end_ = data + len;
  // The CRLF that ends the previous buffer's last chunk data, when it arrives in this one.
  if (!checkChunkEnd(data)) return Event::Error;
  size_t n = http_parser_execute(&parser_, &kSettings, data, len);
  consumed = n;
  http_errno err = HTTP_PARSER_ERRNO(&parser_);
  // http-parser's own (compile-time) head limit counts as ours.
  if (err == HPE_HEADER_OVERFLOW) head_too_large_ = true;
  if (err == HPE_PAUSED) return pending_;
  if (err != HPE_OK) return Event::Error;
  if (pending_ != Event::NeedMore) return pending_;
  // An upgrade request (or CONNECT) ends the HTTP stream: http-parser returns early after the
  // message and leaves the rest, which belongs to the tunnelled protocol, unconsumed.
  return Event::NeedMore;
}

MessageDecoder::Event MessageDecoder::finish() {
  if (HTTP_PARSER_ERRNO(&parser_) == HPE_PAUSED) http_parser_pause(&parser_, 0);
  if (HTTP_PARSER_ERRNO(&parser_) != HPE_OK) return Event::Error;
  pending_ = Event::NeedMore;
  http_parser_execute(&parser_, &kSettings, nullptr, 0);
  http_errno err = HTTP_PARSER_ERRNO(&parser_);
  if (err != HPE_OK && err != HPE_PAUSED) return Event::Error;
  return pending_;
}

const char* MessageDecoder::errorDescription() const {
  if (head_too_large_) return in_head_ ? "head too large" : "trailer section too large";
  if (scan_error_ != nullptr) return scan_error_;
  return http_errno_description(HTTP_PARSER_ERRNO(&parser_));
}

int MessageDecoder::onMessageBegin(http_parser* p) {
  MessageDecoder& d = self(p);
  d.in_message_ = true;
  d.in_head_ = true;
  d.head_bytes_ = 0;
  d.last_was_value_ = false;
  d.framing_ = BodyFraming::None;
  d.content_length_ = 0;
  // Header objects of the previous message are reused (their strings keep their capacity), so
  // a keep-alive connection stops allocating once it has seen its usual headers.
  d.headers_used_ = 0;
  d.trailers_used_ = 0;
  if (d.kind_ == Kind::Request) {
    d.request_.method.clear();
    d.request_.target.clear();
  } else {
    d.response_.reason.clear();
  }
  return 0;
}

int MessageDecoder::onUrl(http_parser* p, const char* at, size_t len) {
  MessageDecoder& d = self(p);
  if (!d.addHeadBytes(len)) return 1;
  d.request_.target.append(at, len);
  return 0;
}

int MessageDecoder::onStatus(http_parser* p, const char* at, size_t len) {
  MessageDecoder& d = self(p);
  if (!d.addHeadBytes(len)) return 1;
  d.response_.reason.append(at, len);
  return 0;
}

int MessageDecoder::onHeaderField(http_parser* p, const char* at, size_t len) {
  MessageDecoder& d = self(p);
  size_t& used = d.fieldsUsed();
  // A name may arrive in several pieces (one per decode() call it spans): ": " and CRLF are
  // counted once per field, so the 431 decision does not depend on how the head was segmented.
  const bool new_field = used == 0 || d.last_was_value_;
  if (!d.addHeadBytes(len + (new_field ? 4 : 0))) return 1;
  Headers& hs = d.fields();
  if (new_field) {
    if (used == hs.size()) hs.emplace_back();
    hs[used].name.clear();
    hs[used].value.clear();
    ++used;
  }
  hs[used - 1].name.append(at, len);
  d.last_was_value_ = false;
  return 0;
}

int MessageDecoder::onHeaderValue(http_parser* p, const char* at, size_t len) {
  MessageDecoder& d = self(p);
  if (!d.addHeadBytes(len)) return 1;
  const size_t used = d.fieldsUsed();
  if (used == 0) return 1;
  d.fields()[used - 1].value.append(at, len);
  d.last_was_value_ = true;
  return 0;
}

int MessageDecoder::onHeadersComplete(http_parser* p) {
  MessageDecoder& d = self(p);
  d.in_head_ = false;
  d.headers().resize(
      d.headers_used_);  // only ever shrinks: drops what the last message had more of
  // A trailer section (if the body is chunked) is counted against a budget of its own, and
  // its first field starts a new list.
  d.head_bytes_ = 0;
  d.last_was_value_ = false;
  if (d.kind_ == Kind::Request) {
    d.request_.method = http_method_str(static_cast<http_method>(p->method));
    d.request_.http_major = p->http_major;
    d.request_.http_minor = p->http_minor;
  } else {
    d.response_.status = p->status_code;
    d.response_.http_major = p->http_major;
    d.response_.http_minor = p->http_minor;
  }
  if (const char* problem = d.invalidHead()) {
    d.scan_error_ = problem;
    return -1;  // http-parser reports HPE_CB_headers_complete: an Error event
  }
  const bool chunked = (p->flags & F_CHUNKED) != 0;
  const bool has_length = p->content_length != ULLONG_MAX;
  bool skip_body = false;
  if (d.kind_ == Kind::Response) {
    const unsigned status = p->status_code;
    skip_body = d.head_request_ || status / 100 == 1 || status == 204 || status == 304;
  }
  if (skip_body) {
    d.framing_ = BodyFraming::None;
  } else if (chunked) {
    d.framing_ = BodyFraming::Chunked;
  } else if (has_length) {
    d.framing_ = p->content_length > 0 ? BodyFraming::ContentLength : BodyFraming::None;
    d.content_length_ = p->content_length;
  } else {
    d.framing_ = d.kind_ == Kind::Response ? BodyFraming::UntilClose : BodyFraming::None;
  }
  d.pending_ = Event::HeadComplete;
  http_parser_pause(p, 1);
  return skip_body && d.kind_ == Kind::Response ? 1 : 0;
}

int MessageDecoder::onBody(http_parser* p, const char* at, size_t len) {
  MessageDecoder& d = self(p);
  d.sink_.onBodyData(std::string_view(at, len));
  if ((p->flags & F_CHUNKED) != 0 && p->content_length == 0) {
    // The chunk's data ends here; http-parser (not built strict) skips the next two bytes
    // unchecked, so we check that they are CRLF: here for what this buffer holds, at the start
    // of the next decode() for the rest.
    d.chunk_end_pending_ = 2;
    if (!d.checkChunkEnd(at + len)) return 1;
  }
  return 0;
}

bool MessageDecoder::checkChunkEnd(const char* from) {
  for (const char* p = from; chunk_end_pending_ > 0 && p < exec_end_; ++p) {
    if (*p != (chunk_end_pending_ == 2 ? '\r' : '\n')) {
      scan_error_ = "chunk data not followed by CRLF";
      chunk_end_pending_ = 0;
      return false;
    }
    --chunk_end_pending_;
  }
  return true;
}

int MessageDecoder::onMessageComplete(http_parser* p) {
  MessageDecoder& d = self(p);
  d.trailers_.resize(d.trailers_used_);  // as the head's fields: only ever shrinks
  if (const char* problem = d.invalidTrailers()) {
    d.scan_error_ = problem;
    return -1;  // http-parser reports HPE_CB_message_complete: an Error event
  }
  d.in_message_ = false;
  d.pending_ = Event::MessageComplete;
  d.resetScan();  // the next message's head starts after this one
  http_parser_pause(p, 1);
  return 0;
}

bool isKnownMethod(std::string_view method) {
#define SY_METHOD_NAME(num, name, string) std::string_view(#string),
  static constexpr std::string_view kKnown[] = {HTTP_METHOD_MAP(SY_METHOD_NAME)};
#undef SY_METHOD_NAME
  return std::find(std::begin(kKnown), std::end(kKnown), method) != std::end(kKnown);
}

}  // namespace sy::proxy
