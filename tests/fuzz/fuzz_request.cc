// libFuzzer target: the request path without I/O, as proxy/http1/server_connection.cc and
// proxy/exchange/exchange.cc drive it.
//
//   bytes from a client -> MessageDecoder(Request) -> on each head: matchRoute -> decide ->
//   appendUpstreamRequestHead (and the shadow copy's head) -> body bytes -> MessageComplete,
//   looping over pipelined messages until an error, an upgrade or the end of the input.
//
// Beyond "no crash, no sanitizer report", every input is checked for:
//   - segmentation independence: the whole input at once and the same bytes in small pieces
//     give the same transcript (events, upstream heads, body bytes), also with the server's
//     max_header_bytes applied (a head is accepted or refused whatever its segments);
//   - framing: a Content-Length body delivers exactly that many bytes; a body-less message none;
//   - the head sent upstream is well-formed HTTP/1.1 (no bare CR/LF, token header names, no
//     control bytes in the target or in field values), parses back to the same method, target
//     and framing with one header per line, and carries no hop-by-hop field outside an
//     upgrade, exactly one X-Forwarded-For/-Proto and variant header, and a framing header
//     only for its framing;
//   - the split picks a variant the route has a pool for; a hashed pick has weight > 0;
//   - a chunked body's trailer section, as it goes upstream (appendLastChunk), parses back to
//     exactly the fields forwardableTrailer lets through, in order (and is in the transcript).
//
// HTTP/2 mode: an input that starts with the client connection preface (what
// proxy/server/protocol_detect.cc hands to Http2Connection) is fed to an nghttp2 server session
// made and configured as Http2Connection makes it (newHttp2ServerSession, its SETTINGS), with
// its header lists turned into request heads by the same Http2RequestHeaders. Checked:
//   - segmentation independence of the requests (heads, verdicts, body byte counts, closes);
//   - every head forwarded has a method, a target starting with '/' (or "*" for OPTIONS), exactly
//     one Host, and a Content-Length body that delivered exactly that many bytes;
//   - the HTTP/1.1 head sent upstream for it passes the same checks as above;
//   - the session's output (its SETTINGS, ACKs, WINDOW_UPDATEs, RST_STREAMs, GOAWAY and the
//     responses submitted: 200 for a forwarded head, 431 for a too large one) is a sequence of
//     well-formed frames starting with SETTINGS.
// A broken invariant aborts with the input and the transcript printed (tests/fuzz/README.md).

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/loader.h"
#include "config/validate.h"
#include "proxy/http/http_message.h"
#include "proxy/http/rewrite.h"
#include "proxy/http1/http_codec.h"
#include "proxy/http2/request_head.h"
#include "proxy/http2/server_connection.h"
#include "proxy/routing/router.h"
#include "proxy/routing/splitter.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using namespace sy;
using proxy::BodyFraming;
using proxy::MessageDecoder;
using Event = MessageDecoder::Event;
using fuzz::printable;

// Routes covering every matcher and split path: exact host + path regex with header, cookie
// and client_ip overrides, assign_cookie and shadow; a wildcard host with a client_ip fallback;
// a path-only route with a variant fallback; anything else is a 404.
constexpr std::string_view kConfig = R"toml(
[server]
listen = ["127.0.0.1:18080"]
variant_header = "X-Switchyard-Variant"

[server.limits]
max_header_bytes = 2048

# Below the 4096-byte inputs, so an HTTP/2 header list can be too large (431).
[server.http2]
max_header_list_bytes = 1024

[upstreams.blue]
servers = ["127.0.0.1:19001"]
[upstreams.green]
servers = ["127.0.0.1:19002"]
[upstreams.canary]
servers = ["127.0.0.1:19003"]
[upstreams.shadow]
servers = ["127.0.0.1:19004"]

[[routes]]
name = "shop"
match = { host = "shop.example.com", path = "^/(api|cart)/" }
key = ["header:X-User-Id", "cookie:session"]
fallback = "random"
assign_cookie = "sy_id"
failover = "blue"
upstreams = { blue = "blue", green = "green", canary = "canary", shadow = "shadow" }
weights = { blue = 90, green = 5, canary = 5 }
shadow = { percent = 50.0 }

[[routes.override]]
header = "X-Canary"
regex = "^(1|true|yes)$"
variant = "canary"

[[routes.override]]
cookie = "force_green"
regex = "1"
variant = "green"

[[routes.override]]
client_ip = ["10.0.0.0/8", "::1/128"]
variant = "canary"

[[routes]]
name = "wild"
match = { host = "*.example.org" }
key = ["cookie:sid"]
fallback = "client_ip"
upstreams = { blue = "blue", green = "green", canary = "canary" }
weights = { blue = 1, green = 1, canary = 1 }

[[routes]]
name = "static"
match = { path = "\\.(css|js|png)$" }
fallback = "green"
upstreams = { blue = "blue", green = "green" }
weights = { blue = 1 }

