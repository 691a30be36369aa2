#include "proxy/http2/server_connection.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <charconv>
#include <vector>

#include "common/log.h"
#include "proxy/http/rewrite.h"
#include "proxy/http2/request_head.h"
#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {
namespace {

// ---- abuse budgets (SPEC §12) ----
//
// Per connection, over EventWindow's sliding 10 s. A client going *beyond* a budget gets
// GOAWAY(ENHANCE_YOUR_CALM). Each budget is far above what a browser sends, while each flood
// it stops (thousands of frames per second) reaches it in well under a second:
//
// - Resets (rapid reset, CVE-2023-44487): streams that closed before their exchange ended its
//   response: RST_STREAM from the client (any error code), or nghttp2's reset of a malformed
//   request. Beyond max(kResetFloor, 2 * max_concurrent_streams) while they are more than half
//   of the streams opened in the window, or beyond kResetCeiling whatever the share. A browser
//   leaving a page cancels at most its streams in flight, max_concurrent_streams of them: two
//   such navigations within 10 s stay within budget, and a page that cancels a few requests
//   now and then is nowhere near.
// - SETTINGS without ACK: beyond 100. A client sends one at the start, rarely a second.
// - PING without ACK: beyond 100 (10 a second). Browsers ping for liveness, seconds apart.
// - PRIORITY: beyond 1000. RFC 7540 priority trees (Firefox's) cost a handful per page and one
//   per reprioritized stream.
// - DATA with no payload and without END_STREAM: beyond 100. Such a frame carries nothing and
//   ends nothing (an empty DATA with END_STREAM ends a request body: not counted).
//
// What nghttp2 1.52.0 (Debian 1.52.0-1+deb12u3) bounds itself, set explicitly by
// newHttp2ServerSession (request_head.cc):
// - A client that does not read while it sends PING or SETTINGS: at kMaxOutboundAck ACKs
//   queued nghttp2_session_mem_recv fails with NGHTTP2_ERR_FLOODED (no GOAWAY of its own):
//   answered here with GOAWAY(ENHANCE_YOUR_CALM), reason ping or settings. A client that reads
//   never gets there; the PING/SETTINGS budgets above are what bounds it.
// - SETTINGS entries per frame: kMaxSettingsEntries (nghttp2 ends the connection itself).
// - RST_STREAM (deb12u1's backport of the CVE-2023-44487 fix): a token bucket, burst 1000 and
//   33 a second, GOAWAY(INTERNAL_ERROR), not counted here. Kept as a backstop: the reset
//   budget above is reached first (within 10 s nghttp2 allows at least 1000 resets, ours at
//   most kResetCeiling); it acts alone only on a client resetting 34-100 streams a second for
//   a while, less than half of the streams it opens.
// - CONTINUATION (deb12u2's backport of the CVE-2024-28182 fix, nghttp2's answer to
//   CVE-2024-27316): more than max_continuations CONTINUATION frames after one HEADERS fail
//   nghttp2_session_mem_recv with NGHTTP2_ERR_TOO_MANY_CONTINUATIONS (no GOAWAY of its own):
//   answered with GOAWAY(ENHANCE_YOUR_CALM), reason continuation. The frames a header list of
//   max_header_list_bytes needs at the default SETTINGS_MAX_FRAME_SIZE (16 KiB, never raised
//   here; HPACK never makes a field list larger than RFC 9113 counts it), at least nghttp2's
//   default 8, would do; but this nghttp2 counts a CONTINUATION frame once per
//   nghttp2_session_mem_recv call its 9-byte frame header spans (found by the fuzzer: one
//   CONTINUATION whose header arrived a byte per read was "too many"), so max_continuations
//   is twice that: every frame header may straddle a read boundary. A header block is then
//   at most (that + 1) * 16 KiB (272 KiB by default) before END_HEADERS, decoded as it
//   arrives; onHeader keeps no field past max_header_list_bytes, and client_header_ms bounds
//   a block that never ends.
// - HPACK: the client's dynamic table is the kHttp2HpackTableBytes we announce
//   (SETTINGS_HEADER_TABLE_SIZE; nghttp2's inflater refuses a larger size update with
//   COMPRESSION_ERROR), ours at most kHttp2HpackTableBytes whatever size the client announces
//   (max_deflate_dynamic_table_size).
constexpr uint32_t kResetFloor = 100;
constexpr uint32_t kResetCeiling = 1000;
constexpr uint32_t kSettingsBudget = 100;
constexpr uint32_t kPingBudget = 100;
constexpr uint32_t kPriorityBudget = 1000;
constexpr uint32_t kEmptyDataBudget = 100;

std::string_view view(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

nghttp2_nv makeNv(std::string_view name, std::string_view value) {
  nghttp2_nv nv;
  nv.name = reinterpret_cast<uint8_t*>(const_cast<char*>(name.data()));
  nv.namelen = name.size();
  nv.value = reinterpret_cast<uint8_t*>(const_cast<char*>(value.data()));
  nv.valuelen = value.size();
  nv.flags = NGHTTP2_NV_FLAG_NONE;  // nghttp2 copies both
  return nv;
}

void appendNumber(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  (void)ec;
  out.append(buf, end);
}

// Fields to hand to nghttp2 with their names lower-cased (HTTP/2 requires it): copied into one
// buffer as they come, the nv entries made once the list is complete (they point into it).
class LowerCaseFields {
 public:
  void add(std::string_view name, std::string_view value) {
    Span span;
    span.name = text_.size();
    for (char c : name) text_.push_back(asciiLower(c));
    span.value = text_.size();
    text_.append(value);
    span.end = text_.size();
    spans_.push_back(span);
  }
  // Appends the nv entries, valid while this object is unchanged.
  void appendTo(std::vector<nghttp2_nv>& nva) const {
    const std::string_view all(text_);
    for (const Span& span : spans_) {
      nva.push_back(makeNv(all.substr(span.name, span.value - span.name),
                           all.substr(span.value, span.end - span.value)));
    }
  }
  size_t size() const { return spans_.size(); }
  bool empty() const { return spans_.empty(); }
  // Names and values, uncompressed: what the access log counts.
  size_t bytes() const { return text_.size(); }

 private:
  struct Span {
    size_t name, value, end;
  };
  std::vector<Span> spans_;
  std::string text_;
};

}  // namespace

// ---- one stream: its request head and its exchange's ResponseEncoder ------------------------

class Http2Connection::Stream final : public Deferrable, public ResponseEncoder {
 public:
  Stream(Http2Connection& c, int32_t stream_id)
      : conn(c), id(stream_id), request(c.max_header_list_bytes_), out(evbuffer_new()) {}

