#include "proxy/server/proxy_protocol_reader.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace sy::proxy {

std::unique_ptr<ProxyProtocolReader> ProxyProtocolReader::create(
    WorkerContext& worker, Owner& owner, UniqueFd fd, const sockaddr* peer,
    const std::string& listener_address, bool tls, uint32_t timeout_ms) {
  std::unique_ptr<ProxyProtocolReader> r(new ProxyProtocolReader(worker, owner, std::move(fd)));
  if (!r->timer_.ok()) return nullptr;
  r->read_event_.reset(event_new(worker.base(), r->fd_.get(), EV_READ | EV_PERSIST,
                                 &ProxyProtocolReader::readCb, r.get()));
  if (!r->read_event_ || event_add(r->read_event_.get(), nullptr) != 0) return nullptr;
  if (peer != nullptr) {
    const size_t len = peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    std::memcpy(&r->source_, peer, std::min(len, sizeof(r->source_)));
  }
  r->listener_address_ = listener_address;
  r->tls_ = tls;
  r->timer_.setDeadline(LazyTimer::nowMs() + timeout_ms);
  return r;
}

ProxyProtocolReader::ProxyProtocolReader(WorkerContext& worker, Owner& owner, UniqueFd fd)
    : worker_(worker),
      owner_(owner),
      fd_(std::move(fd)),
      timer_(worker.base(), &ProxyProtocolReader::timerCb, this) {
  // Counted as a client connection (max_connections) from the accept on.
  worker_.connections().client.fetch_add(1, std::memory_order_relaxed);
}

ProxyProtocolReader::~ProxyProtocolReader() {
  timer_.stop();
  worker_.connections().client.fetch_sub(1, std::memory_order_relaxed);
}

void ProxyProtocolReader::closeWhenIdle() {
  // From the timer, not inside this call: the owner may be iterating its connections.
  if (done_) return;
  closing_ = true;
  timer_.setDeadline(LazyTimer::nowMs());
}

void ProxyProtocolReader::readCb(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<ProxyProtocolReader*>(ctx)->onReadable();
}

void ProxyProtocolReader::timerCb(void* ctx) noexcept {
  static_cast<ProxyProtocolReader*>(ctx)->onTimeout();
}

void ProxyProtocolReader::onReadable() {
  if (done_) return;
  const size_t had = received_.size();
  char buf[kProxyHeaderMaxBytes];
  // Peek: what follows the header must stay in the socket for the TLS or HTTP side.
  const ssize_t n = recv(fd_.get(), buf, kProxyHeaderMaxBytes - had, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {  // closed (or reset) before the header was complete
    refuse(ProxyProtocolError::Truncated, had > 0);
    return;
  }
  received_.append(buf, static_cast<size_t>(n));
  const ProxyHeader header = parseProxyHeader(received_);
  size_t take = static_cast<size_t>(n);  // Incomplete: every byte peeked is header
  if (header.status == ProxyHeader::Status::Error) {
    refuse(header.error);
    return;
  }
  if (header.status == ProxyHeader::Status::Complete) take = header.size - had;
  // Takes exactly the header's bytes off the socket (they are there: just peeked).
  if (recv(fd_.get(), buf, take, 0) != static_cast<ssize_t>(take)) {
    refuse(ProxyProtocolError::Truncated);
    return;
  }
  if (header.status != ProxyHeader::Status::Complete) return;
  done_ = true;
  timer_.stop();
  read_event_.reset();  // before the transport made next watches the same descriptor
  if (header.has_source) source_ = header.source;
  owner_.proxyHeaderRead(this);
}

void ProxyProtocolReader::onTimeout() {
  if (done_) return;
  // client_header_ms passed without a whole header: counted (even with nothing received: no
  // HTTP or TLS client waits silently); a drain or a removed listener is not the peer's doing.
  refuse(ProxyProtocolError::Truncated, !closing_);
}

void ProxyProtocolReader::refuse(ProxyProtocolError why, bool count) {
  if (done_) return;
  done_ = true;
  timer_.stop();
  read_event_.reset();
  if (count) {
    SY_LOG(Debug, "listener %s: PROXY protocol header refused (%s)", listener_address_.c_str(),
           kProxyProtocolErrorNames[static_cast<size_t>(why)]);
    owner_.proxyHeaderRefused(this, why);
  }
  fd_.reset();
  owner_.connectionClosed(this);
}

}  // namespace sy::proxy