[[routes]]
name = "default"
match = { host = "default.test" }
key = ["header:X-Session"]
upstreams = { blue = "blue", canary = "canary" }
weights = { blue = 3, canary = 1 }
)toml";

const config::Snapshot& snapshot() {
  static const std::shared_ptr<config::Snapshot> s = [] {
    config::LoadResult r =
        config::loadSnapshotFromString(kConfig, "fuzz_request.toml", fuzz::fakeResolve);
    if (!r.ok()) {
      std::fprintf(stderr, "fuzz_request: built-in config rejected:\n%s",
                   config::formatErrors(r.errors).c_str());
      std::abort();
    }
    return r.snapshot;
  }();
  return *s;
}

uint64_t fnv1a(const uint8_t* data, size_t size) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

struct Client {
  proxy::ClientIp ip;
  std::string text;
};

Client clientFor(uint64_t h) {
  static constexpr struct {
    const char* text;
    uint8_t bytes[16];
  } kClients[] = {
      {"192.0.2.7", {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7}},
      {"10.1.2.3", {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3}},  // override
      {"::1", {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},              // override
      {"2001:db8::5", {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}},
  };
  const auto& c = kClients[h % 4];
  Client out;
  std::copy(std::begin(c.bytes), std::end(c.bytes), out.ip.bytes.begin());
  out.text = c.text;
  return out;
}

const char* framingName(BodyFraming f) {
  switch (f) {
    case BodyFraming::None: return "none";
    case BodyFraming::ContentLength: return "content-length";
    case BodyFraming::Chunked: return "chunked";
    case BodyFraming::UntilClose: return "until-close";
  }
  return "?";
}

bool isTchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

struct Discard : MessageDecoder::BodySink {
  void onBodyData(std::string_view) override {}
};

// The end of a chunked body as it goes upstream for `trailers` (see the top of the file).
// Returns it, for the transcript.
std::string checkLastChunk(std::string_view input, const proxy::Headers& trailers) {
  std::string out;
  proxy::appendLastChunk(out, trailers);
  auto detail = [&] {
    return "input:\n" + printable(input) + "\n--- upstream last chunk:\n" + printable(out);
  };
  const std::string message =
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + out;
  Discard sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  size_t at = 0;
  bool complete = false;
  for (int guard = 0; guard < 4 && !complete && at < message.size(); ++guard) {
    size_t consumed = 0;
    const Event ev = d.decode(message.data() + at, message.size() - at, consumed);
    at += consumed;
    FUZZ_CHECK(ev != Event::Error, "the upstream trailer section does not parse",
               detail() + "\n--- " + d.errorDescription());
    complete = ev == Event::MessageComplete;
  }
  FUZZ_CHECK(complete && at == message.size(),
             "the upstream trailer section does not end the message where it ends", detail());
  proxy::Headers forwarded;
  for (const proxy::Header& h : trailers) {
    if (proxy::forwardableTrailer(h.name)) forwarded.push_back(h);
  }
  bool same = d.trailers().size() == forwarded.size();
  for (size_t i = 0; same && i < forwarded.size(); ++i) {
    same = d.trailers()[i].name == forwarded[i].name && d.trailers()[i].value == forwarded[i].value;
  }
  FUZZ_CHECK(same, "the upstream trailer section parses back to other fields", detail());
  return out;
}

// The invariants of one head sent upstream (see the top of the file).
void checkUpstreamHead(std::string_view input, const std::string& out,
                       const proxy::RequestHead& req, const proxy::RequestRewrite& rw) {
  auto detail = [&](std::string_view extra = {}) {
    std::string d = "input:\n" + printable(input) + "\n--- upstream head:\n" + printable(out);
    if (!extra.empty()) d.append("\n--- ").append(extra);
    return d;
  };

  // Line structure.
  FUZZ_CHECK(out.size() >= 4 && out.compare(out.size() - 4, 4, "\r\n\r\n") == 0,
             "upstream head does not end with CRLF CRLF", detail());
  size_t pos = 0;
  size_t header_lines = 0;
  for (bool first = true;; first = false) {
    const size_t eol = out.find("\r\n", pos);
    const std::string_view line(out.data() + pos, eol - pos);
    pos = eol + 2;
    if (line.empty()) {
      FUZZ_CHECK(pos == out.size(), "upstream head has an empty line before its end", detail());
      break;
    }
    FUZZ_CHECK(line.find_first_of("\r\n") == std::string_view::npos,
               "bare CR or LF inside a line of the upstream head (header injection / obs-fold)",
               detail(printable(line)));
    if (first) {
      const std::string expect_start = req.method + " ";
      FUZZ_CHECK(line.substr(0, expect_start.size()) == expect_start &&
                     line.size() > expect_start.size() + 9 &&
                     line.substr(line.size() - 9) == " HTTP/1.1",
                 "malformed upstream request line", detail(printable(line)));
      const std::string_view target =
          line.substr(expect_start.size(), line.size() - 9 - expect_start.size());
      FUZZ_CHECK(!target.empty(), "empty request-target upstream", detail());
      for (unsigned char c : target) {
        FUZZ_CHECK(c > 0x20 && c != 0x7f,
                   "whitespace or control byte in the request-target sent upstream",
                   detail(printable(target)));
      }
      continue;
    }
    ++header_lines;
    const size_t colon = line.find(':');
    FUZZ_CHECK(colon != std::string_view::npos && colon > 0, "upstream header line without a name",
               detail(printable(line)));
    for (unsigned char c : line.substr(0, colon)) {
      FUZZ_CHECK(isTchar(c), "upstream header name is not an RFC 9110 token",
                 detail(printable(line)));
    }
    // RFC 9110 §5.5: field values are VCHAR, obs-text, SP and HTAB; NUL and other controls
    // must be rejected or replaced, never forwarded.
    for (unsigned char c : line.substr(colon + 1)) {
      FUZZ_CHECK((c >= 0x20 && c != 0x7f) || c == '\t',
                 "control byte in a header value sent upstream", detail(printable(line)));
    }
  }

  // It parses back to the same request and framing, one header per line.
  Discard sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  size_t at = 0;
  bool head = false;
  bool complete = false;
  for (int guard = 0; guard < 8 && at <= out.size(); ++guard) {
    size_t consumed = 0;
    const Event ev = d.decode(out.data() + at, out.size() - at, consumed);
    at += consumed;
    FUZZ_CHECK(ev != Event::Error, "the upstream head does not parse",
               detail(d.errorDescription()));
    if (ev == Event::HeadComplete) head = true;
    if (ev == Event::MessageComplete) complete = true;
    if (ev == Event::NeedMore || complete) break;
  }
  FUZZ_CHECK(head, "the upstream head does not parse as one complete head", detail());
  FUZZ_CHECK(at == out.size(), "the upstream head parses as a head with bytes left over", detail());
  FUZZ_CHECK(d.request().method == req.method && d.request().target == req.target,
             "the upstream head parses back to another method or target", detail());
  FUZZ_CHECK(d.request().headers.size() == header_lines,
             "the upstream head parses back to another number of headers (folding?)", detail());
  FUZZ_CHECK(
      d.framing() == rw.framing, "the upstream head parses back to another framing",
      detail(std::string("want ") + framingName(rw.framing) + ", got " + framingName(d.framing())));
  if (rw.framing == BodyFraming::ContentLength) {
    FUZZ_CHECK(d.contentLength() == rw.content_length,
               "the upstream head parses back to another Content-Length", detail());
  }
  FUZZ_CHECK(complete == (rw.framing == BodyFraming::None),
             "a body-less upstream request is not complete after its head (or the reverse)",
             detail());

  // Header semantics.
  std::map<std::string, int> count;
  for (const proxy::Header& h : d.request().headers) ++count[lower(h.name)];
  auto want = [&](const char* name, int n) {
    const auto it = count.find(name);
    const int got = it == count.end() ? 0 : it->second;
    FUZZ_CHECK(
        got == n, "wrong number of a header sent upstream",
        detail(std::string(name) + ": want " + std::to_string(n) + ", got " + std::to_string(got)));
  };
  want("transfer-encoding", rw.framing == BodyFraming::Chunked ? 1 : 0);
  want("content-length", rw.framing == BodyFraming::ContentLength ? 1 : 0);
  want("keep-alive", 0);
  want("proxy-connection", 0);
  want("te", 0);
  want("trailer", 0);
  want("expect", 0);
  want("connection", rw.upgrade ? 1 : 0);
  want("upgrade", rw.upgrade && proxy::findHeader(req.headers, "upgrade") ? 1 : 0);
  want("x-forwarded-for", 1);
  want("x-forwarded-proto", 1);
  want("x-switchyard-shadow", rw.shadow ? 1 : 0);
  if (!rw.variant_header.empty()) {
    want(lower(rw.variant_header).c_str(), 1);
    FUZZ_CHECK(proxy::findHeader(d.request().headers, rw.variant_header) == rw.variant,
               "the variant header sent upstream names another variant", detail());
  }
  FUZZ_CHECK(count["x-forwarded-host"] <= 1, "several X-Forwarded-Host upstream", detail());
  // Fields named by the client's Connection header are hop-by-hop too; only ours may appear.
  for (const proxy::Header& h : req.headers) {
    if (lower(h.name) != "connection") continue;
    std::string_view list = h.value;
    while (!list.empty()) {
      const size_t comma = list.find(',');
      std::string_view item = list.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      const std::string name = lower(item);
      static constexpr std::string_view kOurs[] = {"connection",          "upgrade",
                                                   "content-length",      "transfer-encoding",
                                                   "x-forwarded-for",     "x-forwarded-proto",
                                                   "x-forwarded-host",    "x-request-id",
                                                   "x-switchyard-shadow", "x-switchyard-variant"};
      bool ours = false;
      for (std::string_view o : kOurs) ours = ours || name == o;
      if (!name.empty() && !ours) want(name.c_str(), 0);
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
}

// One pass over the input, recording a transcript that must not depend on segmentation.
class Run : public MessageDecoder::BodySink {
 public:
  Run(std::string_view input, uint64_t seed, uint64_t max_head)
      : input_(input), seed_(seed), decoder_(MessageDecoder::Kind::Request, *this) {
    decoder_.setMaxHeadBytes(max_head);
    client_ = clientFor(seed);
  }

  // piece == 0: the whole input at once; else pieces of 1..piece bytes chosen from the seed.
  const std::string& transcript(size_t piece) {
    uint64_t rng = seed_ | 1;
    auto nextEnd = [&](size_t from) {
      if (piece == 0) return input_.size();
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      return std::min(input_.size(), from + 1 + static_cast<size_t>((rng >> 33) % piece));
    };
    size_t off = 0;           // bytes consumed by the decoder
    size_t end = nextEnd(0);  // bytes "received" so far
    int stalls = 0;
    while (!stop_) {
      size_t consumed = 0;
      const Event ev = decoder_.decode(input_.data() + off, end - off, consumed);
      off += consumed;
      if (consumed == 0 && ev != Event::NeedMore) {
        // Each call must make progress or report NeedMore, or the proxy's read loop spins.
        FUZZ_CHECK(++stalls < 4, "MessageDecoder returns the same event without consuming input",
                   "input:\n" + printable(input_) + "\n--- transcript:\n" + printable(t_));
      } else {
        stalls = 0;
      }
      switch (ev) {
        case Event::NeedMore:
          if (consumed == 0 || off == end) {
            if (end == input_.size()) {
              onEof();
              return t_;
            }
            end = nextEnd(end);
          }
          break;
        case Event::HeadComplete: onHead(); break;
        case Event::MessageComplete: onComplete(); break;
        case Event::Error:
          flushBody();
          // Not which error: a head both too large and malformed is 431 or 400 depending on
          // which the decoder sees first, i.e. on where the segments end (harmless).
          t_ += "error\n";
          stop_ = true;
          break;
      }
    }
    return t_;
  }

  void onBodyData(std::string_view data) override { body_.append(data); }

 private:
  void flushBody() {
    if (body_.empty()) return;
    t_ += "body " + std::to_string(body_.size()) + ": ";
    t_.append(body_);
    t_ += "\n";
    body_total_ += body_.size();
    body_.clear();
  }

  void onHead() {
    FUZZ_CHECK(!in_body_, "HeadComplete twice without MessageComplete", printable(input_));
    in_body_ = true;
    body_total_ = 0;
    const proxy::RequestHead& req = decoder_.request();
    framing_ = decoder_.framing();
    content_length_ = decoder_.contentLength();
    keep_alive_ = decoder_.keepAlive();
    FUZZ_CHECK(framing_ != BodyFraming::UntilClose, "a request framed until close",
               printable(input_));
    // As ServerConnection::onHeadComplete: CONNECT, upgrades with a body and versions other
    // than 1.x are refused (501, 400, 505) and the connection closed, like a decoding error. (The
    // exchange's Host and absolute-form checks live in exchange.cc's anonymous namespace.)
    if (req.method == "CONNECT" || (decoder_.upgrade() && framing_ != BodyFraming::None) ||
        req.http_major != 1) {
      t_ += "error\n";
      stop_ = true;
      return;
    }
    t_ += "head " + req.method + " " + req.target + " HTTP/" + std::to_string(req.http_major) +
          "." + std::to_string(req.http_minor) + " framing=" + framingName(framing_);
    if (framing_ == BodyFraming::ContentLength) t_ += " length=" + std::to_string(content_length_);
    t_ += keep_alive_ ? " keep-alive" : " close";
    if (decoder_.upgrade()) t_ += " upgrade";
    t_ += "\n";
    const config::Snapshot& snap = snapshot();
    const std::string_view host = proxy::findHeader(req.headers, "host").value_or("");
    const config::Route* route = proxy::matchRoute(snap, host, req.path());
    if (route == nullptr) {
      t_ += "no route: 404\n";  // the body, if any, is read and discarded
      return;
    }
    const uint64_t r1 = seed_ * 0x9e3779b97f4a7c15ull + messages_;
    const uint64_t r2 = ~seed_ + messages_;
    const proxy::SplitDecision decision = proxy::decide(*route, req.headers, client_.ip, r1, r2);
    const size_t v = static_cast<size_t>(decision.variant);
    FUZZ_CHECK(v < config::kWeightedVariants, "the split chose the shadow variant",
               printable(input_));
    FUZZ_CHECK(route->pools[v] != nullptr, "the split chose a variant without a pool",
               "route " + route->name + " variant " + config::variantName(decision.variant) +
                   "\ninput:\n" + printable(input_));
    if (decision.reason == proxy::SplitDecision::Reason::Key ||
        decision.reason == proxy::SplitDecision::Reason::AssignedCookie ||
        decision.reason == proxy::SplitDecision::Reason::FallbackRandom ||
        decision.reason == proxy::SplitDecision::Reason::FallbackClientIp) {
      FUZZ_CHECK(route->weights[v] > 0, "a hashed pick chose a variant of weight 0",
                 "route " + route->name + " variant " + config::variantName(decision.variant) +
                     "\ninput:\n" + printable(input_));
    }
    t_ += "route " + route->name + " -> " + config::variantName(decision.variant) + " reason " +
          std::to_string(static_cast<int>(decision.reason)) + " key " + decision.key + "\n";

    std::string request_id;
    if (!proxy::findHeader(req.headers, "x-request-id")) {
      request_id = "0123456789abcdef" + std::to_string(messages_);
    }
    proxy::RequestRewrite rw;
    rw.client_ip = client_.text;
    rw.proto = (seed_ & 0x100) != 0 ? "https" : "http";
    rw.variant_header = snap.server.variant_header;
    rw.variant = config::variantName(decision.variant);
    rw.request_id = request_id;
    rw.framing = framing_;
    rw.content_length = content_length_;
    rw.upgrade = decoder_.upgrade();
    out_.clear();
    proxy::appendUpstreamRequestHead(out_, req, rw);
    checkUpstreamHead(input_, out_, req, rw);
    t_ += out_;

    // The mirrored copy is built by the same function with shadow = true (proxy/mirror.cc).
    if (route->shadow && !rw.upgrade &&
        proxy::shadowSampled(route->salt.empty() ? route->name : route->salt, decision.key,
                             route->shadow->percent)) {
      rw.shadow = true;
      rw.variant = config::variantName(config::Variant::Shadow);
      out_.clear();
      proxy::appendUpstreamRequestHead(out_, req, rw);
      checkUpstreamHead(input_, out_, req, rw);
      t_ += "shadow copy sent\n";
    }
  }

  void onComplete() {
    flushBody();
    FUZZ_CHECK(in_body_, "MessageComplete without HeadComplete", printable(input_));
    in_body_ = false;
    if (framing_ == BodyFraming::ContentLength) {
      FUZZ_CHECK(body_total_ == content_length_,
                 "a Content-Length body delivered another number of bytes",
                 "want " + std::to_string(content_length_) + ", got " +
                     std::to_string(body_total_) + "\ninput:\n" + printable(input_));
    } else if (framing_ == BodyFraming::None) {
      FUZZ_CHECK(body_total_ == 0, "a body-less request delivered body bytes", printable(input_));
    }
    if (framing_ == BodyFraming::Chunked) t_ += checkLastChunk(input_, decoder_.trailers());
    ++messages_;
    t_ += "complete\n";
    // After an upgrade the bytes belong to the tunnelled protocol; after "Connection: close"
    // (or HTTP/1.0 without keep-alive) the proxy reads no further request.
    if (decoder_.upgrade() || !keep_alive_) stop_ = true;
  }

  void onEof() {
    flushBody();
    const Event ev = decoder_.finish();
    t_ += ev == Event::Error             ? "eof: truncated\n"
          : ev == Event::MessageComplete ? "eof: complete\n"
                                         : "eof\n";
    if (ev == Event::MessageComplete) {
      FUZZ_CHECK(framing_ == BodyFraming::UntilClose, "a request completed by EOF",
                 printable(input_));
    }
  }

  std::string_view input_;
  uint64_t seed_;
  MessageDecoder decoder_;
  Client client_;
  std::string t_;
  std::string body_;
  std::string out_;
  uint64_t body_total_ = 0;
  uint64_t messages_ = 0;
  BodyFraming framing_ = BodyFraming::None;
  uint64_t content_length_ = 0;
  bool keep_alive_ = true;
  bool in_body_ = false;
  bool stop_ = false;
};

// ---- HTTP/2 mode ---------------------------------------------------------------------------

// The frames the server session wrote: well-formed, SETTINGS first, nothing a server never sends.
void checkHttp2Output(std::string_view input, std::string_view out) {
  auto detail = [&](size_t at, std::string_view why) {
    return std::string(why) + " at output byte " + std::to_string(at) + "\ninput:\n" +
           printable(input) + "\n--- output:\n" + printable(out);
  };
  size_t at = 0;
  bool first = true;
  while (at < out.size()) {
    FUZZ_CHECK(out.size() - at >= 9, "HTTP/2 output ends inside a frame header",
               detail(at, "truncated"));
    const auto* p = reinterpret_cast<const uint8_t*>(out.data() + at);
    const uint32_t length = (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | p[2];
    const uint8_t type = p[3];
    const uint8_t flags = p[4];
    const uint32_t sid_raw =
        (uint32_t{p[5]} << 24) | (uint32_t{p[6]} << 16) | (uint32_t{p[7]} << 8) | p[8];
    const uint32_t sid = sid_raw & 0x7fffffff;
    FUZZ_CHECK(length <= 16384, "HTTP/2 output frame above the default SETTINGS_MAX_FRAME_SIZE",
               detail(at, "length " + std::to_string(length)));
    FUZZ_CHECK(out.size() - at - 9 >= length, "HTTP/2 output ends inside a frame payload",
               detail(at, "truncated"));
    FUZZ_CHECK(sid_raw == sid, "HTTP/2 output frame with the reserved bit set", detail(at, ""));
    if (first) {
      FUZZ_CHECK(type == NGHTTP2_SETTINGS && (flags & NGHTTP2_FLAG_ACK) == 0,
                 "the server's first HTTP/2 frame is not its SETTINGS", detail(at, ""));
      first = false;
    }
    const bool on_connection =
        type == NGHTTP2_SETTINGS || type == NGHTTP2_PING || type == NGHTTP2_GOAWAY;
    const bool on_stream = type == NGHTTP2_HEADERS || type == NGHTTP2_DATA ||
                           type == NGHTTP2_RST_STREAM || type == NGHTTP2_PRIORITY;
    FUZZ_CHECK(on_connection || on_stream || type == NGHTTP2_WINDOW_UPDATE,
               "the server sent a frame type it never sends (PUSH_PROMISE, CONTINUATION, ...)",
               detail(at, "type " + std::to_string(type)));
    FUZZ_CHECK(!on_connection || sid == 0, "connection-level HTTP/2 frame on a stream",
               detail(at, "type " + std::to_string(type)));
    FUZZ_CHECK(!on_stream || (sid % 2) == 1, "HTTP/2 stream frame on stream 0 or a server stream",
               detail(at, "type " + std::to_string(type)));
    const uint8_t* payload = p + 9;
    switch (type) {
      case NGHTTP2_SETTINGS:
        FUZZ_CHECK((flags & NGHTTP2_FLAG_ACK) ? length == 0 : length % 6 == 0,
                   "malformed SETTINGS frame sent", detail(at, ""));
        break;
      case NGHTTP2_PING:
        FUZZ_CHECK(length == 8 && (flags & NGHTTP2_FLAG_ACK), "malformed or unasked PING sent",
                   detail(at, ""));
        break;
      case NGHTTP2_GOAWAY: FUZZ_CHECK(length >= 8, "malformed GOAWAY sent", detail(at, "")); break;
      case NGHTTP2_RST_STREAM:
        FUZZ_CHECK(length == 4, "malformed RST_STREAM sent", detail(at, ""));
        break;
      case NGHTTP2_WINDOW_UPDATE: {
        FUZZ_CHECK(length == 4, "malformed WINDOW_UPDATE sent", detail(at, ""));
        const uint32_t inc = ((uint32_t{payload[0]} << 24) | (uint32_t{payload[1]} << 16) |
                              (uint32_t{payload[2]} << 8) | payload[3]) &
                             0x7fffffff;
        FUZZ_CHECK(inc != 0, "WINDOW_UPDATE of 0 sent", detail(at, ""));
        break;
      }
      case NGHTTP2_HEADERS:
        FUZZ_CHECK((flags & NGHTTP2_FLAG_END_HEADERS) != 0,
                   "HEADERS sent without END_HEADERS (no CONTINUATION expected)", detail(at, ""));
        break;
      default: break;
    }
    at += 9 + length;
  }
}

// One pass over an HTTP/2 input, as Http2Connection drives nghttp2 (mem_recv over the input as
// it arrives, mem_send after each), recording a transcript that must not depend on segmentation.
class Http2Run {
 public:
  Http2Run(std::string_view input, uint64_t seed) : input_(input), seed_(seed) {
    nghttp2_session_callbacks* cbs = nullptr;
    if (nghttp2_session_callbacks_new(&cbs) != 0) std::abort();
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &beginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &frameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &dataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &streamClose);
    session_ = proxy::newHttp2ServerSession(cbs, this, settings().max_header_list_bytes);
    nghttp2_session_callbacks_del(cbs);
    if (session_ == nullptr) std::abort();
    proxy::submitHttp2ServerSettings(session_, settings());
  }
  ~Http2Run() { nghttp2_session_del(session_); }
  Http2Run(const Http2Run&) = delete;
  Http2Run& operator=(const Http2Run&) = delete;

  static const config::Http2Settings& settings() { return snapshot().server.http2; }
  // The run ended on nghttp2's CONTINUATION bound.
  bool tooManyContinuations() const { return too_many_continuations_; }

  // piece == 0: the whole input at once; else pieces of 1..piece bytes chosen from the seed.
  const std::string& transcript(size_t piece) {
    uint64_t rng = seed_ | 1;
    size_t off = 0;
    while (off < input_.size() && !stop_) {
      size_t n = input_.size() - off;
      if (piece != 0) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        n = std::min(n, 1 + static_cast<size_t>((rng >> 33) % piece));
      }
      const ssize_t rv = nghttp2_session_mem_recv(
          session_, reinterpret_cast<const uint8_t*>(input_.data() + off), n);
      if (rv < 0) {
        too_many_continuations_ = rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS;
        // As Http2Connection::processInput: GOAWAY if possible, the rest discarded. Not in the
        // transcript: nghttp2 1.52 itself is not segmentation-independent here (a header block
        // it ignores after an invalid pseudo-header, then CONTINUATION: a connection error only
        // when the frames come in pieces; corpus/request/h2-ignored-header-block-split). The
        // heads produced before and (not) after still are compared.
        nghttp2_session_terminate_session(
            session_, rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS || rv == NGHTTP2_ERR_FLOODED
                          ? NGHTTP2_ENHANCE_YOUR_CALM
                          : NGHTTP2_PROTOCOL_ERROR);
        stop_ = true;
      } else {
        FUZZ_CHECK(static_cast<size_t>(rv) == n, "nghttp2_session_mem_recv took part of its input",
                   printable(input_));
        off += n;
      }
      send();
    }
    t_ += "eof\n";
    // The exchanges answer once the input is in (upstreams are slower than the client), so the
    // transcript does not depend on when responses went out.
    for (const auto& [id, status] : responses_) {
      if (stream(id) != nullptr) respond(id, status);
    }
    send();
    checkHttp2Output(input_, out_);
    return t_;
  }

 private:
  struct StreamState {
    explicit StreamState(uint64_t max) : headers(max) {}
    proxy::Http2RequestHeaders headers;
    proxy::RequestFraming framing;
    bool forwarded = false;
    uint64_t body = 0;
  };

  static Http2Run& self(void* u) { return *static_cast<Http2Run*>(u); }
  static bool requestHeaders(const nghttp2_frame* frame) {
    return frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
  }

  static int beginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* u) {
    if (!requestHeaders(frame)) return 0;
    auto& streams = self(u).streams_;
    FUZZ_CHECK(streams.find(frame->hd.stream_id) == streams.end(),
               "a request header block began twice on one stream", printable(self(u).input_));
    streams.emplace(frame->hd.stream_id,
                    std::make_unique<StreamState>(settings().max_header_list_bytes));
    return 0;
  }
  static int header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                    size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* u) {
    if (!requestHeaders(frame)) return 0;
    StreamState* s = self(u).stream(frame->hd.stream_id);
    if (s != nullptr) {
      s->headers.add(std::string_view(reinterpret_cast<const char*>(name), namelen),
                     std::string_view(reinterpret_cast<const char*>(value), valuelen));
    }
    return 0;
  }
  static int frameRecv(nghttp2_session*, const nghttp2_frame* frame, void* u) {
    Http2Run& r = self(u);
    StreamState* s = r.stream(frame->hd.stream_id);
    if (s == nullptr || (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)) {
      return 0;
    }
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (requestHeaders(frame)) {
      r.onHead(frame->hd.stream_id, *s, end_stream);
      s = r.stream(frame->hd.stream_id);  // gone if refused
    }
    if (end_stream && s != nullptr) r.onEnd(frame->hd.stream_id, *s);
    return 0;
  }
  static int dataChunk(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t*,
                       size_t len, void* u) {
    // As an exchange that takes everything: both windows reopen.
    nghttp2_session_consume_connection(session, len);
    nghttp2_session_consume_stream(session, stream_id, len);
    StreamState* s = self(u).stream(stream_id);
    if (s != nullptr) s->body += len;
    return 0;
  }
  static int streamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* u) {
    // (Not in the transcript: a stream closes when its response went out, and when that is
    // depends on how the input was segmented.)
    (void)error_code;
    self(u).streams_.erase(stream_id);
    return 0;
  }

  StreamState* stream(int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  void onHead(int32_t id, StreamState& s, bool end_stream) {
    using Verdict = proxy::Http2RequestHeaders::Verdict;
    const Verdict v = s.headers.complete(end_stream, s.framing);
    const proxy::RequestHead& req = s.headers.head();
    t_ += "stream " + std::to_string(id) + " head " + std::to_string(static_cast<int>(v)) + "\n";
    if (v == Verdict::Refuse) {
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_PROTOCOL_ERROR);
      streams_.erase(id);  // no exchange: what else comes on it goes nowhere
      return;
    }
    if (v == Verdict::TooLarge) {
      responses_.emplace_back(id, "431");
      return;
    }
    if (v == Verdict::NotImplemented) {
      FUZZ_CHECK(req.method == "CONNECT" || !http1Method(req.method),
                 "an HTTP/2 method HTTP/1 accepts answered 501", printable(input_));
      responses_.emplace_back(id, "501");
      return;
    }
    s.forwarded = true;
    auto detail = [&] { return "input:\n" + printable(input_) + "\n--- transcript:\n" + t_; };
    FUZZ_CHECK(!req.method.empty(), "an HTTP/2 request head without a method", detail());
    FUZZ_CHECK(!req.target.empty() &&
                   (req.target[0] == '/' || (req.method == "OPTIONS" && req.target == "*")),
               "an HTTP/2 request target neither origin-form nor OPTIONS *",
               detail() + "\n--- target: " + printable(req.target));
    int hosts = 0;
    for (const proxy::Header& h : req.headers) hosts += lower(h.name) == "host" ? 1 : 0;
    FUZZ_CHECK(hosts == 1, "an HTTP/2 request head without exactly one Host",
               detail() + "\n--- hosts: " + std::to_string(hosts));

    proxy::RequestRewrite rw;
    rw.client_ip = "192.0.2.7";
    rw.proto = "https";
    rw.variant_header = snapshot().server.variant_header;
    rw.variant = (seed_ & 1) != 0 ? "blue" : "canary";
    if (!proxy::findHeader(req.headers, "x-request-id")) rw.request_id = "0123456789abcdef";
    rw.framing = s.framing.framing;
    rw.content_length = s.framing.content_length;
    rw.upgrade = false;
    std::string up;
    proxy::appendUpstreamRequestHead(up, req, rw);
    // (A method HTTP/1 refuses is answered 501 above, so every forwarded head parses back.)
    FUZZ_CHECK(http1Method(req.method), "an HTTP/2 method HTTP/1 refuses sent upstream",
               detail());
    checkUpstreamHead(input_, up, req, rw);
    t_ += up;
    responses_.emplace_back(id, "200");
  }

  // Whether the project's HTTP/1 decoder accepts `method` (http-parser knows a fixed list).
  static bool http1Method(const std::string& method) {
    Discard sink;
    MessageDecoder d(MessageDecoder::Kind::Request, sink);
    const std::string probe = method + " / HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t consumed = 0;
    return d.decode(probe.data(), probe.size(), consumed) != Event::Error;
  }

  void onEnd(int32_t id, StreamState& s) {
    t_ += "end " + std::to_string(id) + " body " + std::to_string(s.body) + "\n";
    if (s.forwarded && s.framing.framing == BodyFraming::ContentLength) {
      FUZZ_CHECK(s.body == s.framing.content_length,
                 "an HTTP/2 Content-Length body delivered another number of bytes",
                 "want " + std::to_string(s.framing.content_length) + ", got " +
                     std::to_string(s.body) + "\ninput:\n" + printable(input_));
    }
    if (s.forwarded && s.framing.framing == BodyFraming::None) {
      FUZZ_CHECK(s.body == 0, "an HTTP/2 request without a body delivered body bytes",
                 printable(input_));
    }
  }

  void respond(int32_t id, std::string_view status) {
    nghttp2_nv nv;
    nv.name = reinterpret_cast<uint8_t*>(const_cast<char*>(":status"));
    nv.namelen = 7;
    nv.value = reinterpret_cast<uint8_t*>(const_cast<char*>(status.data()));
    nv.valuelen = status.size();
    nv.flags = NGHTTP2_NV_FLAG_NONE;
    nghttp2_submit_response(session_, id, &nv, 1, nullptr);
  }

  void send() {
    for (;;) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
  }

  std::string_view input_;
  uint64_t seed_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, std::unique_ptr<StreamState>> streams_;
  std::string t_;
  std::string out_;
  std::vector<std::pair<int32_t, std::string_view>> responses_;  // submitted at the end
  bool stop_ = false;
  bool too_many_continuations_ = false;
};