  RequestHandler& handler() {
    if (!exchange) {
      ConnectionInfo info;
      info.client_ip = conn.client_ip_;
      info.client_addr = &conn.client_addr_;
      info.tls = conn.tls_;
      info.http2 = true;
      exchange = conn.factory_.newExchange(*this, info);
    }
    return *exchange;
  }
  bool alive() const { return !conn.closed_ && !closed; }

  // ResponseEncoder.
  void encodeHead(const Head& h) override {
    if (!alive() || response_started) return;
    response_started = true;
    ResponseRewrite rw;
    rw.variant_header = h.variant_header;
    rw.variant = h.variant;
    rw.set_cookie = h.set_cookie;
    switch (h.framing) {
      case BodyFraming::None: rw.framing = BodyFraming::None; break;
      case BodyFraming::ContentLength:
        rw.framing = BodyFraming::ContentLength;
        rw.content_length = h.content_length;
        break;
      case BodyFraming::Chunked:
      case BodyFraming::UntilClose:
        rw.framing = BodyFraming::UntilClose;  // DATA frames until END_STREAM; no length
        break;
    }
    std::string status;
    appendNumber(status, h.head.status);
    LowerCaseFields fields;
    forEachDownstreamResponseHeader(h.head, rw, [&](std::string_view name, std::string_view value) {
      fields.add(name, value);
    });
    std::vector<nghttp2_nv> nva;
    nva.reserve(fields.size() + 1);
    nva.push_back(makeNv(":status", status));
    fields.appendTo(nva);
    bytes_out += fields.bytes() + status.size();  // the fields uncompressed, as the log counts
    submit(nva);
  }

  void encodeBody(std::string_view data) override {
    if (!alive() || response_done) return;
    bytes_out += data.size();
    evbuffer_add(out.get(), data.data(), data.size());
    if (evbuffer_get_length(out.get()) > kHighWater) was_high = true;
    resume();
  }

  void encodeEnd(const Headers& trailers) override {
    if (!alive() || response_done) return;
    response_done = true;
    // Kept until the data provider reaches the end of the body (read), which sends them.
    for (const Header& t : trailers) {
      if (forwardableTrailer(t.name)) response_trailers.add(t.name, t.value);
    }
    bytes_out += response_trailers.bytes();
    resume();
  }

