#include "proxy/downstream_conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>

#include <event2/bufferevent_ssl.h>

#include "config/tls_context.h"
#include "proxy/buffer_decode.h"
#include "proxy/log.h"
#include "proxy/rewrite.h"
#include "proxy/router.h"
#include "proxy/worker.h"

namespace sy::proxy {
namespace {


// RFC 3986 authority characters (reg-name, IP-literal, port); no userinfo, path or spaces.
bool validAuthority(std::string_view host) {
  if (host.empty()) return false;
  for (unsigned char c : host) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    std::string_view("-._~!$&'()*+,;=%:[]").find(static_cast<char>(c)) !=
                        std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool hostHeaderValid(const RequestHead& req) {
  int hosts = 0;
  for (const Header& h : req.headers) {
    if (h.name.size() == 4 && equalsIgnoreCase(h.name, "host")) {
      if (++hosts > 1 || !validAuthority(h.value)) return false;
    }
  }
  return hosts == 1 || (hosts == 0 && req.http_minor == 0);
}

void appendHex(std::string& out, uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  char buf[16];
  for (int i = 15; i >= 0; --i, v >>= 4) buf[i] = kDigits[v & 0xF];
  out.append(buf, sizeof(buf));
}

// Chunked transfer coding of one piece (RFC 9112 §7.1).
void addChunk(evbuffer* out, std::string_view data) {
  if (data.empty()) return;
  evbuffer_add_printf(out, "%zx\r\n", data.size());
  evbuffer_add(out, data.data(), data.size());
  evbuffer_add(out, "\r\n", 2);
}

constexpr std::string_view kLastChunk = "0\r\n\r\n";

uint64_t nowUs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

}  // namespace

std::unique_ptr<DownstreamConn> DownstreamConn::create(Worker& worker, evutil_socket_t fd,
                                                       const sockaddr* peer,
                                                       const std::string& listener_address,
                                                       const config::ServerTls* tls) {
  std::unique_ptr<Stream> stream;
  if (tls != nullptr) {
    config::SslPtr ssl(SSL_new(tls->defaultContext()));
    BufferEventPtr bev;
    if (ssl) {
      // The bufferevent owns the SSL and the fd from here (BEV_OPT_CLOSE_ON_FREE).
      bev.reset(bufferevent_openssl_socket_new(worker.base(), fd, ssl.get(),
                                               BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE));
      if (bev) ssl.release();
    }
    if (!bev) {
      evutil_closesocket(fd);
      return nullptr;
    }
    // Most clients close without a close_notify; that is the end of the stream, not an error.
    bufferevent_openssl_set_allow_dirty_shutdown(bev.get(), 1);
    stream = std::make_unique<TlsStream>(std::move(bev));
  } else {
    stream = PlainStream::accepted(worker.base(), fd);  // owns the fd from here, even if null
    if (!stream) return nullptr;
  }
  std::unique_ptr<DownstreamConn> conn(new DownstreamConn(worker, std::move(stream), peer));
  if (!conn->timer_.ok()) return nullptr;
  conn->listener_address_ = listener_address;
  // The SNI callback reads the snapshot's ServerTls: keep it alive as long as this connection.
  if (tls != nullptr) conn->tls_snapshot_ = worker.snapshot();
  return conn;
}

DownstreamConn::DownstreamConn(Worker& worker, std::unique_ptr<Stream> client,
                               const sockaddr* peer)
    : worker_(worker),
      client_(std::move(client)),
      tls_(client_->tls()),
      timer_(worker.base(), &DownstreamConn::timerCb, this),
      client_addr_(clientIpFromSockaddr(peer)),
      client_ip_(clientIpText(client_addr_)) {
  worker_.shared().client_connections.fetch_add(1, std::memory_order_relaxed);
  client_->setHandler(this);
  const config::Timeouts& t = timeouts();
  // Read timeout: a client that stops sending mid-body; write timeout: one that stops reading.
  client_->setTimeouts(t.client_idle_ms, t.client_idle_ms);
  request_decoder_.setMaxHeadBytes(worker_.snapshot()->server.limits.max_header_bytes);
  armTimer(t.client_header_ms);
  head_timer_armed_ = true;
}

DownstreamConn::~DownstreamConn() {
  worker_.shared().client_connections.fetch_sub(1, std::memory_order_relaxed);
}

const config::Timeouts& DownstreamConn::timeouts() const {
  return snapshot_ ? snapshot_->server.timeouts : worker_.snapshot()->server.timeouts;
}

// ---- callbacks ----------------------------------------------------------------------------

void DownstreamConn::onStreamRead() {
  FlushOnExit flush(*this);
  onClientRead();
}
void DownstreamConn::onStreamWrite() {
  FlushOnExit flush(*this);
  onClientWrite();
}
void DownstreamConn::onStreamEvent(short events) {
  FlushOnExit flush(*this);
  onClientEvent(events);
}
void DownstreamConn::timerCb(void* ctx) noexcept {
  auto* c = static_cast<DownstreamConn*>(ctx);
  FlushOnExit flush(*c);
  c->onTimer();
}

void DownstreamConn::flushOutputs() {
  if (state_ == State::Closed) return;
  client_->flush();
  if (upstream_) upstream_->stream().flush();
  if (state_ == State::Closing && evbuffer_get_length(client_->output()) == 0) {
    closeNow();
  }
}

// ---- client events -------------------------------------------------------------------------

void DownstreamConn::onClientRead() {
  if (state_ == State::Tunnel) {
    pumpTunnel();
    return;
  }
  processClientInput();
}

void DownstreamConn::onClientWrite() {
  evbuffer* out = client_->output();
  if (state_ == State::Closing) {
    if (evbuffer_get_length(out) == 0) closeNow();
    return;
  }
  if (upstream_paused_ && upstream_ && evbuffer_get_length(out) <= kLowWater) {
    upstream_paused_ = false;
    upstream_->stream().enableRead();
    if (state_ == State::Tunnel) {
      pumpTunnel();
    } else {
      processUpstreamInput();
    }
  }
}

void DownstreamConn::onClientEvent(short events) {
  if (events & BEV_EVENT_CONNECTED) return;  // TLS: the handshake is done
  if (events & BEV_EVENT_TIMEOUT) {
    // A read timeout while the request is complete only means the upstream is slow; that has
    // its own timeout. Keep listening for the client's EOF.
    if ((events & BEV_EVENT_READING) && state_ == State::Forwarding && request_done_) {
      client_->enableRead();
      return;
    }
    SY_LOG(Debug, "client %s: %s timeout", client_ip_.c_str(),
           (events & BEV_EVENT_READING) ? "read" : "write");
    closeNow();
    return;
  }
  if (events & BEV_EVENT_EOF) {
    client_eof_ = true;
    // A client that half-closes after a complete request still gets its answer. (Not over
    // TLS: there the end of the stream ends the session, and a vanished client looks the same.)
    if (state_ == State::Forwarding && request_done_ && !tls_) {
      return;  // answered, with any complete requests pipelined behind it (onResponseComplete)
    }
    // Still flushing what we owe it. Not over TLS: libevent's OpenSSL bufferevent stops
    // writing once it has read the end of the stream, so the flush would never finish and
    // the connection would linger (holding up a drain) until the idle timeout.
    if (state_ == State::Closing && !tls_) return;
    if (state_ == State::Tunnel) {
      closeNow();
      return;
    }
    // Between requests, a response just finished may still be queued: it is owed in full.
    if (!tls_ && state_ == State::ReadingHead &&
        evbuffer_get_length(client_->output()) > 0) {
      closeAfterFlush();
      return;
    }
  }
  closeNow();
}

void DownstreamConn::onTimer() {
  if (state_ == State::ReadingHead) {
    bool partial = !request_decoder_.idle() ||
                   evbuffer_get_length(client_->input()) > 0;
    if (partial && head_timer_armed_) {
      // The head did not arrive in client_header_ms (slowloris): answer 408 and close.
      head_buf_.clear();
      appendErrorResponse(head_buf_, 408, "request head timeout", false);
      writeToClient(head_buf_);
      closeAfterFlush();
      return;
    }
    closeNow();  // idle keep-alive connection
    return;
  }
  if (state_ == State::Closing) closeNow();
}

void DownstreamConn::closeWhenIdle() {
  close_when_idle_ = true;
  if (state_ == State::ReadingHead && request_decoder_.idle() &&
      evbuffer_get_length(client_->input()) == 0) {
    closeNow();
  }
}

// ---- request side --------------------------------------------------------------------------

void DownstreamConn::processClientInput() {
  if (in_process_input_) return;
  in_process_input_ = true;
  evbuffer* in = client_->input();
  while (state_ == State::ReadingHead || state_ == State::Discarding ||
         (state_ == State::Forwarding && !request_done_)) {
    if (state_ == State::Forwarding && upstreamBackpressured()) {
      // The upstream reads slower than the client sends: stop reading the client until the
      // upstream's buffer drains (onUpstreamWrite).
      client_paused_ = true;
      client_->disableRead();
      break;
    }
    size_t avail = evbuffer_get_length(in);
    if (avail == 0) break;
    if (state_ == State::ReadingHead && !head_timer_armed_) {
      armTimer(timeouts().client_header_ms);  // the first byte of a new request head
      head_timer_armed_ = true;
    }
    size_t consumed = 0;
    const MessageDecoder::Event ev = decodeFrom(request_decoder_, in, consumed);
    switch (ev) {
      case MessageDecoder::Event::NeedMore:
        break;
      case MessageDecoder::Event::HeadComplete:
        onRequestHead();
        break;
      case MessageDecoder::Event::MessageComplete:
        onRequestComplete();
        break;
      case MessageDecoder::Event::Error:
        SY_LOG(Debug, "client %s: bad request: %s", client_ip_.c_str(),
               request_decoder_.errorDescription());
        fail({ErrorSource::Downstream,
              request_decoder_.headTooLarge() ? ErrorKind::HeadTooLarge
                                              : ErrorKind::MalformedRequest});
        break;
    }
    if (ev == MessageDecoder::Event::NeedMore && consumed == 0) break;
  }
  in_process_input_ = false;
  // Half-closed and between requests: what is buffered was all answered (or is a partial
  // request that cannot complete now).
  if (client_eof_ && !tls_ && state_ == State::ReadingHead) closeAfterFlush();
  if (state_ == State::Closed) worker_.close(this);
}

void DownstreamConn::onRequestHead() {
  disarmTimer();
  head_timer_armed_ = false;
  snapshot_ = worker_.snapshot();
  start_us_ = nowUs();
  recorded_ = false;
  head_complete_ = true;
  bytes_out_ = 0;
  mirrored_ = false;
  upstream_text_.clear();
  variant_ = config::Variant::Blue;
  route_metrics_ = &worker_.routeMetrics(snapshot_->routes.size());  // unmatched until routed
  RequestHead& req = request_decoder_.request();
  request_done_ = false;
  response_started_ = false;
  request_body_bytes_ = 0;
  connect_attempts_ = 0;
  failed_over_ = false;
  keep_alive_ = request_decoder_.keepAlive() && !close_when_idle_;
  request_id_.clear();
  if (!findHeader(req.headers, "x-request-id")) {
    appendHex(request_id_, worker_.random());
    appendHex(request_id_, worker_.random());
  }

  if (req.method == "CONNECT" || (request_decoder_.upgrade() &&
                                  request_decoder_.framing() != BodyFraming::None)) {
    fail({ErrorSource::Downstream, ErrorKind::MalformedRequest});
    return;
  }
  if (req.http_major != 1) {
    fail({ErrorSource::Downstream, ErrorKind::VersionNotSupported});
    return;
  }
  // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host (absolute form brings its own).
  if (!toOriginForm(req) || !hostHeaderValid(req)) {
    fail({ErrorSource::Downstream, ErrorKind::MalformedRequest});
    return;
  }
  const uint64_t max_body = snapshot_->server.limits.max_body_bytes;
  if (max_body != 0 && request_decoder_.framing() == BodyFraming::ContentLength &&
      request_decoder_.contentLength() > max_body) {
    fail({ErrorSource::Downstream, ErrorKind::BodyTooLarge});
    return;
  }
  std::string_view host = findHeader(req.headers, "host").value_or("");
  route_ = matchRoute(*snapshot_, host, req.path());
  if (route_ == nullptr) {
    fail({ErrorSource::Downstream, ErrorKind::NoRoute});
    return;
  }
  route_metrics_ = &worker_.routeMetrics(static_cast<size_t>(route_ - snapshot_->routes.data()));
  decision_ = decide(*route_, req.headers, client_addr_, worker_.random(), worker_.random());
  variant_ = decision_.variant;
  if (!variantUsable(variant_)) {
    // SPEC §4.5: the chosen variant has no healthy server.
    if (route_->failover && *route_->failover != variant_ && variantUsable(*route_->failover)) {
      variant_ = *route_->failover;
      failed_over_ = true;
    } else {
      fail({ErrorSource::Upstream, ErrorKind::NoHealthyServer});
      return;
    }
  }
  request_chunked_ = request_decoder_.framing() == BodyFraming::Chunked;
  state_ = State::Forwarding;
  if (!connectUpstream(-1)) return;
  if (route_->shadow && !request_decoder_.upgrade()) startShadow();
  // Expect: 100-continue is answered here, once we know the body is wanted; the upstream
  // never sees the Expect header (rewrite.cc drops it).
  if (request_decoder_.framing() != BodyFraming::None) {
    if (auto expect = findHeader(req.headers, "expect");
        expect && equalsIgnoreCase(*expect, "100-continue")) {
      writeToClient("HTTP/1.1 100 Continue\r\n\r\n");
    }
  }
}

bool DownstreamConn::variantUsable(config::Variant v) {
  UpstreamPool* pool = worker_.poolFor(route_->pools[static_cast<size_t>(v)]);
  return pool != nullptr && pool->hasUsableServer();
}

bool DownstreamConn::connectUpstream(int exclude_server) {
  const config::Pool* cfg = route_->pools[static_cast<size_t>(variant_)];
  UpstreamPool* pool = worker_.poolFor(cfg);
  std::unique_ptr<UpstreamConn> conn;
  if (pool != nullptr && pool->serverCount() > 0) {
    conn = pool->acquire(exclude_server, timeouts().upstream_connect_ms);
  }
  ++connect_attempts_;
  if (!conn) {
    failUpstream(ErrorKind::ConnectFailed);
    return false;
  }
  std::unique_ptr<UpstreamConn> previous = std::move(upstream_);
  const size_t previous_head_len = upstream_head_len_;
  upstream_ = std::move(conn);
  upstream_->attach(this);
  writeUpstreamHead();  // rebuilt: after a failover it names another variant
  if (previous) {
    // A retry: nothing reached the failed server, so the body read so far, queued after the
    // old head, moves to the new connection.
    previous->attach(nullptr);
    evbuffer_drain(previous->output(), previous_head_len);
    evbuffer_add_buffer(upstream_->output(), previous->output());
    previous->pool().release(std::move(previous), false);
  }
  if (upstream_->connected()) {
    const uint32_t ms = timeouts().upstream_response_ms;
    upstream_->stream().setTimeouts(request_done_ ? ms : 0, ms);
  }
  response_decoder_.reset();
  response_decoder_.setHeadRequest(request_decoder_.request().method == "HEAD");
  response_decoder_.setMaxHeadBytes(snapshot_->server.limits.max_header_bytes);
  return true;
}

RequestRewrite DownstreamConn::upstreamRewrite() const {
  RequestRewrite rw;
  rw.client_ip = client_ip_;
  rw.proto = tls_ ? "https" : "http";
  rw.variant_header = snapshot_->server.variant_header;
  rw.variant = config::variantName(variant_);
  rw.request_id = request_id_;
  rw.framing = request_decoder_.framing();
  rw.content_length = request_decoder_.contentLength();
  rw.upgrade = request_decoder_.upgrade();
  return rw;
}

void DownstreamConn::startShadow() {
  const RequestRewrite rw = upstreamRewrite();
  shadow_ = worker_.mirror().start(ShadowStart{snapshot_, *route_, *route_metrics_,
                                               request_decoder_.request(), rw, decision_.key,
                                               worker_.random()});
  mirrored_ = shadow_ != nullptr;
}

void DownstreamConn::detachShadow(bool complete) {
  if (shadow_ == nullptr) return;
  ShadowRequest* s = shadow_;
  shadow_ = nullptr;
  if (complete) {
    s->primaryResponseComplete();
  } else {
    s->primaryAborted();
  }
}

void DownstreamConn::writeUpstreamHead() {
  head_buf_.clear();
  appendUpstreamRequestHead(head_buf_, request_decoder_.request(), upstreamRewrite());
  evbuffer_add(upstream_->output(), head_buf_.data(), head_buf_.size());
  upstream_head_len_ = head_buf_.size();
}

void DownstreamConn::onRequestBody(std::string_view data) {
  if (state_ == State::Discarding) return;
  if (state_ != State::Forwarding || !upstream_) return;
  request_body_bytes_ += data.size();
  const uint64_t max_body = snapshot_->server.limits.max_body_bytes;
  if (max_body != 0 && request_body_bytes_ > max_body) {
    // A chunked body that outgrew the limit; the upstream gets a truncated request and the
    // connection to it is dropped.
    fail({ErrorSource::Downstream, ErrorKind::BodyTooLarge});
    return;
  }
  if (request_chunked_) {
    addChunk(upstream_->output(), data);
  } else {
    evbuffer_add(upstream_->output(), data.data(), data.size());
  }
  if (shadow_ != nullptr) shadow_->requestBody(data);
}

void DownstreamConn::onRequestComplete() {
  if (state_ == State::Discarding) {
    finishExchange();
    return;
  }
  if (state_ != State::Forwarding) return;
  request_done_ = true;
  if (request_chunked_ && upstream_) {
    evbuffer_add(upstream_->output(), kLastChunk.data(), kLastChunk.size());
  }
  if (shadow_ != nullptr) shadow_->requestComplete();
  if (upstream_ && upstream_->connected()) {
    const uint32_t ms = timeouts().upstream_response_ms;
    upstream_->stream().setTimeouts(ms, ms);
  }
}

// ---- upstream events -----------------------------------------------------------------------

void DownstreamConn::onUpstreamRead() {
  FlushOnExit flush(*this);
  if (state_ == State::Tunnel) {
    pumpTunnel();
    return;
  }
  processUpstreamInput();
}

void DownstreamConn::onUpstreamWrite() {
  FlushOnExit flush(*this);
  if (client_paused_ && upstream_ && evbuffer_get_length(upstream_->output()) <= kLowWater) {
    client_paused_ = false;
    client_->enableRead();
    if (state_ == State::Tunnel) {
      pumpTunnel();
    } else {
      processClientInput();
    }
  }
}

void DownstreamConn::onUpstreamEvent(short events) {
  FlushOnExit flush(*this);
  if (events & BEV_EVENT_CONNECTED) {
    upstream_->setConnected();
    const uint32_t ms = timeouts().upstream_response_ms;
    upstream_->stream().setTimeouts(request_done_ ? ms : 0, ms);
    return;
  }
  if (!upstream_->connected()) {
    SY_LOG(Warn, "upstream %s: connect failed (%s)", upstream_->address().text.c_str(),
           upstream_->describeFailure(events).c_str());
    failUpstream(ErrorKind::ConnectFailed);
    return;
  }
  if (state_ == State::Tunnel) {
    pumpTunnel();
    closeAfterFlush();
    return;
  }
  if (events & BEV_EVENT_TIMEOUT) {
    failUpstream(ErrorKind::ResponseTimeout);
    return;
  }
  // EOF or error: first take whatever arrived before it.
  processUpstreamInput();
  if (state_ != State::Forwarding || !upstream_) return;
  if (events & BEV_EVENT_EOF) {
    MessageDecoder::Event ev = response_decoder_.finish();
    if (ev == MessageDecoder::Event::MessageComplete) {
      onResponseComplete();  // a close-delimited body ends here
      return;
    }
  }
  failUpstream(response_started_ ? ErrorKind::MalformedResponse
                                 : ErrorKind::ResetBeforeResponse);
}

// ---- response side -------------------------------------------------------------------------

void DownstreamConn::processUpstreamInput() {
  while (state_ == State::Forwarding && upstream_) {
    if (clientBackpressured()) {
      // The client reads slower than the upstream sends: stop reading the upstream until the
      // client's buffer drains (onClientWrite).
      upstream_paused_ = true;
      upstream_->stream().disableRead();
      return;
    }
    size_t consumed = 0;
    const MessageDecoder::Event ev = decodeFrom(response_decoder_, upstream_->input(), consumed);
    switch (ev) {
      case MessageDecoder::Event::NeedMore:
        if (consumed == 0) return;
        break;
      case MessageDecoder::Event::HeadComplete:
        onResponseHead();
        break;
      case MessageDecoder::Event::MessageComplete:
        if (interim_response_) {
          interim_response_ = false;  // the final response follows
          break;
        }
        if (upgraded_) {
          startTunnel();  // what follows in the input is the tunnelled protocol
          return;
        }
        onResponseComplete();
        return;
      case MessageDecoder::Event::Error:
        SY_LOG(Warn, "upstream %s: malformed response: %s", upstream_->address().text.c_str(),
               response_decoder_.errorDescription());
        failUpstream(ErrorKind::MalformedResponse);
        return;
    }
  }
}

void DownstreamConn::onResponseHead() {
  const ResponseHead& resp = response_decoder_.response();
  if (resp.status / 100 == 1 && resp.status != 101) {
    interim_response_ = true;  // 100 Continue / 103 Early Hints: we answered Expect ourselves
    return;
  }
  const RequestHead& req = request_decoder_.request();
  const bool http10 = req.http_major == 1 && req.http_minor == 0;
  upstream_text_ = upstream_->address().text;
  if (resp.status == 101 && !request_decoder_.upgrade()) {
    // Switching protocols nobody asked for: the rest of the stream is not HTTP we can frame.
    SY_LOG(Warn, "upstream %s: 101 to a request without Upgrade", upstream_text_.c_str());
    failUpstream(ErrorKind::MalformedResponse);
    return;
  }
  upstream_->pool().reportResult(upstream_->serverIndex(), resp.status < 500);
  ResponseRewrite rw;
  rw.variant_header = snapshot_->server.variant_header;
  rw.variant = config::variantName(variant_);
  std::string cookie;
  if (decision_.set_cookie) {
    cookie = route_->assign_cookie + "=" + decision_.key;
    rw.set_cookie = cookie;
  }
  if (shadow_ != nullptr) shadow_->primaryResponseHead(resp);
  if (resp.status == 101 && request_decoder_.upgrade()) {
    rw.upgrade = true;
    rw.framing = BodyFraming::None;
    head_buf_.clear();
    appendDownstreamResponseHead(head_buf_, resp, rw);
    writeToClient(head_buf_);
    response_started_ = true;
    upgraded_ = true;  // the tunnel starts once the decoder has consumed the whole head
    return;
  }
  if (request_decoder_.upgrade()) keep_alive_ = false;  // refused upgrade: do not resync
  switch (response_decoder_.framing()) {
    case BodyFraming::None:
      rw.framing = BodyFraming::None;
      break;
    case BodyFraming::ContentLength:
      rw.framing = BodyFraming::ContentLength;
      rw.content_length = response_decoder_.contentLength();
      break;
    case BodyFraming::Chunked:
    case BodyFraming::UntilClose:
      // HTTP/1.1 clients get chunked coding (so the connection survives a close-delimited
      // upstream body); HTTP/1.0 clients get a close-delimited body.
      if (http10) {
        rw.framing = BodyFraming::UntilClose;
        keep_alive_ = false;
      } else {
        rw.framing = BodyFraming::Chunked;
      }
      break;
  }
  response_chunked_ = rw.framing == BodyFraming::Chunked;
  if (close_when_idle_) keep_alive_ = false;  // tell the client before we close
  if (client_eof_ && evbuffer_get_length(client_->input()) == 0) {
    keep_alive_ = false;  // half-closed, nothing pipelined behind: this is the last response
  }
  rw.keep_alive = keep_alive_;
  rw.http10_client = http10;
  head_buf_.clear();
  appendDownstreamResponseHead(head_buf_, resp, rw);
  writeToClient(head_buf_);
  response_started_ = true;
}

void DownstreamConn::onResponseBody(std::string_view data) {
  if (interim_response_) return;
  if (shadow_ != nullptr) shadow_->primaryResponseBody(data);
  bytes_out_ += data.size();
  evbuffer* out = client_->output();
  if (response_chunked_) {
    addChunk(out, data);
  } else {
    evbuffer_add(out, data.data(), data.size());
  }
}

void DownstreamConn::onResponseComplete() {
  if (response_chunked_) writeToClient(kLastChunk);
  recordOutcome(static_cast<int>(response_decoder_.response().status));
  detachShadow(true);
  // The upstream connection is reusable only at a clean message boundary: the whole request
  // went out, the response said keep-alive and was length-delimited, nothing extra followed.
  const bool reusable = request_done_ && response_decoder_.keepAlive() &&
                        response_decoder_.framing() != BodyFraming::UntilClose &&
                        evbuffer_get_length(upstream_->input()) == 0 &&
                        evbuffer_get_length(upstream_->output()) == 0;
  releaseUpstream(reusable);
  if (!request_done_) {
    // The upstream answered before reading the whole request (e.g. its own 413): the rest of
    // the request body cannot be skipped safely, so the connection ends here.
    keep_alive_ = false;
  }
  if (!keep_alive_ ||
      (client_eof_ && evbuffer_get_length(client_->input()) == 0)) {
    closeAfterFlush();
    return;
  }
  finishExchange();
}

void DownstreamConn::startTunnel() {
  state_ = State::Tunnel;
  recordOutcome(101);
  disarmTimer();
  // No timeouts on a tunnel beyond the idle ones: a WebSocket may stay quiet for long.
  const uint32_t idle = timeouts().client_idle_ms;
  upstream_->stream().setTimeouts(idle, idle);
  client_->enableRead();
  upstream_->stream().enableRead();
  pumpTunnel();
}

void DownstreamConn::pumpTunnel() {
  if (!upstream_) return;
  evbuffer* client_in = client_->input();
  evbuffer* client_out = client_->output();
  if (evbuffer_get_length(upstream_->input()) > 0) {
    evbuffer_add_buffer(client_out, upstream_->input());
  }
  if (evbuffer_get_length(client_in) > 0) {
    evbuffer_add_buffer(upstream_->output(), client_in);
  }
  if (clientBackpressured()) {
    upstream_paused_ = true;
    upstream_->stream().disableRead();
  }
  if (upstreamBackpressured()) {
    client_paused_ = true;
    client_->disableRead();
  }
}

// ---- errors: the one place they become statuses --------------------------------------------

void DownstreamConn::failUpstream(ErrorKind kind) {
  ProxyError error{ErrorSource::Upstream, kind, false};
  if (route_metrics_ != nullptr) {
    route_metrics_->slot(worker_.index(), variant_).recordUpstreamError(kind);
  }
  if (upstream_) upstream_->pool().reportResult(upstream_->serverIndex(), false);
  // Only a failed connect is retried: nothing reached the server, so any method is safe.
  if (kind == ErrorKind::ConnectFailed) {
    error.retryable = true;
  }
  fail(error);
}

void DownstreamConn::fail(const ProxyError& error) {
  if (state_ == State::Closing || state_ == State::Closed) return;
  if (error.retryable && route_ != nullptr && state_ == State::Forwarding) {
    const int failed_server = upstream_ ? static_cast<int>(upstream_->serverIndex()) : -1;
    UpstreamPool* pool = worker_.poolFor(route_->pools[static_cast<size_t>(variant_)]);
    if (connect_attempts_ < 2 && pool != nullptr && pool->serverCount() > 1) {
      connectUpstream(failed_server);  // once, on another server of the same pool
      return;
    }
    if (!failed_over_ && route_->failover && *route_->failover != variant_ &&
        variantUsable(*route_->failover)) {
      // Every try of the chosen variant failed to connect: its pool is unusable now.
      SY_LOG(Warn, "route %s: variant %s unreachable, failing over to %s",
             route_->name.c_str(), config::variantName(variant_),
             config::variantName(*route_->failover));
      failed_over_ = true;
      variant_ = *route_->failover;
      connect_attempts_ = 0;
      connectUpstream(-1);
      return;
    }
  }
  if (upstream_) releaseUpstream(false);
  detachShadow(false);
  if (response_started_) {
    // Too late for a status: cut the client connection so it sees a truncated response.
    SY_LOG(Info, "%s %s: response cut short (%s)", request_decoder_.request().method.c_str(),
           request_decoder_.request().target.c_str(), messageFor(error.kind));
    recordOutcome(static_cast<int>(response_decoder_.response().status));
    // What was already relayed still goes out, without a terminating chunk: the client sees
    // the truncation when the connection closes.
    response_chunked_ = false;
    closeAfterFlush();
    return;
  }
  const int status = statusFor(error.kind);
  if (route_metrics_ == nullptr) {
    // Refused before a head was complete (400, 431, 408): counted as unmatched.
    route_metrics_ = &worker_.routeMetrics(worker_.snapshot()->routes.size());
    variant_ = config::Variant::Blue;
    start_us_ = nowUs();
    recorded_ = false;
    bytes_out_ = 0;
    request_id_.clear();
  }
  recordOutcome(status);
  if (error.source == ErrorSource::Upstream) {
    SY_LOG(Info, "%s %s -> %d (%s)", request_decoder_.request().method.c_str(),
           request_decoder_.request().target.c_str(), status, messageFor(error.kind));
  }
  // The connection survives only where the request framing is still trustworthy and the
  // rest of the request can be skipped: a complete request, or one without a body.
  const bool framing_ok = error.kind != ErrorKind::MalformedRequest &&
                          error.kind != ErrorKind::HeadTooLarge &&
                          error.kind != ErrorKind::BodyTooLarge &&
                          error.kind != ErrorKind::VersionNotSupported;
  const bool rest_skippable =
      request_done_ ||
      (request_decoder_.framing() == BodyFraming::None && !request_decoder_.upgrade());
  const bool keep = keep_alive_ && framing_ok && rest_skippable;
  head_buf_.clear();
  appendErrorResponse(head_buf_, status, messageFor(error.kind), keep, request_id_);
  writeToClient(head_buf_);
  response_started_ = true;
  if (!keep) {
    closeAfterFlush();
  } else if (request_done_) {
    finishExchange();
  } else {
    state_ = State::Discarding;  // the (empty) rest of the request ends the exchange
  }
}

// ---- exchange and connection lifetime ------------------------------------------------------

void DownstreamConn::releaseUpstream(bool reusable) {
  if (!upstream_) return;
  upstream_->attach(nullptr);
  upstream_paused_ = false;
  if (client_paused_) {
    client_paused_ = false;
    client_->enableRead();
  }
  UpstreamPool& pool = upstream_->pool();
  pool.release(std::move(upstream_), reusable);
}

void DownstreamConn::recordOutcome(int status) {
  if (recorded_ || route_metrics_ == nullptr) return;
  recorded_ = true;
  const uint64_t duration_us = nowUs() - start_us_;
  route_metrics_->slot(worker_.index(), variant_).recordResponse(status, duration_us);
  if (!worker_.shared().access_log.enabled()) return;
  const RequestHead& req = request_decoder_.request();
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  AccessLogEntry e;
  e.ts_ms = static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000 -
            static_cast<int64_t>(duration_us / 1000);
  e.client = client_ip_;
  // Refused before its head was complete, a request has no method, host or path to log (the
  // decoder's head is partial then).
  if (head_complete_) {
    e.method = req.method;
    e.host = findHeader(req.headers, "host").value_or("");
    e.path = req.target;
  }
  e.status = status;
  e.bytes_out = bytes_out_;
  e.duration_ms = static_cast<double>(duration_us) / 1000.0;
  e.route = route_ ? std::string_view(route_->name) : std::string_view();
  e.variant = route_ ? config::variantName(variant_) : "";
  e.upstream = upstream_text_;
  e.request_id = request_id_.empty() && head_complete_
                     ? findHeader(req.headers, "x-request-id").value_or("")
                     : std::string_view(request_id_);
  e.shadow = mirrored_;
  worker_.logAccess(e);
}

void DownstreamConn::finishExchange() {
  state_ = State::ReadingHead;
  snapshot_.reset();
  route_ = nullptr;
  route_metrics_ = nullptr;
  head_complete_ = false;
  request_done_ = false;
  response_started_ = false;
  interim_response_ = false;
  upgraded_ = false;
  if (close_when_idle_) {
    // Draining (or the listener went away): the response just sent may still be buffered.
    closeAfterFlush();
    return;
  }
  armTimer(timeouts().client_idle_ms);
  head_timer_armed_ = false;
  // Pipelined requests already buffered are served now (unless we are inside
  // processClientInput, whose loop continues with them).
  if (!in_process_input_) processClientInput();
}

void DownstreamConn::closeAfterFlush() {
  if (state_ == State::Closing || state_ == State::Closed) return;
  state_ = State::Closing;
  releaseUpstream(false);
  detachShadow(false);
  client_->disableRead();
  if (evbuffer_get_length(client_->output()) == 0) {
    closeNow();
    return;
  }
  // Bound the flush: a client that never reads must not keep us forever.
  armTimer(timeouts().client_idle_ms);
}

void DownstreamConn::closeNow() {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  releaseUpstream(false);
  detachShadow(false);
  disarmTimer();
  client_->setHandler(nullptr);
  if (!in_process_input_) worker_.close(this);
}

void DownstreamConn::armTimer(uint32_t ms) { timer_.setDeadline(LazyTimer::nowMs() + ms); }

void DownstreamConn::disarmTimer() { timer_.cancel(); }

void DownstreamConn::writeToClient(std::string_view data) {
  bytes_out_ += data.size();
  evbuffer_add(client_->output(), data.data(), data.size());
}

bool DownstreamConn::clientBackpressured() const {
  return evbuffer_get_length(client_->output()) > kHighWater;
}

bool DownstreamConn::upstreamBackpressured() const {
  return upstream_ && evbuffer_get_length(upstream_->output()) > kHighWater;
}

}  // namespace sy::proxy