void compare(std::string_view what, std::string_view input, const std::string& a,
             const std::string& b) {
  if (a == b) return;
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  const size_t from = i > 200 ? i - 200 : 0;
  fuzz::fail(what, "input:\n" + printable(input) + "\n--- whole input, from byte " +
                       std::to_string(from) + ":\n" + printable(std::string_view(a).substr(from)) +
                       "\n--- in pieces, from byte " + std::to_string(from) + ":\n" +
                       printable(std::string_view(b).substr(from)));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  snapshot();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const uint64_t seed = fnv1a(data, size);
  const uint64_t limit = snapshot().server.limits.max_header_bytes;

  if (input.starts_with(proxy::Http2Connection::kPreface)) {
    Http2Run whole_run(input, seed);
    Http2Run pieces_run(input, seed);
    const std::string& whole = whole_run.transcript(0);
    const std::string& pieces = pieces_run.transcript(1 + seed % 64);
    // nghttp2 1.52 counts a CONTINUATION once per read its frame header spans (the top of
    // proxy/http2/server_connection.cc): small pieces may reach the bound where the whole
    // input does not (corpus/request/h2-continuation-trickled). Known, so not compared.
    if (pieces_run.tooManyContinuations() && !whole_run.tooManyContinuations()) return 0;
    compare("the HTTP/2 request stream depends on how the bytes were segmented", input, whole,
            pieces);
    return 0;
  }

  // No limit of ours (http-parser's own 80 KiB still applies): whole vs. small pieces.
  const std::string whole = Run(input, seed, 0).transcript(0);
  compare("the decoded request stream depends on how the bytes were segmented", input, whole,
          Run(input, seed, 0).transcript(1 + seed % 16));

  // The server's max_header_bytes, as the proxy runs it.
  const std::string limited = Run(input, seed, limit).transcript(0);
  compare("the max_header_bytes decision depends on how the bytes were segmented", input, limited,
          Run(input, seed, limit).transcript(1 + (seed >> 8) % 16));
  return 0;
}