  void encodeLocalReply(const LocalReply& reply) override {
    if (!alive() || response_started) return;
    response_started = true;
    response_done = true;
    std::string status;
    appendNumber(status, static_cast<uint64_t>(reply.status));
    std::string length;
    appendNumber(length, reply.message.size() + 1);
    std::vector<nghttp2_nv> nva{makeNv(":status", status),
                                makeNv("content-type", "text/plain; charset=utf-8"),
                                makeNv("content-length", length)};
    if (!reply.request_id.empty()) nva.push_back(makeNv("x-request-id", reply.request_id));
    // Bytes as the access log counts them: the fields (uncompressed) and the body.
    for (const nghttp2_nv& nv : nva) bytes_out += nv.namelen + nv.valuelen;
    // (The answer to HEAD has no body, only its length: RFC 9110 §9.3.2.)
    if (request.head().method != "HEAD") {
      evbuffer_add(out.get(), reply.message.data(), reply.message.size());
      evbuffer_add(out.get(), "\n", 1);
      bytes_out += reply.message.size() + 1;
    }
    // (reply.close: the framing of other streams is not affected; only this stream ends.)
    submit(nva);
  }

  void encodeAbort() override {
    if (!alive() || response_done) return;
    response_done = true;
    aborted = true;
    evbuffer_drain(out.get(), evbuffer_get_length(out.get()));
    nghttp2_submit_rst_stream(conn.session_.get(), NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
  }

  void encodeContinue() override {
    if (!alive() || !expect_continue || continue_sent || response_started) return;
    continue_sent = true;
    const nghttp2_nv nv = makeNv(":status", "100");
    nghttp2_submit_headers(conn.session_.get(), NGHTTP2_FLAG_NONE, id, nullptr, &nv, 1, nullptr);
  }

  bool encoderBackpressured() const override { return evbuffer_get_length(out.get()) > kHighWater; }

  void resumeRequestBody() override {
    if (!alive() || unconsumed == 0) return;
    nghttp2_session_consume_stream(conn.session_.get(), id, unconsumed);
    unconsumed = 0;
  }

  uint64_t bytesEncoded() const override { return bytes_out; }

  void flush() override { conn.flush(); }

  // The data provider: what the exchange encoded so far, END_STREAM once it ended (on the
  // trailers' HEADERS frame when there are some, RFC 9113 §8.1).
  ssize_t read(uint8_t* buf, size_t length, uint32_t* data_flags) {
    const size_t have = evbuffer_get_length(out.get());
    const size_t n = std::min(have, length);
    if (n > 0) evbuffer_remove(out.get(), buf, n);
    if (was_high && evbuffer_get_length(out.get()) <= kLowWater) {
      was_high = false;
      drained = true;  // told from a callback of its own (notifyDrained)
      event_active(conn.drain_event_.get(), 0, 0);
    }
    if (evbuffer_get_length(out.get()) == 0) {
      if (response_done) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!response_trailers.empty()) {
          *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          submitTrailers();
        }
      } else if (n == 0) {
        deferred = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    return static_cast<ssize_t>(n);
  }

  Http2Connection& conn;
  const int32_t id;
  Http2RequestHeaders request;  // the header list, then (once head_done) the head
  RequestFraming framing;
  uint64_t header_deadline = 0;  // LazyTimer clock; 0 once the head is complete
  uint64_t unconsumed = 0;       // DATA bytes taken while backpressured: window not reopened
  uint64_t bytes_out = 0;
  EvBufferPtr out;                    // response body bytes not yet framed
  LowerCaseFields response_trailers;  // the forwardable ones, until the body is out
  bool head_done = false;
  bool request_done = false;
  bool response_started = false;
  bool response_done = false;  // the exchange ended its response (end, reply or abort)
  bool aborted = false;
  bool deferred = false;  // the data provider waits for resume()
  bool was_high = false;  // out went above kHighWater
  bool drained = false;   // ... and back to kLowWater: onEncoderDrained is owed
  bool expect_continue = false;
  bool continue_sent = false;
  bool closed = false;  // nghttp2 closed the stream
  // Last: freed first, while the stream it encodes for is still whole.
  std::unique_ptr<RequestHandler> exchange;

 private:
  void submit(const std::vector<nghttp2_nv>& nva) {
    nghttp2_data_provider provider;
    provider.source.ptr = this;
    provider.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                                uint32_t* data_flags, nghttp2_data_source* source,
                                void*) -> ssize_t {
      return static_cast<Stream*>(source->ptr)->read(buf, length, data_flags);
    };
    const int rv =
        nghttp2_submit_response(conn.session_.get(), id, nva.data(), nva.size(), &provider);
    if (rv != 0) {
      SY_LOG(Debug, "client %s: stream %d: cannot submit the response: %s", conn.client_ip_.c_str(),
             id, nghttp2_strerror(rv));
      nghttp2_submit_rst_stream(conn.session_.get(), NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    }
  }

  // From the data provider, at the end of the body (nghttp2 copies the fields).
  void submitTrailers() {
    std::vector<nghttp2_nv> nva;
    nva.reserve(response_trailers.size());
    response_trailers.appendTo(nva);
    const int rv = nghttp2_submit_trailer(conn.session_.get(), id, nva.data(), nva.size());
    if (rv != 0) {
      SY_LOG(Debug, "client %s: stream %d: cannot submit the trailers: %s", conn.client_ip_.c_str(),
             id, nghttp2_strerror(rv));
      nghttp2_submit_rst_stream(conn.session_.get(), NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    }
  }

  void resume() {
    if (!deferred || !response_started) return;
    deferred = false;
    nghttp2_session_resume_data(conn.session_.get(), id);
  }
};

// ---- nghttp2 callbacks ---------------------------------------------------------------------

struct Http2Connection::Callbacks {
  static Http2Connection& self(void* user_data) {
    return *static_cast<Http2Connection*>(user_data);
  }

  static int beginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* u) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    return self(u).onBeginHeaders(frame->hd.stream_id);
  }
  static int header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                    size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* u) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    // On a server session a HEADERS frame after the request's is its trailer section (nghttp2
    // refuses one without END_STREAM or with pseudo-headers).
    const bool trailer = frame->headers.cat == NGHTTP2_HCAT_HEADERS;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST && !trailer) return 0;
    return self(u).onHeader(frame->hd.stream_id, trailer, view(name, namelen),
                            view(value, valuelen));
  }
  static int frameRecv(nghttp2_session*, const nghttp2_frame* frame, void* u) {
    const bool request_headers =
        frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
    // (padlen counts the Pad Length field too.)
    const size_t data_length =
        frame->hd.type == NGHTTP2_DATA && frame->hd.length > frame->data.padlen
            ? frame->hd.length - frame->data.padlen
            : 0;
    return self(u).onFrameRecv(frame->hd.stream_id, frame->hd.type, frame->hd.flags,
                               request_headers, data_length);
  }
  static int dataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                       size_t len, void* u) {
    return self(u).onDataChunk(stream_id, view(data, len));
  }
  static int frameSend(nghttp2_session*, const nghttp2_frame* frame, void* u) {
    return self(u).onFrameSend(frame->hd.stream_id, frame->hd.type, frame->hd.flags);
  }
  static int streamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* u) {
    return self(u).onStreamClose(stream_id, error_code);
  }
};

