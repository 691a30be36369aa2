#include "proxy/exchange/exchange.h"

#include <ctime>
#include <vector>

#include "common/log.h"
#include "proxy/http/rewrite.h"
#include "proxy/routing/router.h"

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

// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host, and a Host field is valid whatever
// the request-target's form (an absolute-form target does not excuse a bad Host).
bool hostHeaderValid(const RequestHead& req) {
  int hosts = 0;
  for (const Header& h : req.headers) {
    if (h.name.size() == 4 && equalsIgnoreCase(h.name, "host")) {
      if (++hosts > 1 || !validAuthority(h.value)) return false;
    }
  }
  return hosts == 1 || (hosts == 0 && req.http_minor == 0);
}

// 16 hex digits of `v` at `out`.
void writeHex(char* out, uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i, v >>= 4) out[i] = kDigits[v & 0xF];
}

uint64_t nowUs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// Freed Exchange blocks of this thread, reused by the next ones (see Exchange::operator new).
// Not under AddressSanitizer, so that it still sees a use after free.
struct ExchangeFreeList {
  static constexpr size_t kMax = 1024;
  std::vector<void*> blocks;
  ~ExchangeFreeList() {
    for (void* p : blocks) ::operator delete(p);
  }
};
thread_local ExchangeFreeList t_free_exchanges;
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kRecycle = false;
#else
constexpr bool kRecycle = true;
#endif

}  // namespace

void* Exchange::operator new(size_t size) {
  std::vector<void*>& blocks = t_free_exchanges.blocks;
  if (kRecycle && size == sizeof(Exchange) && !blocks.empty()) {
    void* p = blocks.back();
    blocks.pop_back();
    return p;
  }
  return ::operator new(size);
}

void Exchange::operator delete(void* p, size_t size) {
  std::vector<void*>& blocks = t_free_exchanges.blocks;
  if (kRecycle && size == sizeof(Exchange) && blocks.size() < ExchangeFreeList::kMax) {
    blocks.push_back(p);
    return;
  }
  ::operator delete(p);
}

// Ends each upstream callback: what it queued goes out, one write per side. The encoder's
// flush sends the upstream side first (through flush() of its current exchange: this one, or,
// when this one ended, the next one, which this exchange's callback may have started).
struct Exchange::FlushOnExit {
  explicit FlushOnExit(Exchange& e) : exchange(e) {}
  ~FlushOnExit() { exchange.encoder_.flush(); }
  Exchange& exchange;
};

Exchange::Exchange(ExchangeContext& ctx, ResponseEncoder& encoder, const ConnectionInfo& connection)
    : ctx_(ctx),
      encoder_(encoder),
      connection_(connection),
      client_(connection.client_addr != nullptr ? *connection.client_addr : ClientIp{}),
      client_text_(connection.client_ip),
      start_us_(nowUs()) {}

Exchange::~Exchange() {
  releaseUpstream(false);
  detachShadow(false);
}

void Exchange::flush() {
  if (upstream_) upstream_->transport().flush();
}

// ---- request side --------------------------------------------------------------------------

void Exchange::takeHead(RequestHead& head) {
  head_ = &head;
  snapshot_ = ctx_.snapshot;
  route_metrics_ = &ctx_.routeMetrics(snapshot_->routes.size());  // unmatched until routed
  // SPEC §13: behind a trusted balancer the client is the one X-Forwarded-For names.
  if (!snapshot_->server.trusted_proxies.empty()) {
    const ClientIp client = requestClient(client_, head.headers, snapshot_->server.trusted_proxies);
    if (client.bytes != client_.bytes) {
      client_ = client;
      client_text_storage_ = clientIpText(client_);
      client_text_ = client_text_storage_;
    }
  }
  if (!findHeader(head.headers, "x-request-id")) {
    writeHex(request_id_buf_, ctx_.worker.random());
    writeHex(request_id_buf_ + 16, ctx_.worker.random());
    request_id_ = {request_id_buf_, sizeof(request_id_buf_)};
  }
}

