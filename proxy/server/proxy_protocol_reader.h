#pragma once
// The first step of a connection on a `proxy_protocol = true` listener (SPEC §13): reads the
// PROXY protocol header (proxy/net/proxy_protocol.h) from the raw socket, before TLS and before
// the HTTP/2 preface check, then hands the socket and the header's source address to its Owner,
// which starts the connection as if it had just been accepted from that address.
//
// Nothing after the header is read: each read peeks, and only header bytes are taken off the
// socket (everything peeked while the header is incomplete is header; once complete, exactly the
// rest of it). The TLS handshake or the HTTP request that follows in the same packet stays in
// the socket for the transport made next.
//
// Refused, closed and counted (switchyard_proxy_protocol_errors_total{listener,reason}): a
// missing, invalid or oversized header at once; a header cut short by the peer's close or by
// client_header_ms ("truncated", also when nothing came at all). A peer that closes before
// sending any byte (a balancer's TCP health check, a port scan) is closed without counting.
//
// Thread: worker-local. Its `this` is libevent callback context: neither copyable nor movable;
// freed only through its Owner (deferred deletion).

#include <sys/socket.h>

#include <memory>
#include <string>

#include "common/unique_fd.h"
#include "proxy/net/client_connection.h"
#include "proxy/net/lazy_timer.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/net/proxy_protocol.h"
#include "proxy/net/worker_context.h"

namespace sy::proxy {

class ProxyProtocolReader final : public ClientConnection {
 public:
  class Owner : public virtual ClientConnection::Owner {
   public:
    // The header is read: the owner takes the socket (takeFd) and starts the connection from
    // source() in place of `reader`, and frees `reader` later (never inside this call).
    virtual void proxyHeaderRead(ProxyProtocolReader* reader) = 0;
    // The header was refused (counted by the owner); connectionClosed(reader) follows.
    virtual void proxyHeaderRefused(ProxyProtocolReader* reader, ProxyProtocolError why) = 0;
  };

  // Takes `fd` (accepted, non-blocking). Null if libevent refuses the events.
  static std::unique_ptr<ProxyProtocolReader> create(WorkerContext& worker, Owner& owner,
                                                     UniqueFd fd, const sockaddr* peer,
                                                     const std::string& listener_address, bool tls,
                                                     uint32_t timeout_ms);
  ~ProxyProtocolReader() override;
  ProxyProtocolReader(const ProxyProtocolReader&) = delete;
  ProxyProtocolReader& operator=(const ProxyProtocolReader&) = delete;

  // Nothing is in progress yet: closes at once (from its timer, never inside this call).
  void closeWhenIdle() override;
  const std::string& listenerAddress() const override { return listener_address_; }

  // For the owner, inside proxyHeaderRead.
  UniqueFd takeFd() { return std::move(fd_); }
  // The header's source address, or the TCP peer for LOCAL, UNKNOWN, UNSPEC and UNIX.
  const sockaddr* source() const { return reinterpret_cast<const sockaddr*>(&source_); }
  bool tls() const { return tls_; }

 private:
  ProxyProtocolReader(WorkerContext& worker, Owner& owner, UniqueFd fd);

  static void readCb(evutil_socket_t fd, short what, void* ctx) noexcept;
  static void timerCb(void* ctx) noexcept;
  void onReadable();
  void onTimeout();
  // Closes; counted with `why` unless nothing was received and the peer just left.
  void refuse(ProxyProtocolError why, bool count = true);

  WorkerContext& worker_;
  Owner& owner_;
  UniqueFd fd_;
  EventPtr read_event_;
  LazyTimer timer_;
  sockaddr_storage source_{};
  std::string listener_address_;
  std::string received_;  // the header so far (at most kProxyHeaderMaxBytes)
  bool tls_ = false;
  bool done_ = false;
  bool closing_ = false;  // closeWhenIdle: the timer closes it, not counted
};

}  // namespace sy::proxy