struct Http2Connection::FlushOnExit {
  explicit FlushOnExit(Http2Connection& c) : conn(c) {}
  ~FlushOnExit() { conn.flush(); }
  Http2Connection& conn;
};

// ---- lifetime ------------------------------------------------------------------------------

std::unique_ptr<Http2Connection> Http2Connection::create(
    WorkerContext& worker, ExchangeFactory& factory, Owner& owner,
    const config::SnapshotConstSharedPtr& current, std::unique_ptr<Transport> transport,
    const sockaddr* peer, const std::string& listener_address,
    config::SnapshotConstSharedPtr tls_snapshot, WorkerCounters* counters) {
  std::unique_ptr<Http2Connection> conn(
      new Http2Connection(worker, factory, owner, current, std::move(transport), peer));
  if (!conn->timer_.ok() || !conn->drain_event_ || !conn->init()) return nullptr;
  conn->listener_address_ = listener_address;
  conn->tls_snapshot_ = std::move(tls_snapshot);
  conn->counters_ = counters;
  return conn;
}

Http2Connection::Http2Connection(WorkerContext& worker, ExchangeFactory& factory, Owner& owner,
                                 const config::SnapshotConstSharedPtr& current,
                                 std::unique_ptr<Transport> t, const sockaddr* peer)
    : worker_(worker),
      factory_(factory),
      owner_(owner),
      current_(current),
      client_(std::move(t)),
      timer_(worker.base(), &Http2Connection::timerCb, this),
      client_addr_(clientIpFromSockaddr(peer)),
      client_ip_(clientIpText(client_addr_)),
      session_(nullptr, &nghttp2_session_del),
      drain_event_(event_new(worker.base(), -1, 0, &Http2Connection::drainCb, this)),
      tls_(client_->tls()) {
  worker_.connections().client.fetch_add(1, std::memory_order_relaxed);
  client_->setHandler(this);
  const config::Timeouts& timeouts = settings().timeouts;
  header_ms_ = timeouts.client_header_ms;
  idle_ms_ = timeouts.client_idle_ms;
  max_header_list_bytes_ = settings().http2.max_header_list_bytes;
  reset_budget_ = std::max<uint32_t>(kResetFloor, 2 * settings().http2.max_concurrent_streams);
  // Read timeout: a client silent that long while it has no stream waiting (onTransportEvent);
  // write timeout: one that stops reading.
  client_->setTimeouts(timeouts.client_idle_ms, timeouts.client_idle_ms);
}