void Exchange::decodeHead(RequestHead& head, const RequestFraming& framing) {
  takeHead(head);
  framing_ = framing;
  if (!hostHeaderValid(head) || !toOriginForm(head)) {
    fail({ErrorSource::Downstream, ErrorKind::MalformedRequest});
    return;
  }
  const uint64_t max_body = snapshot_->server.limits.max_body_bytes;
  if (max_body != 0 && framing.framing == BodyFraming::ContentLength &&
      framing.content_length > max_body) {
    fail({ErrorSource::Downstream, ErrorKind::BodyTooLarge});
    return;
  }
  std::string_view host = findHeader(head.headers, "host").value_or("");
  route_ = matchRoute(*snapshot_, host, head.path());
  if (route_ == nullptr) {
    fail({ErrorSource::Downstream, ErrorKind::NoRoute});
    return;
  }
  route_metrics_ = &ctx_.routeMetrics(static_cast<size_t>(route_ - snapshot_->routes.data()));
  // Segment conditions are worked out only if an override or the rollout asks (SPEC §13).
  SegmentMatcher segments(snapshot_->segments, snapshot_->geoip.get(), head.headers, client_);
  decision_ =
      decide(*route_, head.headers, client_, ctx_.worker.random(), ctx_.worker.random(), &segments);
  // The access log's country, from the lookup the segments may already have made.
  if (snapshot_->geoip && connection_.client_addr && ctx_.access_log.enabled()) {
    country_ = segments.country();
    country_known_ = true;
  }
  variant_ = decision_.variant;
  if (decision_.set_cookie) set_cookie_ = route_->assign_cookie + "=" + decision_.key;
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
  if (!connectUpstream(-1)) return;
  if (route_->shadow && !framing.upgrade) startShadow();
  // Expect: 100-continue is answered here, once we know the body is wanted; the upstream
  // never sees the Expect header (rewrite.cc drops it).
  if (framing.expect_continue) encoder_.encodeContinue();
}

void Exchange::decodeBody(std::string_view data) {
  if (ended_ || !upstream_) return;
  if (upgrade_accepted_) {  // tunnel bytes from the client
    client().sendBody(data);
    return;
  }
  request_body_bytes_ += data.size();
  const uint64_t max_body = snapshot_->server.limits.max_body_bytes;
  if (max_body != 0 && request_body_bytes_ > max_body) {
    // A chunked body that outgrew the limit; the upstream gets a truncated request and the
    // connection to it is dropped.
    fail({ErrorSource::Downstream, ErrorKind::BodyTooLarge});
    return;
  }
  client().sendBody(data);
  if (shadow_ != nullptr) shadow_->requestBody(data);
}

void Exchange::decodeEnd(const Headers& trailers) {
  if (ended_) return;
  request_done_ = true;
  if (upstream_) {
    client().endRequest(trailers);
    upstream_->armResponseTimeouts(snapshot_->server.timeouts.upstream_response_ms, true);
  }
  if (shadow_ != nullptr) shadow_->requestComplete();
}

void Exchange::decodeError(const ProxyError& error, RequestHead* head) {
  if (ended_) return;
  if (head != nullptr && head_ == nullptr) takeHead(*head);
  fail(error);
}

void Exchange::onClientGone() {
  if (ended_) {
    releaseUpstream(false);
    return;
  }
  const Termination t{TerminationSource::Client, requestPhase()};
  ended_ = true;
  releaseUpstream(false);
  detachShadow(false);
  // A response in progress is counted with its status; none sent: status 0 in the log.
  recordOutcome(response_started_ ? static_cast<int>(response_status_) : 0, t);
}

bool Exchange::bodyBackpressured() const {
  return upstream_ && evbuffer_get_length(upstream_->output()) > Transport::kReadHighWater;
}

void Exchange::onEncoderDrained() {
  if (!upstream_paused_ || !upstream_) return;
  FlushOnExit flush(*this);
  upstream_paused_ = false;
  upstream_->transport().enableRead();
  readUpstream();
}

// ---- upstream ------------------------------------------------------------------------------

UpstreamPool* Exchange::poolOf(config::Variant v) const {
  return ctx_.pools.find(route_->pools[static_cast<size_t>(v)]);
}

