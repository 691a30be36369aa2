#include "proxy/http1/server_connection.h"

#include "common/log.h"
#include "config/tls_context.h"
#include "proxy/http/rewrite.h"
#include "proxy/http1/buffer_decode.h"

namespace sy::proxy {
namespace {

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// Chunked transfer coding of one piece (RFC 9112 §7.1).
void addChunk(evbuffer* out, std::string_view data) {
  if (data.empty()) return;
  evbuffer_add_printf(out, "%zx\r\n", data.size());
  evbuffer_add(out, data.data(), data.size());
  evbuffer_add(out, "\r\n", 2);
}

}  // namespace

struct ServerConnection::FlushOnExit {
  explicit FlushOnExit(ServerConnection& c) : conn(c) {}
  ~FlushOnExit() { conn.flush(); }
  ServerConnection& conn;
};

std::unique_ptr<ServerConnection> ServerConnection::create(
    WorkerContext& worker, ExchangeFactory& factory, Owner& owner,
    const config::SnapshotConstSharedPtr& current, UniqueFd fd, const sockaddr* peer,
    const std::string& listener_address, const config::ServerTls* tls) {
  std::unique_ptr<Transport> transport;
  if (tls != nullptr) {
    transport = TlsTransport::accepted(worker.base(), std::move(fd), tls->defaultContext());
  } else {
    transport = PlainTransport::accepted(worker.base(), std::move(fd));
  }
  if (!transport) return nullptr;
  // The SNI callback reads the snapshot's ServerTls: keep it alive as long as this connection.
  return create(worker, factory, owner, current, std::move(transport), peer, listener_address,
                tls != nullptr ? current : nullptr);
}

std::unique_ptr<ServerConnection> ServerConnection::create(
    WorkerContext& worker, ExchangeFactory& factory, Owner& owner,
    const config::SnapshotConstSharedPtr& current, std::unique_ptr<Transport> transport,
    const sockaddr* peer, const std::string& listener_address,
    config::SnapshotConstSharedPtr tls_snapshot) {
  std::unique_ptr<ServerConnection> conn(
      new ServerConnection(worker, factory, owner, current, std::move(transport), peer));
  if (!conn->timer_.ok()) return nullptr;
  conn->listener_address_ = listener_address;
  conn->tls_snapshot_ = std::move(tls_snapshot);
  return conn;
}

void ServerConnection::start() {
  FlushOnExit flush(*this);
  if (evbuffer_get_length(client_->input()) > 0) processInput();
}

ServerConnection::ServerConnection(WorkerContext& worker, ExchangeFactory& factory, Owner& owner,
                                   const config::SnapshotConstSharedPtr& current,
                                   std::unique_ptr<Transport> t, const sockaddr* peer)
    : worker_(worker),
      factory_(factory),
      owner_(owner),
      current_(current),
      client_(std::move(t)),
      timer_(worker.base(), &ServerConnection::timerCb, this),
      client_addr_(clientIpFromSockaddr(peer)),
      client_ip_(clientIpText(client_addr_)),
      tls_(client_->tls()) {
  worker_.connections().client.fetch_add(1, std::memory_order_relaxed);
  client_->setHandler(this);
  const config::Timeouts& timeouts = settings().timeouts;
  // Read timeout: a client that stops sending mid-body; write timeout: one that stops reading.
  client_->setTimeouts(timeouts.client_idle_ms, timeouts.client_idle_ms);
  // A connection that sends nothing at all is closed after client_header_ms.
  armTimer(timeouts.client_header_ms);
}

ServerConnection::~ServerConnection() {
  timer_.stop();
  client_->setHandler(nullptr);
  worker_.connections().client.fetch_sub(1, std::memory_order_relaxed);
}

// ---- transport callbacks -------------------------------------------------------------------

void ServerConnection::onTransportRead() {
  FlushOnExit flush(*this);
  if (state_ == State::Closing || state_ == State::Lingering) {
    // Read and discard, so that closing never resets a client still sending (SPEC §10).
    evbuffer* in = client_->input();
    const size_t n = evbuffer_get_length(in);
    evbuffer_drain(in, n);
    if (n > linger_budget_) {
      closeNow();
      return;
    }
    linger_budget_ -= n;
    return;
  }
  processInput();
}

void ServerConnection::onTransportWrite() {
  FlushOnExit flush(*this);
  if (exchange_ && evbuffer_get_length(client_->output()) <= kLowWater) {
    exchange_->onEncoderDrained();
  }
}

void ServerConnection::onTransportEvent(short events) {
  FlushOnExit flush(*this);
  if (events & BEV_EVENT_CONNECTED) return;  // TLS: the handshake is done
  if (state_ == State::Lingering || state_ == State::Closed) {
    closeNow();
    return;
  }
  if (events & BEV_EVENT_TIMEOUT) {
    // A read timeout while the request is complete only means the upstream is slow; that has
    // its own timeout. Keep listening for the client's EOF.
    if ((events & BEV_EVENT_READING) && state_ == State::Request && msg_.request_done) {
      client_->enableRead();
      return;
    }
    SY_LOG(Debug, "client %s: %s timeout", client_ip_.c_str(),
           (events & BEV_EVENT_READING) ? "read" : "write");
    clientGone();
    return;
  }
  if (events & BEV_EVENT_EOF) {
    client_eof_ = true;
    // A client that half-closes after a complete request still gets its answer. (Not over
    // TLS: there the end of the stream ends the session, and a vanished client looks the same.)
    if (!tls_ && state_ == State::Request && msg_.request_done) return;
    // Still flushing what we owe it. Not over TLS: libevent's OpenSSL bufferevent stops
    // writing once it has read the end of the stream, so the flush would never finish.
    if (!tls_ && state_ == State::Closing) return;
    // Between requests, a response just finished may still be queued: it is owed in full.
    if (!tls_ && state_ == State::Idle && evbuffer_get_length(client_->output()) > 0) {
      closeAfterFlush(false);
      return;
    }
  }
  clientGone();
}

void ServerConnection::timerCb(void* ctx) noexcept {
  auto* c = static_cast<ServerConnection*>(ctx);
  FlushOnExit flush(*c);
  c->onTimer();
}

void ServerConnection::onTimer() {
  switch (state_) {
    case State::Request:
      if (!msg_.head_complete) {
        // The head did not arrive in client_header_ms (slowloris): 408, then close.
        decodeError(ErrorKind::HeadTimeout);
      }
      return;
    case State::Idle:     // an idle keep-alive connection (or a drain's idle wait)
    case State::Closing:  // the last flush is bounded
    case State::Lingering: closeNow(); return;
    case State::Discarding:
    case State::Tunnel:
    case State::Closed: return;
  }
}

void ServerConnection::closeWhenIdle() {
  close_when_idle_ = true;
  if (state_ == State::Idle && evbuffer_get_length(client_->input()) == 0) {
    // Not at once: a request may be on its way (SPEC §10); it is answered with
    // "Connection: close".
    timer_.setDeadline(LazyTimer::nowMs() + kDrainIdleMs);
  }
}

// ---- request side --------------------------------------------------------------------------

RequestHandler& ServerConnection::exchange() {
  if (!exchange_) {
    ConnectionInfo info;
    info.client_ip = client_ip_;
    info.client_addr = &client_addr_;
    info.tls = tls_;
    exchange_ = factory_.newExchange(*this, info);
  }
  return *exchange_;
}

void ServerConnection::processInput() {
  if (in_process_input_) return;
  in_process_input_ = true;
  evbuffer* in = client_->input();
  while (true) {
    if (state_ == State::Tunnel) {
      pumpTunnel();
      break;
    }
    if (state_ != State::Idle && state_ != State::Request && state_ != State::Discarding) break;
    if (state_ == State::Request && msg_.request_done) break;  // pipelined input waits its turn
    if (state_ == State::Request && msg_.head_complete && exchange_ &&
        exchange_->bodyBackpressured()) {
      // The upstream reads slower than the client sends: stop reading the client until the
      // upstream's buffer drains (resumeRequestBody).
      client_paused_ = true;
      client_->disableRead();
      break;
    }
    if (evbuffer_get_length(in) == 0) break;
    if (state_ == State::Idle) {
      // The first byte of a new request.
      state_ = State::Request;
      msg_ = Message{};
      decoder_.setMaxHeadBytes(settings().limits.max_header_bytes);
      armTimer(settings().timeouts.client_header_ms);
    }
    size_t consumed = 0;
    const MessageDecoder::Event ev = decodeFrom(decoder_, in, consumed);
    switch (ev) {
      case MessageDecoder::Event::NeedMore: break;
      case MessageDecoder::Event::HeadComplete: onHeadComplete(); break;
      case MessageDecoder::Event::MessageComplete: onMessageComplete(); break;
      case MessageDecoder::Event::Error:
        SY_LOG(Debug, "client %s: bad request: %s", client_ip_.c_str(),
               decoder_.errorDescription());
        decodeError(decoder_.headTooLarge() ? ErrorKind::HeadTooLarge
                                            : ErrorKind::MalformedRequest);
        break;
    }
    if (ev == MessageDecoder::Event::NeedMore && consumed == 0) break;
  }
  in_process_input_ = false;
  // Half-closed and between requests: what is buffered was all answered (or is a partial
  // request that cannot complete now).
  if (client_eof_ && !tls_ && state_ == State::Idle) closeAfterFlush(false);
}

void ServerConnection::onHeadComplete() {
  if (state_ == State::Discarding) return;
  timer_.cancel();
  msg_.head_complete = true;
  RequestHead& req = decoder_.request();
  msg_.http10 = req.http_major == 1 && req.http_minor == 0;
  msg_.head_request = req.method == "HEAD";
  msg_.keep_alive = decoder_.keepAlive() && !close_when_idle_;
  // A request line without a version (HTTP/0.9) is malformed; a version other than 1.x is
  // one we do not speak.
  if (req.http_major == 0) {
    decodeError(ErrorKind::MalformedRequest);
    return;
  }
  if (req.http_major != 1) {
    decodeError(ErrorKind::VersionNotSupported);
    return;
  }
  RequestFraming framing;
  framing.framing = decoder_.framing();
  framing.content_length = decoder_.contentLength();
  framing.upgrade = decoder_.upgrade();
  // No tunnels: CONNECT is answered 501, as over HTTP/2.
  if (req.method == "CONNECT") {
    decodeError(ErrorKind::MethodNotImplemented);
    return;
  }
  // An Upgrade with a body cannot be told apart from the tunnel.
  if (framing.upgrade && framing.framing != BodyFraming::None) {
    decodeError(ErrorKind::MalformedRequest);
    return;
  }
  if (framing.framing != BodyFraming::None) {
    if (auto expect = findHeader(req.headers, "expect");
        expect && equalsIgnoreCase(*expect, "100-continue")) {
      framing.expect_continue = msg_.expect_continue = true;
    }
  }
  exchange().decodeHead(req, framing);
}

void ServerConnection::onBodyData(std::string_view data) {
  msg_.body_seen += data.size();
  if (state_ == State::Request && exchange_ && !msg_.response_done) exchange_->decodeBody(data);
}

void ServerConnection::onMessageComplete() {
  if (state_ == State::Discarding) {
    finishExchange();
    return;
  }
  if (state_ != State::Request) return;
  msg_.request_done = true;
  if (msg_.response_done) {
    finishExchange();
    return;
  }
  if (exchange_) exchange_->decodeEnd(decoder_.trailers());
}

void ServerConnection::decodeError(ErrorKind kind) {
  if (state_ != State::Request) return;
  exchange().decodeError({ErrorSource::Downstream, kind},
                         msg_.head_complete ? &decoder_.request() : nullptr);
}

void ServerConnection::clientGone() {
  if (state_ == State::Request && !msg_.response_done) {
    // Also a partial head gets its exchange, so the access log has the line (SPEC §10).
    exchange().onClientGone();
  } else if (state_ == State::Tunnel && exchange_) {
    exchange_->onClientGone();
  }
  closeNow();
}

void ServerConnection::pumpTunnel() {
  evbuffer* in = client_->input();
  while (exchange_ && state_ == State::Tunnel && evbuffer_get_length(in) > 0) {
    if (exchange_->bodyBackpressured()) {
      client_paused_ = true;
      client_->disableRead();
      return;
    }
    evbuffer_iovec vec;
    if (evbuffer_peek(in, -1, nullptr, &vec, 1) < 1) return;
    const size_t n = vec.iov_len;
    exchange_->decodeBody({static_cast<const char*>(vec.iov_base), n});
    evbuffer_drain(in, n);
  }
}

// ---- response side (ResponseEncoder) -------------------------------------------------------

void ServerConnection::write(std::string_view data) {
  msg_.bytes_out += data.size();
  evbuffer_add(client_->output(), data.data(), data.size());
}

void ServerConnection::encodeHead(const Head& h) {
  ResponseRewrite rw;
  rw.variant_header = h.variant_header;
  rw.variant = h.variant;
  rw.set_cookie = h.set_cookie;
  scratch_.clear();
  if (h.upgrade) {
    rw.upgrade = true;
    rw.framing = BodyFraming::None;
    appendDownstreamResponseHead(scratch_, h.head, rw);
    write(scratch_);
    state_ = State::Tunnel;  // raw bytes both ways from here; the exchange relays them
    timer_.cancel();
    client_->enableRead();
    return;
  }
  if (decoder_.upgrade()) msg_.keep_alive = false;  // a refused upgrade: do not resync
  switch (h.framing) {
    case BodyFraming::None: rw.framing = BodyFraming::None; break;
    case BodyFraming::ContentLength:
      rw.framing = BodyFraming::ContentLength;
      rw.content_length = h.content_length;
      break;
    case BodyFraming::Chunked:
    case BodyFraming::UntilClose:
      // HTTP/1.1 clients get chunked coding (so the connection survives a close-delimited
      // upstream body); HTTP/1.0 clients get a close-delimited body.
      if (msg_.http10) {
        rw.framing = BodyFraming::UntilClose;
        msg_.keep_alive = false;
      } else {
        rw.framing = BodyFraming::Chunked;
      }
      break;
  }
  msg_.response_chunked = rw.framing == BodyFraming::Chunked;
  if (close_when_idle_) msg_.keep_alive = false;  // tell the client before we close
  if (client_eof_ && evbuffer_get_length(client_->input()) == 0) {
    msg_.keep_alive = false;  // half-closed, nothing pipelined behind: this is the last response
  }
  rw.keep_alive = msg_.keep_alive;
  rw.http10_client = msg_.http10;
  appendDownstreamResponseHead(scratch_, h.head, rw);
  write(scratch_);
}

void ServerConnection::encodeBody(std::string_view data) {
  if (state_ == State::Closed) return;
  msg_.bytes_out += data.size();
  if (msg_.response_chunked) {
    addChunk(client_->output(), data);
  } else {
    evbuffer_add(client_->output(), data.data(), data.size());
  }
}

void ServerConnection::encodeEnd(const Headers& trailers) {
  if (state_ == State::Tunnel) {
    msg_.response_done = true;
    closeAfterFlush(false);  // the upstream ended the tunnel
    return;
  }
  // An HTTP/1.0 client's close-delimited body has no trailer section: they are dropped.
  if (msg_.response_chunked) {
    scratch_.clear();
    appendLastChunk(scratch_, trailers);
    write(scratch_);
  }
  responseDone(true);
}

void ServerConnection::encodeLocalReply(const LocalReply& reply) {
  // The connection survives only where the request framing is still trustworthy and the
  // rest of the request can be skipped: a complete request, or one without a body.
  const bool keep = msg_.keep_alive && !reply.close && (msg_.request_done || restOfRequestEmpty());
  scratch_.clear();
  appendErrorResponse(scratch_, reply.status, reply.message, keep, reply.request_id,
                      /*with_body=*/!msg_.head_request);
  write(scratch_);
  responseDone(keep);
}

void ServerConnection::encodeAbort() {
  // What was already relayed still goes out, without a terminating chunk: the client sees
  // the truncation when the connection closes.
  msg_.response_chunked = false;
  msg_.keep_alive = false;
  msg_.response_done = true;
  closeAfterFlush(!msg_.request_done);
}

void ServerConnection::encodeContinue() {
  if (!msg_.expect_continue || msg_.continue_sent || state_ != State::Request) return;
  msg_.continue_sent = true;
  write(kContinue);
}

bool ServerConnection::encoderBackpressured() const {
  return evbuffer_get_length(client_->output()) > kHighWater;
}

void ServerConnection::resumeRequestBody() {
  if (!client_paused_) return;
  client_paused_ = false;
  client_->enableRead();
  processInput();
}

void ServerConnection::flush() {
  if (state_ == State::Closed) return;
  // The current exchange's upstream first: it may be a new exchange, started (for a
  // pipelined request) inside the callback of the one that just ended.
  if (exchange_) exchange_->flush();
  client_->flush();
  if (state_ == State::Closing && evbuffer_get_length(client_->output()) == 0) {
    if (linger_ && !client_eof_) {
      // Lingering close: the answer is out; stop sending, keep reading what the client still
      // sends (discarded) until it closes, kLingerMs pass or kLingerBytes arrive.
      state_ = State::Lingering;
      client_->shutdownWrite();
      client_->enableRead();
      armTimer(kLingerMs);
    } else {
      closeNow();
    }
  }
}

// ---- exchange and connection lifetime ------------------------------------------------------

bool ServerConnection::restOfRequestEmpty() const {
  return msg_.head_complete && decoder_.framing() == BodyFraming::None && !decoder_.upgrade();
}

void ServerConnection::responseDone(bool keep) {
  msg_.response_done = true;
  if (!keep) msg_.keep_alive = false;
  if (msg_.request_done) {
    finishExchange();
    return;
  }
  if (msg_.keep_alive && restOfRequestEmpty()) {
    state_ = State::Discarding;  // the (empty) rest of the request ends the exchange
    return;
  }
  // The response ended before the request (an early answer: 413, the upstream's own reply):
  // the rest of the body cannot be skipped safely, so the connection ends, lingering.
  msg_.keep_alive = false;
  closeAfterFlush(true);
}

void ServerConnection::finishExchange() {
  if (exchange_) worker_.deferDelete(std::move(exchange_));
  state_ = State::Idle;
  if (client_paused_) {
    client_paused_ = false;
    client_->enableRead();
  }
  if (!msg_.keep_alive) {
    closeAfterFlush(evbuffer_get_length(client_->input()) > 0);
    return;
  }
  if (client_eof_ && evbuffer_get_length(client_->input()) == 0) {
    closeAfterFlush(false);
    return;
  }
  armTimer(close_when_idle_ ? kDrainIdleMs : settings().timeouts.client_idle_ms);
  // Pipelined requests already buffered are served now (unless we are inside processInput,
  // whose loop continues with them).
  if (!in_process_input_) processInput();
}

void ServerConnection::closeAfterFlush(bool linger) {
  if (state_ == State::Closing || state_ == State::Lingering || state_ == State::Closed) return;
  state_ = State::Closing;
  linger_ = linger && !client_eof_;
  linger_budget_ = kLingerBytes;
  if (msg_.head_complete && !msg_.request_done &&
      decoder_.framing() == BodyFraming::ContentLength &&
      decoder_.contentLength() > msg_.body_seen) {
    // (Raw bytes are counted, so what the decoder still buffers is within the margin.)
    linger_budget_ += decoder_.contentLength() - msg_.body_seen;
  }
  if (exchange_) worker_.deferDelete(std::move(exchange_));
  // Reading goes on (discarding), so a client still sending is not reset by the close.
  client_->enableRead();
  // Bound the flush: a client that never reads must not keep us forever.
  armTimer(settings().timeouts.client_idle_ms);
  // flush() (at the end of this callback) closes or starts lingering once the output is out.
}

void ServerConnection::closeNow() {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  timer_.stop();
  if (exchange_) worker_.deferDelete(std::move(exchange_));
  client_->setHandler(nullptr);
  owner_.connectionClosed(this);
}

}  // namespace sy::proxy