Http2Connection::~Http2Connection() {
  timer_.stop();
  drain_event_.reset();
  client_->setHandler(nullptr);
  // The session goes before the streams its stream data points at.
  session_.reset();
  worker_.connections().client.fetch_sub(1, std::memory_order_relaxed);
}

bool Http2Connection::init() {
  nghttp2_session_callbacks* cbs = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0) return false;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &Callbacks::beginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::frameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::dataChunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &Callbacks::frameSend);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::streamClose);
  nghttp2_session* session = newHttp2ServerSession(cbs, this, max_header_list_bytes_);
  nghttp2_session_callbacks_del(cbs);
  if (session == nullptr) return false;
  session_.reset(session);
  return true;
}

void Http2Connection::start() {
  FlushOnExit flush(*this);
  submitHttp2ServerSettings(session_.get(), settings().http2);
  updateTimer();
  if (evbuffer_get_length(client_->input()) > 0) processInput();
}

void Http2Connection::closeWhenIdle() {
  if (closed_ || draining_ || calm_) return;
  draining_ = true;
  nghttp2_submit_goaway(session_.get(), NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_.get()), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  // Sent now, but never closed inside this call: the owner may be iterating its connections.
  sendPending();
  client_->flush();
  updateTimer();
}

// ---- transport callbacks -------------------------------------------------------------------

void Http2Connection::onTransportRead() {
  FlushOnExit flush(*this);
  processInput();
}

void Http2Connection::onTransportWrite() {
  FlushOnExit flush(*this);
  // The output drained: nghttp2 may send what waited for room (sendPending, at flush).
}

void Http2Connection::onTransportEvent(short events) {
  FlushOnExit flush(*this);
  if (events & BEV_EVENT_CONNECTED) return;
  if ((events & BEV_EVENT_TIMEOUT) && (events & BEV_EVENT_READING) && !streams_.empty()) {
    // A quiet client with streams waiting for their upstreams: those have their own timeouts.
    client_->enableRead();
    return;
  }
  if (events & BEV_EVENT_TIMEOUT) {
    SY_LOG(Debug, "client %s: HTTP/2 %s timeout", client_ip_.c_str(),
           (events & BEV_EVENT_READING) ? "read" : "write");
  }
  clientGone();
}

void Http2Connection::timerCb(void* ctx) noexcept {
  auto* c = static_cast<Http2Connection*>(ctx);
  FlushOnExit flush(*c);
  c->onTimer();
}

void Http2Connection::onTimer() {
  if (closed_) return;
  if (calm_) {
    // The GOAWAY(ENHANCE_YOUR_CALM) had its moment: done.
    clientGone();
    return;
  }
  if (streams_.empty()) {
    // Idle (client_idle_ms without a stream), or draining with nothing left.
    closeNow();
    return;
  }
  const uint64_t now = LazyTimer::nowMs();
  for (auto& [id, s] : streams_) {
    if (s->head_done || s->header_deadline == 0 || now < s->header_deadline) continue;
    // A header block that did not complete in client_header_ms (slowloris over CONTINUATION):
    // the whole connection waits on it, so it ends; the exchange answers 408 for the log.
    s->handler().decodeError({ErrorSource::Downstream, ErrorKind::HeadTimeout}, nullptr);
    clientGone();
    return;
  }
  updateTimer();
}

void Http2Connection::updateTimer() {
  if (closed_) return;
  if (calm_) {
    timer_.cancel();
    timer_.setDeadline(calm_deadline_);
    return;
  }
  if (streams_.empty()) {
    timer_.cancel();
    // Draining with nothing open: closed from the timer, once the GOAWAY had a moment to go.
    timer_.setDeadline(LazyTimer::nowMs() + (draining_ ? kDrainLingerMs : idle_ms_));
    return;
  }
  uint64_t deadline = 0;
  for (const auto& [id, s] : streams_) {
    if (!s->head_done && s->header_deadline != 0 &&
        (deadline == 0 || s->header_deadline < deadline)) {
      deadline = s->header_deadline;
    }
  }
  timer_.cancel();
  if (deadline != 0) timer_.setDeadline(deadline);
}

// ---- request side --------------------------------------------------------------------------

Http2Connection::Stream* Http2Connection::stream(int32_t id) const {
  return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session_.get(), id));
}