bool Exchange::variantUsable(config::Variant v) const {
  UpstreamPool* pool = poolOf(v);
  return pool != nullptr && pool->hasUsableServer();
}

RequestRewrite Exchange::upstreamRewrite() const {
  RequestRewrite rw;
  // The connection's address (the peer, or the PROXY header's source) is appended to the
  // chain as received, never the client found in it: the upstream sees every hop.
  rw.client_ip = connection_.client_ip;
  rw.proto = connection_.tls ? "https" : "http";
  rw.variant_header = snapshot_->server.variant_header;
  rw.variant = config::variantName(variant_);
  rw.request_id = request_id_;
  rw.framing = framing_.framing;
  rw.content_length = framing_.content_length;
  rw.upgrade = framing_.upgrade;
  return rw;
}

bool Exchange::connectUpstream(int exclude_server, bool fresh) {
  UpstreamPool* pool = poolOf(variant_);
  std::unique_ptr<UpstreamConn> conn;
  if (pool != nullptr && pool->serverCount() > 0) {
    conn = pool->acquire(exclude_server, snapshot_->server.timeouts.upstream_connect_ms, fresh);
  }
  ++connect_attempts_;
  if (!conn) {
    failUpstream(ErrorKind::ConnectFailed);
    return false;
  }
  std::unique_ptr<UpstreamConn> previous = std::move(upstream_);
  upstream_ = std::move(conn);
  upstream_->attach(this);
  if (previous) {
    // A retry: the request moves, with the body read so far that never left.
    client().replayFrom(previous->client(), *head_, upstreamRewrite());
    previous->attach(nullptr);
    previous->pool().release(std::move(previous), false);
  } else {
    client().begin(*this, *head_, upstreamRewrite(), snapshot_->server.limits.max_header_bytes);
  }
  upstream_->armResponseTimeouts(snapshot_->server.timeouts.upstream_response_ms, request_done_);
  return true;
}

void Exchange::onUpstreamRead() {
  FlushOnExit flush(*this);
  readUpstream();
}

void Exchange::onUpstreamWrite() {
  FlushOnExit flush(*this);
  // The upstream drained what the request body filled: the connection reads on (a no-op
  // unless bodyBackpressured() had stopped it).
  if (upstream_ && evbuffer_get_length(upstream_->output()) <= Transport::kWriteLowWater) {
    encoder_.resumeRequestBody();
  }
}

void Exchange::onUpstreamEvent(short events) {
  FlushOnExit flush(*this);
  if (events & BEV_EVENT_CONNECTED) {
    upstream_->setConnected();
    upstream_->armResponseTimeouts(snapshot_->server.timeouts.upstream_response_ms, request_done_);
    return;
  }
  if (!upstream_->connected()) {
    SY_LOG(Warn, "upstream %s: connect failed (%s)", upstream_->address().text.c_str(),
           upstream_->describeFailure(events).c_str());
    failUpstream(ErrorKind::ConnectFailed);
    return;
  }
  if (upgrade_accepted_) {
    // The tunnel ends with the upstream's side: what arrived before goes out first.
    readUpstream();
    if (!ended_) {
      ended_ = true;
      releaseUpstream(false);
      encoder_.encodeEnd({});  // a tunnel has no trailers
    }
    return;
  }
  if (events & BEV_EVENT_TIMEOUT) {
    failUpstream(ErrorKind::ResponseTimeout);
    return;
  }
  // EOF or error: first take whatever arrived before it.
  readUpstream();
  if (ended_ || !upstream_) return;
  if ((events & BEV_EVENT_EOF) && client().readEof() == Http1Client::Result::Complete) {
    onResponseComplete();  // a close-delimited body ends here
    return;
  }
  upstream_eof_ = (events & BEV_EVENT_EOF) && !(events & BEV_EVENT_ERROR);
  failUpstream(response_started_ ? ErrorKind::MalformedResponse : ErrorKind::ResetBeforeResponse);
}

