#include "proxy/net/transport.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "common/timeval.h"
#include "config/openssl_ptr.h"

namespace sy::proxy {
namespace {

// One read takes up to kReadChunk: a 16 KiB response with its head arrives in one piece, so
// it costs one read and one write. Only the first kDirectRead bytes go straight into the input
// buffer; the rest lands in a per-thread scratch area and is copied in. So what a connection
// holds is about what it received (a client trickling a head byte by byte keeps a small
// chain, not 64 KiB), and the common request or small response needs no copy.
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kDirectRead = 4096 - 128;  // with libevent's chain header: one 4 KiB block

void setNoDelay(evutil_socket_t fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

bool wouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

}  // namespace

// ---- PlainTransport ---------------------------------------------------------------------------

PlainTransport::PlainTransport(event_base* base, UniqueFd fd)
    : fd_(std::move(fd)),
      read_ev_(event_new(base, fd_.get(), EV_READ | EV_PERSIST, &PlainTransport::readCb, this)),
      write_ev_(event_new(base, fd_.get(), EV_WRITE | EV_PERSIST, &PlainTransport::writeCb, this)),
      timer_(base, &PlainTransport::timerCb, this),
      in_buf_(evbuffer_new()),
      out_buf_(evbuffer_new()) {
  in_ = in_buf_.get();
  out_ = out_buf_.get();
}

PlainTransport::~PlainTransport() {
  read_ev_.reset();  // out of epoll before the fd closes
  write_ev_.reset();
  timer_.stop();
  // fd_ closes after the events are out of epoll.
}

bool PlainTransport::start() {
  if (!read_ev_ || !write_ev_ || !timer_.ok() || !in_ || !out_) return false;
  updateEvents();
  return connecting_ ? write_registered_ : read_registered_;
}

std::unique_ptr<PlainTransport> PlainTransport::accepted(event_base* base, UniqueFd fd) {
  setNoDelay(fd.get());
  std::unique_ptr<PlainTransport> s(new PlainTransport(base, std::move(fd)));
  if (!s->start()) return nullptr;  // the destructor closes fd
  return s;
}

std::unique_ptr<PlainTransport> PlainTransport::connect(event_base* base, const sockaddr* addr,
                                                        socklen_t len,
                                                        uint32_t connect_timeout_ms) {
  UniqueFd fd(socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return nullptr;
  setNoDelay(fd.get());
  std::unique_ptr<PlainTransport> s(new PlainTransport(base, std::move(fd)));
  s->connecting_ = true;
  if (::connect(s->fd_.get(), addr, len) != 0 && errno != EINPROGRESS) {
    s->pending_error_ = errno;  // e.g. refused at once: reported as an event, like the others
  }
  if (!s->start()) return nullptr;
  s->setTimeouts(0, connect_timeout_ms);
  if (s->pending_error_ != 0) s->scheduleWrite();
  return s;
}

namespace {

// Adds or removes `ev` so that it is registered exactly when `want`.
void keepRegistered(event* ev, bool want, bool& registered) {
  if (want == registered) return;
  if (want) {
    registered = event_add(ev, nullptr) == 0;
  } else {
    event_del(ev);
    registered = false;
  }
}

}  // namespace

void PlainTransport::updateEvents() {
  // Reading stops at EOF (the socket would report it forever) and above the high-water mark
  // (flush() restarts it once the consumer drained).
  keepRegistered(
      read_ev_.get(),
      reading_ && !eof_ && !closed_ && !connecting_ && evbuffer_get_length(in_) < kReadHighWater,
      read_registered_);
  keepRegistered(write_ev_.get(), (connecting_ || write_waiting_) && !closed_, write_registered_);
}

void PlainTransport::setHandler(Handler* handler) {
  handler_ = handler;
  if (handler == nullptr) {
    closed_ = true;
    updateEvents();
    timer_.stop();
  }
}

void PlainTransport::enableRead() {
  if (reading_ || closed_) return;
  reading_ = true;
  if (read_ms_ != 0) read_deadline_ = LazyTimer::nowMs() + read_ms_;
  updateEvents();
  updateTimer();
}

void PlainTransport::disableRead() {
  if (!reading_) return;
  reading_ = false;
  updateEvents();
  updateTimer();
}

void PlainTransport::setTimeouts(uint32_t read_ms, uint32_t write_ms) {
  const uint64_t now = LazyTimer::nowMs();
  read_ms_ = read_ms;
  write_ms_ = write_ms;
  read_deadline_ = now + read_ms;
  write_deadline_ = now + write_ms;
  updateTimer();
}

void PlainTransport::updateTimer() {
  uint64_t d = 0;
  if (reading_ && !eof_ && !closed_ && read_ms_ != 0) d = read_deadline_;
  if ((connecting_ || write_waiting_) && !closed_ && write_ms_ != 0 && write_deadline_ != 0 &&
      (d == 0 || write_deadline_ < d)) {
    d = write_deadline_;
  }
  timer_.setDeadline(d);
}

void PlainTransport::scheduleWrite() { event_active(write_ev_.get(), EV_WRITE, 1); }

void PlainTransport::flush() {
  if (closed_ || connecting_ || pending_error_ != 0) return;
  // The consumer may have drained input that stopped reading at the high-water mark.
  if (reading_ && !read_registered_) updateEvents();
  // Waiting for the socket: the write event sends the rest when it drains.
  if (write_waiting_ || evbuffer_get_length(out_) == 0) return;
  if (!writeSome()) {
    scheduleWrite();  // a callback reports the error, not the owner's flush
    return;
  }
  if (notify_write_ && !write_waiting_) scheduleWrite();
}

bool PlainTransport::writeSome() {
  const size_t before = evbuffer_get_length(out_);
  if (before == 0) {
    write_waiting_ = false;
    updateEvents();
    return true;
  }
  const int n = evbuffer_write(out_, fd_.get());
  if (n < 0 && !wouldBlock(errno)) {
    pending_error_ = errno;
    return false;
  }
  const size_t after = evbuffer_get_length(out_);
  const bool was_waiting = write_waiting_;
  if (after > 0) {
    // Progress (or the start of the wait) restarts the write timeout.
    if (n > 0 || !was_waiting) write_deadline_ = LazyTimer::nowMs() + write_ms_;
    write_waiting_ = true;
    notify_write_ = true;
  } else {
    write_waiting_ = false;
  }
  // The owner may have paused its producer on a full output; tell it the output drained.
  if (before > kWriteLowWater && after <= kWriteLowWater) notify_write_ = true;
  if (write_waiting_ != was_waiting) {
    updateEvents();
    updateTimer();
  } else if (write_waiting_ && n > 0) {
    updateTimer();
  }
  return true;
}

void PlainTransport::writeCb(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<PlainTransport*>(ctx)->onWritable();
}

void PlainTransport::onWritable() {
  if (closed_ || handler_ == nullptr) return;
  if (connecting_) {
    int err = pending_error_;
    pending_error_ = 0;
    if (err == 0) {
      socklen_t len = sizeof(err);
      if (getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    connecting_ = false;
    if (err != 0) {
      fail(BEV_EVENT_ERROR, err);
      return;
    }
    updateEvents();
    updateTimer();  // the connect timeout no longer counts
    handler_->onTransportEvent(BEV_EVENT_CONNECTED);
    if (!closed_ && handler_ != nullptr) flush();  // what was queued during the connect
    return;
  }
  if (pending_error_ != 0) {
    const int err = pending_error_;
    pending_error_ = 0;
    fail(BEV_EVENT_ERROR | BEV_EVENT_WRITING, err);
    return;
  }
  if (write_waiting_ && !writeSome()) {
    const int err = pending_error_;
    pending_error_ = 0;
    fail(BEV_EVENT_ERROR | BEV_EVENT_WRITING, err);
    return;
  }
  if (notify_write_ && evbuffer_get_length(out_) <= kWriteLowWater) {
    notify_write_ = false;
    handler_->onTransportWrite();
  }
}

void PlainTransport::readCb(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<PlainTransport*>(ctx)->onReadable();
}

// One read per readiness report: the event is level-triggered, so input left in the socket
// (a read that filled the buffer) is reported again in the next loop iteration, after the
// other connections had their turn.
void PlainTransport::onReadable() {
  if (closed_ || handler_ == nullptr || !reading_) return;
  const size_t len = evbuffer_get_length(in_);
  if (len >= kReadHighWater) {
    updateEvents();  // stops reading; flush() restarts it once the consumer drained
    return;
  }
  const size_t want = std::min(kReadChunk, kReadHighWater - len);
  evbuffer_iovec vec[2];
  const int n =
      evbuffer_reserve_space(in_, static_cast<ev_ssize_t>(std::min(want, kDirectRead)), vec, 2);
  if (n <= 0) {
    fail(BEV_EVENT_ERROR | BEV_EVENT_READING, ENOMEM);
    return;
  }
  static thread_local char scratch[kReadChunk];
  iovec iov[3];
  size_t direct = 0;
  for (int i = 0; i < n; ++i) {
    iov[i].iov_base = vec[i].iov_base;
    iov[i].iov_len = std::min(vec[i].iov_len, want - direct);
    direct += iov[i].iov_len;
  }
  int niov = n;
  if (want > direct) iov[niov++] = {scratch, want - direct};
  const ssize_t r = readv(fd_.get(), iov, niov);
  if (r < 0) {
    if (wouldBlock(errno)) return;
    fail(BEV_EVENT_ERROR | BEV_EVENT_READING, errno);
    return;
  }
  if (r == 0) {
    eof_ = true;  // the end of input: nothing more to read, ever
    reading_ = false;
    updateEvents();
    updateTimer();
    handler_->onTransportEvent(BEV_EVENT_EOF | BEV_EVENT_READING);
    return;
  }
  size_t left = static_cast<size_t>(r);
  int used = 0;
  for (int i = 0; i < n && left > 0; ++i, ++used) {
    vec[i].iov_len = std::min(iov[i].iov_len, left);
    left -= vec[i].iov_len;
  }
  evbuffer_commit_space(in_, vec, used);
  if (left > 0) evbuffer_add(in_, scratch, left);
  if (read_ms_ != 0) {
    read_deadline_ = LazyTimer::nowMs() + read_ms_;
    updateTimer();
  }
  handler_->onTransportRead();
}

void PlainTransport::fail(short events, int err) {
  error_ = err;
  closed_ = true;
  reading_ = false;
  write_waiting_ = false;
  updateEvents();
  timer_.stop();
  if (handler_ != nullptr) handler_->onTransportEvent(events);
}

void PlainTransport::timerCb(void* ctx) noexcept { static_cast<PlainTransport*>(ctx)->onTimer(); }

void PlainTransport::onTimer() {
  if (closed_ || handler_ == nullptr) return;
  const uint64_t now = LazyTimer::nowMs();
  if ((connecting_ || write_waiting_) && write_ms_ != 0 && write_deadline_ != 0 &&
      now >= write_deadline_) {
    write_deadline_ = 0;  // timed out; counts again from the next progress
    updateTimer();
    handler_->onTransportEvent(BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING);
    return;
  }
  if (reading_ && !eof_ && read_ms_ != 0 && now >= read_deadline_) {
    reading_ = false;  // like libevent: a timed-out side is switched off until re-enabled
    updateEvents();
    updateTimer();
    handler_->onTransportEvent(BEV_EVENT_TIMEOUT | BEV_EVENT_READING);
    return;
  }
  updateTimer();
}

void PlainTransport::shutdownWrite() {
  if (closed_ || evbuffer_get_length(out_) != 0) return;
  ::shutdown(fd_.get(), SHUT_WR);
}

std::string PlainTransport::failure() const {
  return error_ != 0 ? std::string(evutil_socket_error_to_string(error_)) : std::string();
}

// ---- TlsTransport -----------------------------------------------------------------------------

TlsTransport::TlsTransport(BufferEventPtr bev) : bev_(std::move(bev)) {
  in_ = bufferevent_get_input(bev_.get());
  out_ = bufferevent_get_output(bev_.get());
  bufferevent_setcb(bev_.get(), &TlsTransport::readCb, &TlsTransport::writeCb,
                    &TlsTransport::eventCb, this);
  bufferevent_setwatermark(bev_.get(), EV_READ, 0, kReadHighWater);
  bufferevent_setwatermark(bev_.get(), EV_WRITE, kWriteLowWater, 0);
  // Both directions always: the TLS handshake and alerts need writes the owner never asked
  // for.
  bufferevent_enable(bev_.get(), EV_READ | EV_WRITE);
  if (fd() >= 0) setNoDelay(fd());
}

std::unique_ptr<TlsTransport> TlsTransport::accepted(event_base* base, UniqueFd fd, SSL_CTX* ctx) {
  config::SslPtr ssl(SSL_new(ctx));
  if (!ssl) return nullptr;  // (fd closes here)
  BufferEventPtr bev(bufferevent_openssl_socket_new(
      base, fd.get(), ssl.get(), BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE));
  if (!bev) return nullptr;
  // The bufferevent owns the SSL and the fd from here (BEV_OPT_CLOSE_ON_FREE).
  ssl.release();
  fd.release();
  // Most clients close without a close_notify; that is the end of the stream, not an error.
  bufferevent_openssl_set_allow_dirty_shutdown(bev.get(), 1);
  return std::make_unique<TlsTransport>(std::move(bev));
}

std::string_view TlsTransport::alpn() const {
  SSL* ssl = bufferevent_openssl_get_ssl(bev_.get());
  if (ssl == nullptr) return {};
  const unsigned char* proto = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &proto, &len);
  if (proto == nullptr) return {};
  return {reinterpret_cast<const char*>(proto), len};
}

TlsTransport::~TlsTransport() {
  if (bev_) bufferevent_setcb(bev_.get(), nullptr, nullptr, nullptr, nullptr);
}

void TlsTransport::connect(const sockaddr* addr, socklen_t len, uint32_t connect_timeout_ms) {
  // While connecting, the write timeout is the connect timeout (libevent applies it to the
  // pending connect). An immediate failure comes back as an error event.
  setTimeouts(0, connect_timeout_ms);
  bufferevent_socket_connect(bev_.get(), addr, static_cast<int>(len));
}

void TlsTransport::setHandler(Handler* handler) {
  handler_ = handler;
  if (handler == nullptr) {
    bufferevent_disable(bev_.get(), EV_READ | EV_WRITE);
    bufferevent_setcb(bev_.get(), nullptr, nullptr, nullptr, nullptr);
  }
}

void TlsTransport::enableRead() { bufferevent_enable(bev_.get(), EV_READ); }
void TlsTransport::disableRead() { bufferevent_disable(bev_.get(), EV_READ); }
bool TlsTransport::reading() const { return (bufferevent_get_enabled(bev_.get()) & EV_READ) != 0; }

void TlsTransport::setTimeouts(uint32_t read_ms, uint32_t write_ms) {
  const timeval r = toTimeval(read_ms);
  const timeval w = toTimeval(write_ms);
  bufferevent_set_timeouts(bev_.get(), read_ms != 0 ? &r : nullptr, write_ms != 0 ? &w : nullptr);
}

evutil_socket_t TlsTransport::fd() const { return bufferevent_getfd(bev_.get()); }

std::string TlsTransport::failure() const {
  std::string reasons;
  while (unsigned long e = bufferevent_get_openssl_error(bev_.get())) {
    if (ERR_GET_LIB(e) == 0) continue;  // libevent also queues plain errno values here
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!reasons.empty()) reasons += "; ";
    reasons += buf;
  }
  if (SSL* ssl = bufferevent_openssl_get_ssl(bev_.get())) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      reasons += std::string(reasons.empty() ? "" : " ") + "(" +
                 X509_verify_cert_error_string(verify) + ")";
    }
  }
  if (!reasons.empty()) return "TLS: " + reasons;
  return error_ != 0 ? std::string(evutil_socket_error_to_string(error_)) : std::string();
}

void TlsTransport::readCb(bufferevent*, void* ctx) noexcept {
  auto* s = static_cast<TlsTransport*>(ctx);
  if (s->handler_ != nullptr) s->handler_->onTransportRead();
}

void TlsTransport::writeCb(bufferevent*, void* ctx) noexcept {
  auto* s = static_cast<TlsTransport*>(ctx);
  if (s->handler_ != nullptr) s->handler_->onTransportWrite();
}

void TlsTransport::eventCb(bufferevent*, short events, void* ctx) noexcept {
  auto* s = static_cast<TlsTransport*>(ctx);
  if (events & BEV_EVENT_ERROR) s->error_ = EVUTIL_SOCKET_ERROR();
  if ((events & BEV_EVENT_CONNECTED) && s->fd() >= 0) setNoDelay(s->fd());
  if (s->handler_ != nullptr) s->handler_->onTransportEvent(events);
}

}  // namespace sy::proxy