void Http2Connection::processInput() {
  if (closed_) return;
  evbuffer* in = client_->input();
  if (calm_) {
    // Beyond a budget: read on only so the client sees the GOAWAY rather than a reset.
    evbuffer_drain(in, evbuffer_get_length(in));
    return;
  }
  ++in_nghttp2_;
  while (evbuffer_get_length(in) > 0) {
    evbuffer_iovec vec;
    if (evbuffer_peek(in, -1, nullptr, &vec, 1) < 1) break;
    const ssize_t n = nghttp2_session_mem_recv(
        session_.get(), static_cast<const uint8_t*>(vec.iov_base), vec.iov_len);
    if (n < 0 && (calm_ || n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS || n == NGHTTP2_ERR_FLOODED)) {
      // A budget's callback stopped nghttp2 (calm_), or one of nghttp2's own bounds.
      if (n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
        calmDown(Http2Abuse::Continuation);
      } else if (n == NGHTTP2_ERR_FLOODED) {
        const uint64_t now = LazyTimer::nowMs();
        calmDown(ping_frames_.count(now) >= settings_frames_.count(now) ? Http2Abuse::Ping
                                                                        : Http2Abuse::Settings);
      }
      evbuffer_drain(in, evbuffer_get_length(in));
      break;
    }
    if (n < 0) {
      SY_LOG(Debug, "client %s: HTTP/2: %s", client_ip_.c_str(),
             nghttp2_strerror(static_cast<int>(n)));
      // A connection error nghttp2 could not answer with GOAWAY itself (bad preface, flood):
      // say so if possible, then close.
      nghttp2_session_terminate_session(session_.get(), NGHTTP2_PROTOCOL_ERROR);
      evbuffer_drain(in, evbuffer_get_length(in));
      close_wanted_ = true;
      break;
    }
    evbuffer_drain(in, static_cast<size_t>(n));
    if (calm_) evbuffer_drain(in, evbuffer_get_length(in));
    if (close_wanted_ || calm_) break;
  }
  --in_nghttp2_;
  updateTimer();
}

int Http2Connection::onBeginHeaders(int32_t stream_id) {
  if (calm_) return NGHTTP2_ERR_CALLBACK_FAILURE;
  opened_.add(LazyTimer::nowMs());
  auto s = std::make_unique<Stream>(*this, stream_id);
  s->header_deadline = LazyTimer::nowMs() + header_ms_;
  nghttp2_session_set_stream_user_data(session_.get(), stream_id, s.get());
  streams_[stream_id] = std::move(s);
  return 0;
}

int Http2Connection::onHeader(int32_t stream_id, bool trailer, std::string_view name,
                              std::string_view value) {
  Stream* s = stream(stream_id);
  if (s == nullptr) return 0;
  if (trailer) {
    s->request.addTrailer(name, value);
  } else {
    s->request.add(name, value);
  }
  return 0;
}

void Http2Connection::headComplete(Stream& s, bool end_stream) {
  s.head_done = true;
  s.header_deadline = 0;
  switch (s.request.complete(end_stream, s.framing)) {
    case Http2RequestHeaders::Verdict::TooLarge:
      s.handler().decodeError({ErrorSource::Downstream, ErrorKind::HeadTooLarge}, nullptr);
      return;
    case Http2RequestHeaders::Verdict::NotImplemented:
      s.handler().decodeError({ErrorSource::Downstream, ErrorKind::MethodNotImplemented}, nullptr);
      return;
    case Http2RequestHeaders::Verdict::Refuse:
      nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, s.id, NGHTTP2_PROTOCOL_ERROR);
      return;
    case Http2RequestHeaders::Verdict::Forward: break;
  }
  s.expect_continue = s.framing.expect_continue;
  s.handler().decodeHead(s.request.head(), s.framing);
}

void Http2Connection::requestEnd(Stream& s) {
  if (s.request_done) return;
  s.request_done = true;
  if (!s.exchange || !s.head_done || s.response_done) return;
  if (s.request.trailersTooLarge()) {
    // As a head beyond the limit would be, this late: 431 unless the response has begun (then
    // the stream is reset); the upstream's request is cut short.
    s.exchange->decodeError({ErrorSource::Downstream, ErrorKind::HeadTooLarge}, &s.request.head());
    return;
  }
  s.exchange->decodeEnd(s.request.trailers());
}