void Exchange::readUpstream() {
  while (!ended_ && upstream_) {
    const Http1Client::Result r = client().readResponse([this] {
      if (!encoder_.encoderBackpressured()) return false;
      // The client reads slower than the upstream sends: stop reading the upstream until
      // the client's buffer drains (onEncoderDrained).
      upstream_paused_ = true;
      upstream_->transport().disableRead();
      return true;
    });
    switch (r) {
      case Http1Client::Result::NeedMore:
      case Http1Client::Result::Paused: return;
      case Http1Client::Result::Error:
        SY_LOG(Warn, "upstream %s: malformed response: %s", upstream_->address().text.c_str(),
               client().errorDescription());
        failUpstream(ErrorKind::MalformedResponse);
        return;
      case Http1Client::Result::Complete:
        if (upgrade_accepted_ && !client().tunnel()) {
          // The 101's head is complete: what follows in the input is the tunnelled protocol.
          client().startTunnel();
          recordOutcome(101, {});
          // No timeouts on a tunnel beyond the idle ones: a WebSocket may stay quiet for long.
          const uint32_t idle = snapshot_->server.timeouts.client_idle_ms;
          upstream_->transport().setTimeouts(idle, idle);
          continue;
        }
        onResponseComplete();
        return;
    }
  }
}

void Exchange::onResponseHead(const ResponseHead& resp, BodyFraming framing,
                              uint64_t content_length) {
  if (ended_) return;
  upstream_text_ = upstream_->address().text;
  if (resp.status == 101 && !framing_.upgrade) {
    // Switching protocols nobody asked for: the rest of the stream is not HTTP we can frame.
    SY_LOG(Warn, "upstream %s: 101 to a request without Upgrade", upstream_text_.c_str());
    failUpstream(ErrorKind::MalformedResponse);
    return;
  }
  upstream_->pool().reportResult(upstream_->serverIndex(), resp.status < 500);
  if (shadow_ != nullptr) shadow_->primaryResponseHead(resp);
  response_status_ = resp.status;
  response_started_ = true;
  if (route_->rollout) {
    route_metrics_->slot(ctx_.worker.index(), variant_).recordLatency(nowUs() - start_us_);
  }
  upgrade_accepted_ = resp.status == 101;
  encoder_.encodeHead({resp, framing, content_length, snapshot_->server.variant_header,
                       config::variantName(variant_), set_cookie_, upgrade_accepted_});
}

void Exchange::onResponseBody(std::string_view data) {
  if (ended_) return;
  if (shadow_ != nullptr && !upgrade_accepted_) shadow_->primaryResponseBody(data);
  encoder_.encodeBody(data);
}

void Exchange::onResponseComplete() {
  ended_ = true;
  recordOutcome(static_cast<int>(response_status_), {});
  detachShadow(true);
  // The trailers stay in the released connection's decoder (freed deferred, or idle in its pool
  // until it decodes again), so they outlive the call.
  const Headers& trailers = client().trailers();
  releaseUpstream(request_done_ && client().reusable());
  encoder_.encodeEnd(trailers);  // last: the connection may start the next exchange from here
}

void Exchange::startShadow() {
  const RequestRewrite rw = upstreamRewrite();
  shadow_ = ctx_.mirror.start(ShadowStart{snapshot_, *route_, *route_metrics_, *head_, rw,
                                          decision_.key, ctx_.worker.random()});
  mirrored_ = shadow_ != nullptr;
}

void Exchange::detachShadow(bool complete) {
  if (shadow_ == nullptr) return;
  ShadowRequest* s = shadow_;
  shadow_ = nullptr;
  if (complete) {
    s->primaryResponseComplete();
  } else {
    s->primaryAborted();
  }
}

void Exchange::releaseUpstream(bool reusable) {
  if (!upstream_) return;
  upstream_->attach(nullptr);
  upstream_paused_ = false;
  UpstreamPool& pool = upstream_->pool();
  pool.release(std::move(upstream_), reusable);
}

// ---- errors: the one place they become statuses --------------------------------------------

