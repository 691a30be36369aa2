#include "proxy/server/protocol_detect.h"

#include <algorithm>
#include <cstring>

#include "proxy/http2/server_connection.h"

namespace sy::proxy {

std::unique_ptr<ProtocolDetector> ProtocolDetector::create(
    WorkerContext& worker, Owner& owner, std::unique_ptr<Transport> transport, const sockaddr* peer,
    const std::string& listener_address, uint32_t timeout_ms,
    config::SnapshotConstSharedPtr tls_snapshot) {
  std::unique_ptr<ProtocolDetector> d(new ProtocolDetector(worker, owner, std::move(transport)));
  if (!d->timer_.ok()) return nullptr;
  if (peer != nullptr) {
    const size_t len = peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    std::memcpy(&d->peer_, peer, std::min(len, sizeof(d->peer_)));
  }
  d->listener_address_ = listener_address;
  d->tls_snapshot_ = std::move(tls_snapshot);
  d->timer_.setDeadline(LazyTimer::nowMs() + timeout_ms);
  return d;
}

ProtocolDetector::ProtocolDetector(WorkerContext& worker, Owner& owner,
                                   std::unique_ptr<Transport> transport)
    : worker_(worker),
      owner_(owner),
      transport_(std::move(transport)),
      timer_(worker.base(), &ProtocolDetector::timerCb, this) {
  // Counted as a client connection (max_connections) from the accept on.
  worker_.connections().client.fetch_add(1, std::memory_order_relaxed);
  transport_->setHandler(this);
}

ProtocolDetector::~ProtocolDetector() {
  timer_.stop();
  if (transport_) transport_->setHandler(nullptr);
  worker_.connections().client.fetch_sub(1, std::memory_order_relaxed);
}

void ProtocolDetector::closeWhenIdle() {
  // From the timer, not inside this call: the owner may be iterating its connections.
  if (!done_) timer_.setDeadline(LazyTimer::nowMs());
}

std::unique_ptr<Transport> ProtocolDetector::takeTransport() {
  // (The connection made next routes the callbacks to itself.)
  return std::move(transport_);
}

void ProtocolDetector::onTransportRead() {
  if (done_) return;
  if (transport_->tls()) {
    decide(transport_->alpn() == "h2");  // (the handshake is done once data arrives)
    return;
  }
  const std::string_view preface = Http2Connection::kPreface;
  evbuffer* in = transport_->input();
  const size_t n = std::min(evbuffer_get_length(in), preface.size());
  char buf[Http2Connection::kPreface.size()];
  evbuffer_copyout(in, buf, n);
  if (std::string_view(buf, n) != preface.substr(0, n)) {
    decide(false);
  } else if (n == preface.size()) {
    decide(true);
  }
}

void ProtocolDetector::onTransportEvent(short events) {
  if (done_) return;
  if (events & BEV_EVENT_CONNECTED) {
    decide(transport_->alpn() == "h2");  // TLS: the handshake is done, ALPN decided
    return;
  }
  close();  // EOF, error or timeout before the protocol was known
}

void ProtocolDetector::timerCb(void* ctx) noexcept { static_cast<ProtocolDetector*>(ctx)->close(); }

void ProtocolDetector::decide(bool http2) {
  done_ = true;
  timer_.stop();
  owner_.protocolDetected(this, http2);
}

void ProtocolDetector::close() {
  if (done_) return;
  done_ = true;
  timer_.stop();
  transport_->setHandler(nullptr);
  owner_.connectionClosed(this);
}

}  // namespace sy::proxy