bool Http2Connection::withinBudget(int32_t stream_id, uint8_t type, uint8_t flags,
                                   size_t data_length) {
  (void)stream_id;
  if (calm_) return false;
  const uint64_t now = LazyTimer::nowMs();
  auto over = [&](EventWindow& window, uint32_t budget, Http2Abuse reason) {
    if (window.add(now) <= budget) return false;
    calmDown(reason);
    return true;
  };
  switch (type) {
    case NGHTTP2_SETTINGS:
      return (flags & NGHTTP2_FLAG_ACK) != 0 ||
             !over(settings_frames_, kSettingsBudget, Http2Abuse::Settings);
    case NGHTTP2_PING:
      return (flags & NGHTTP2_FLAG_ACK) != 0 || !over(ping_frames_, kPingBudget, Http2Abuse::Ping);
    case NGHTTP2_PRIORITY: return !over(priority_frames_, kPriorityBudget, Http2Abuse::Priority);
    case NGHTTP2_DATA:
      return data_length != 0 || (flags & NGHTTP2_FLAG_END_STREAM) != 0 ||
             !over(empty_data_frames_, kEmptyDataBudget, Http2Abuse::EmptyData);
    default: return true;
  }
}

void Http2Connection::calmDown(Http2Abuse reason) {
  if (calm_ || closed_) return;
  calm_ = true;
  SY_LOG(Info, "client %s: HTTP/2 %s beyond its budget: GOAWAY(ENHANCE_YOUR_CALM)",
         client_ip_.c_str(), kHttp2AbuseNames[static_cast<size_t>(reason)]);
  if (counters_ != nullptr) counters_->recordHttp2Goaway(reason);
  // Names the last stream nghttp2 took, and closes the session once it is sent.
  nghttp2_session_terminate_session(session_.get(), NGHTTP2_ENHANCE_YOUR_CALM);
  calm_deadline_ = LazyTimer::nowMs() + kCalmLingerMs;
  abandonStreams();
  updateTimer();
}

int Http2Connection::onFrameRecv(int32_t stream_id, uint8_t type, uint8_t flags,
                                 bool request_headers, size_t data_length) {
  if (!withinBudget(stream_id, type, flags, data_length)) return NGHTTP2_ERR_CALLBACK_FAILURE;
  if (type != NGHTTP2_HEADERS && type != NGHTTP2_DATA) return 0;
  Stream* s = stream(stream_id);
  if (s == nullptr) return 0;
  const bool end_stream = (flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (request_headers) {
    headComplete(*s, end_stream);
    updateTimer();
  }
  if (end_stream) requestEnd(*s);
  return 0;
}

int Http2Connection::onDataChunk(int32_t stream_id, std::string_view data) {
  // The connection window reopens at once; the stream's only for what its exchange took.
  nghttp2_session_consume_connection(session_.get(), data.size());
  Stream* s = stream(stream_id);
  if (s == nullptr) return 0;
  if (!s->exchange || !s->head_done || s->response_done) {
    nghttp2_session_consume_stream(session_.get(), stream_id, data.size());
    return 0;
  }
  s->exchange->decodeBody(data);
  if (s->unconsumed == 0 && s->exchange && !s->exchange->bodyBackpressured()) {
    nghttp2_session_consume_stream(session_.get(), stream_id, data.size());
  } else {
    s->unconsumed += data.size();  // given back by resumeRequestBody
  }
  return 0;
}

int Http2Connection::onFrameSend(int32_t stream_id, uint8_t type, uint8_t flags) {
  if ((type != NGHTTP2_HEADERS && type != NGHTTP2_DATA) || !(flags & NGHTTP2_FLAG_END_STREAM)) {
    return 0;
  }
  Stream* s = stream(stream_id);
  if (s != nullptr && !s->request_done) {
    // The response is complete before the request (an early answer): the client may stop
    // sending (RFC 9113 §8.1).
    nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

int Http2Connection::onStreamClose(int32_t stream_id, uint32_t error_code) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return 0;
  std::unique_ptr<Stream> s = std::move(it->second);
  streams_.erase(it);
  s->closed = true;
  bool early = false;
  if (!s->response_done) {
    // Reset by the client (or by nghttp2 for a malformed request) before the exchange ended.
    SY_LOG(Debug, "client %s: stream %d closed early (%s)", client_ip_.c_str(), stream_id,
           nghttp2_http2_strerror(error_code));
    s->response_done = true;
    early = true;
    if (s->exchange) s->exchange->onClientGone();
  }
  worker_.deferDelete(std::move(s));
  if (early && !calm_ && !closed_) {
    // The rapid-reset budget (see the top).
    const uint64_t now = LazyTimer::nowMs();
    const uint32_t resets = resets_.add(now);
    if (resets > kResetCeiling ||
        (resets > reset_budget_ && uint64_t{resets} * 2 > opened_.count(now))) {
      calmDown(Http2Abuse::RapidReset);
      return 0;
    }
  }
  if (streams_.empty()) updateTimer();  // idle from now (or, draining, done)
  return 0;
}

// ---- EventWindow ------------------------------------------------------------------------------

void Http2Connection::EventWindow::advance(uint64_t second) {
  if (second <= second_) return;
  if (second - second_ >= kSeconds) {
    slots_.fill(0);
    total_ = 0;
  } else {
    for (uint64_t s = second_ + 1; s <= second; ++s) {
      uint32_t& slot = slots_[s % kSeconds];
      total_ -= slot;
      slot = 0;
    }
  }
  second_ = second;
}

uint32_t Http2Connection::EventWindow::add(uint64_t now_ms) {
  advance(now_ms / 1000);
  ++slots_[second_ % kSeconds];
  return ++total_;
}

uint32_t Http2Connection::EventWindow::count(uint64_t now_ms) {
  advance(now_ms / 1000);
  return total_;
}

// ---- output ---------------------------------------------------------------------------------

void Http2Connection::sendPending() {
  if (closed_ || !session_) return;
  if (in_nghttp2_ > 0) {
    send_wanted_ = true;
    return;
  }
  ++in_nghttp2_;
  evbuffer* out = client_->output();
  while (evbuffer_get_length(out) < kHighWater) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_.get(), &data);
    if (n < 0) {
      SY_LOG(Debug, "client %s: HTTP/2 send: %s", client_ip_.c_str(),
             nghttp2_strerror(static_cast<int>(n)));
      close_wanted_ = true;
      break;
    }
    if (n == 0) break;
    evbuffer_add(out, data, static_cast<size_t>(n));
  }
  --in_nghttp2_;
  send_wanted_ = false;
}