bool Exchange::retryable(ErrorKind kind) const {
  // Nothing reached the server (a failed connect), or a reused keep-alive connection was
  // closed (FIN) under us before any response byte: the server closed it as idle just as we
  // reused it, so it never took the request. Safe for any method, as long as nothing of the
  // body has left (Pingora's RetryType::ReusedOnly). A reset is not retried: the server may
  // have read the request and failed on it.
  if (kind == ErrorKind::ConnectFailed) return true;
  return kind == ErrorKind::ResetBeforeResponse && upstream_eof_ && upstream_ &&
         upstream_->reused() && !client().responseStarted() && replayable();
}

void Exchange::failUpstream(ErrorKind kind) {
  const bool retry = retryable(kind);
  // An idle connection the server closed as we reused it is neither the server's failure nor
  // an error the client sees: not counted, not held against the server.
  if (!(retry && kind == ErrorKind::ResetBeforeResponse)) {
    if (route_metrics_ != nullptr) {
      route_metrics_->slot(ctx_.worker.index(), variant_).recordUpstreamError(kind);
    }
    if (upstream_) upstream_->pool().reportResult(upstream_->serverIndex(), false);
  }
  fail({ErrorSource::Upstream, kind, retry});
}

TerminationPhase Exchange::upstreamPhase() const {
  if (response_started_) return TerminationPhase::Response;
  if (upstream_ && upstream_->connected()) return TerminationPhase::Wait;
  return TerminationPhase::Connect;
}

TerminationPhase Exchange::requestPhase() const {
  if (head_ == nullptr) return TerminationPhase::Head;
  if (!request_done_ && framing_.framing != BodyFraming::None) return TerminationPhase::Body;
  return upstreamPhase();
}

Termination Exchange::terminationFor(const ProxyError& error) const {
  switch (error.kind) {
    case ErrorKind::HeadTimeout: return {TerminationSource::Client, TerminationPhase::Head};
    case ErrorKind::MalformedRequest:
    case ErrorKind::HeadTooLarge:
    case ErrorKind::VersionNotSupported:
    case ErrorKind::MethodNotImplemented:
    case ErrorKind::NoRoute: return {TerminationSource::Proxy, TerminationPhase::Head};
    case ErrorKind::BodyTooLarge:
      // By Content-Length at the head, or a chunked body that outgrew the limit.
      return {TerminationSource::Proxy,
              request_body_bytes_ == 0 ? TerminationPhase::Head : TerminationPhase::Body};
    case ErrorKind::NoHealthyServer: return {TerminationSource::Proxy, TerminationPhase::Connect};
    case ErrorKind::ConnectFailed:
    case ErrorKind::ResetBeforeResponse:
    case ErrorKind::MalformedResponse:
    case ErrorKind::ResponseTimeout: return {TerminationSource::Upstream, upstreamPhase()};
  }
  return {TerminationSource::Proxy, requestPhase()};
}

void Exchange::fail(const ProxyError& error) {
  if (ended_) return;
  if (error.retryable && route_ != nullptr && head_ != nullptr && replayable()) {
    const int failed_server = upstream_ ? static_cast<int>(upstream_->serverIndex()) : -1;
    UpstreamPool* pool = poolOf(variant_);
    if (error.kind == ErrorKind::ResetBeforeResponse && connect_attempts_ < 2) {
      connectUpstream(-1, /*fresh=*/true);  // once, on a new connection, any server
      return;
    }
    if (connect_attempts_ < 2 && pool != nullptr && pool->serverCount() > 1) {
      connectUpstream(failed_server);  // once, on another server of the same pool
      return;
    }
    if (!failed_over_ && route_->failover && *route_->failover != variant_ &&
        variantUsable(*route_->failover)) {
      // Every try of the chosen variant failed: its pool is unusable now.
      SY_LOG(Warn, "route %s: variant %s unreachable, failing over to %s", route_->name.c_str(),
             config::variantName(variant_), config::variantName(*route_->failover));
      failed_over_ = true;
      variant_ = *route_->failover;
      connect_attempts_ = 0;
      connectUpstream(-1);
      return;
    }
  }
  const Termination termination = terminationFor(error);
  ended_ = true;
  releaseUpstream(false);
  detachShadow(false);
  const char* method = head_ ? head_->method.c_str() : "-";
  const char* target = head_ ? head_->target.c_str() : "-";
  if (response_started_) {
    // Too late for a status: the client sees a truncated response.
    SY_LOG(Info, "%s %s: response cut short (%s)", method, target, messageFor(error.kind));
    recordOutcome(static_cast<int>(response_status_), termination);
    encoder_.encodeAbort();
    return;
  }
  const int status = statusFor(error.kind);
  if (error.source == ErrorSource::Upstream) {
    SY_LOG(Info, "%s %s -> %d (%s)", method, target, status, messageFor(error.kind));
  }
  recordOutcome(status, termination);
  LocalReply reply;
  reply.status = status;
  reply.message = messageFor(error.kind);
  reply.request_id = request_id_;
  reply.close =
      error.kind == ErrorKind::MalformedRequest || error.kind == ErrorKind::HeadTooLarge ||
      error.kind == ErrorKind::BodyTooLarge || error.kind == ErrorKind::VersionNotSupported ||
      error.kind == ErrorKind::MethodNotImplemented || error.kind == ErrorKind::HeadTimeout;
  encoder_.encodeLocalReply(reply);  // last: the connection may start the next exchange
}