void Http2Connection::drainCb(evutil_socket_t, short, void* ctx) noexcept {
  auto* c = static_cast<Http2Connection*>(ctx);
  FlushOnExit flush(*c);
  c->notifyDrained();
}

void Http2Connection::notifyDrained() {
  if (closed_) return;
  // Streams whose buffered response fell to kLowWater: their exchanges read on.
  std::vector<int32_t> drained;
  for (auto& [id, s] : streams_) {
    if (s->drained) {
      s->drained = false;
      drained.push_back(id);
    }
  }
  for (int32_t id : drained) {
    auto it = streams_.find(id);
    if (it != streams_.end() && it->second->exchange) it->second->exchange->onEncoderDrained();
  }
}

void Http2Connection::flush() {
  if (closed_) return;
  for (auto& [id, s] : streams_) {
    if (s->exchange) s->exchange->flush();
  }
  sendPending();
  if (closed_) return;
  client_->flush();
  if (close_wanted_) {
    closeNow();
    return;
  }
  if (calm_) {
    // Once the GOAWAY(ENHANCE_YOUR_CALM) is out: FIN after it, then read (and discard) until
    // the client closes or kCalmLingerMs ends (onTimer).
    if (!calm_shut_ && !nghttp2_session_want_write(session_.get())) {
      calm_shut_ = true;
      client_->shutdownWrite();
    }
    return;
  }
  // nghttp2 is done (GOAWAY sent and no stream left, or the peer's GOAWAY) and so is the
  // output: the connection ends.
  if (!nghttp2_session_want_read(session_.get()) && !nghttp2_session_want_write(session_.get()) &&
      evbuffer_get_length(client_->output()) == 0) {
    closeNow();
    return;
  }
  if (draining_ && streams_.empty() && evbuffer_get_length(client_->output()) == 0) {
    closeNow();
  }
}

void Http2Connection::clientGone() {
  if (closed_) return;
  abandonStreams();
  closeNow();
}

void Http2Connection::abandonStreams() {
  // Streams may be unlinked by the exchanges' calls: collect first.
  std::vector<int32_t> ids;
  for (auto& [id, s] : streams_) ids.push_back(id);
  for (int32_t id : ids) {
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;
    Stream& s = *it->second;
    if (!s.response_done && s.exchange) {
      s.response_done = true;
      s.exchange->onClientGone();
    }
  }
}

void Http2Connection::closeNow() {
  if (closed_) return;
  if (in_nghttp2_ > 0) {
    close_wanted_ = true;
    return;
  }
  closed_ = true;
  timer_.stop();
  event_del(drain_event_.get());
  for (auto& [id, s] : streams_) {
    s->closed = true;
    if (!s->response_done && s->exchange) {
      s->response_done = true;
      s->exchange->onClientGone();
    }
  }
  session_.reset();  // (no callbacks from here: the streams can go)
  for (auto& [id, s] : streams_) worker_.deferDelete(std::move(s));
  streams_.clear();
  client_->setHandler(nullptr);
  owner_.connectionClosed(this);
}

}  // namespace sy::proxy