// ---- outcome -------------------------------------------------------------------------------

void Exchange::recordOutcome(int status, Termination termination) {
  if (recorded_) return;
  recorded_ = true;
  if (route_metrics_ == nullptr) {
    // Refused before a head was complete (400, 431, 408) or the client left first: counted as
    // unmatched.
    route_metrics_ = &ctx_.routeMetrics(ctx_.snapshot->routes.size());
  }
  const uint64_t duration_us = nowUs() - start_us_;
  VariantCounters& counters = route_metrics_->slot(ctx_.worker.index(), variant_);
  if (status != 0) counters.recordResponse(status, duration_us);
  counters.recordTermination(termination);
  counters.recordProtocol(connection_.http2 ? ClientProtocol::Http2 : ClientProtocol::Http1);
  // SPEC §11: a rollout judges what the upstream did; the client's and the proxy's doings
  // (4xx, a client that left, a limit) are not the variant's errors. Only routes with a rollout
  // pay for the evidence.
  const bool upstream_failed = termination.source == TerminationSource::Upstream;
  if (route_ != nullptr && route_->rollout && (response_started_ || upstream_failed)) {
    counters.recordJudged(upstream_failed || response_status_ >= 500);
  }
  if (!ctx_.access_log.enabled()) return;
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  AccessLogEntry e;
  e.ts_ms = static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000 -
            static_cast<int64_t>(duration_us / 1000);
  e.client = client_text_;
  // Refused before its head was complete, a request has no method, host or path to log.
  if (head_ != nullptr) {
    e.method = head_->method;
    e.host = findHeader(head_->headers, "host").value_or("");
    e.path = head_->target;
  }
  if (connection_.http2) {
    e.protocol = "HTTP/2";
  } else {
    e.protocol = head_ != nullptr && head_->http_major == 1 && head_->http_minor == 0 ? "HTTP/1.0"
                                                                                      : "HTTP/1.1";
  }
  e.status = status;
  e.bytes_out = encoder_.bytesEncoded();
  e.duration_ms = static_cast<double>(duration_us) / 1000.0;
  e.route = route_ ? std::string_view(route_->name) : std::string_view();
  e.variant = route_ ? config::variantName(variant_) : "";
  e.upstream = upstream_text_;
  e.request_id = request_id_.empty() && head_ != nullptr
                     ? findHeader(head_->headers, "x-request-id").value_or("")
                     : request_id_;
  e.shadow = mirrored_;
  e.termination = termination;
  // Answered before routing (400, 404, ...): looked up now, once.
  const config::Snapshot& snapshot = snapshot_ ? *snapshot_ : *ctx_.snapshot;
  if (!country_known_ && snapshot.geoip && connection_.client_addr) {
    country_ = snapshot.geoip->country(client_.bytes);
  }
  char country[2];
  e.country = config::countryText(country_, country);
  ctx_.access_log.log(e);
}

}  // namespace sy::proxy
