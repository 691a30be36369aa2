#pragma once
// The first step of a client connection that may speak HTTP/2: it owns the Transport until it
// knows the protocol, then hands the Transport to its Owner, which makes the HTTP/1 or HTTP/2
// connection. TLS: the handshake's ALPN decides ("h2", else HTTP/1.1). Plain (with
// server.http2_cleartext): the first bytes decide, the HTTP/2 preface (prior knowledge) or
// anything else (HTTP/1); what was read stays in the Transport's input for the connection.
// A client that completes neither within client_header_ms, fails or closes is dropped.
//
// Thread: worker-local. Its `this` is libevent callback context: neither copyable nor movable;
// freed only through its Owner (deferred deletion).

#include <sys/socket.h>

#include <memory>
#include <string>

#include "config/snapshot.h"
#include "proxy/net/client_connection.h"
#include "proxy/net/lazy_timer.h"
#include "proxy/net/transport.h"
#include "proxy/net/worker_context.h"

namespace sy::proxy {

class ProtocolDetector final : public ClientConnection, private Transport::Handler {
 public:
  class Owner : public virtual ClientConnection::Owner {
   public:
    // The protocol is known: the owner takes the transport (takeTransport), links the
    // connection it makes in place of `detector` and frees `detector` later (never inside this
    // call).
    virtual void protocolDetected(ProtocolDetector* detector, bool http2) = 0;
  };

  // `tls_snapshot`: kept alive until the hand-over (its ServerTls serves the handshake), or
  // null for a plain transport.
  static std::unique_ptr<ProtocolDetector> create(WorkerContext& worker, Owner& owner,
                                                  std::unique_ptr<Transport> transport,
                                                  const sockaddr* peer,
                                                  const std::string& listener_address,
                                                  uint32_t timeout_ms,
                                                  config::SnapshotConstSharedPtr tls_snapshot);
  ~ProtocolDetector() override;
  ProtocolDetector(const ProtocolDetector&) = delete;
  ProtocolDetector& operator=(const ProtocolDetector&) = delete;

  // A connection still finding its protocol has nothing in progress: it closes at once (from
  // its timer, never inside this call).
  void closeWhenIdle() override;
  const std::string& listenerAddress() const override { return listener_address_; }

  // For the owner, inside protocolDetected.
  std::unique_ptr<Transport> takeTransport();
  const sockaddr* peer() const { return reinterpret_cast<const sockaddr*>(&peer_); }
  config::SnapshotConstSharedPtr takeTlsSnapshot() { return std::move(tls_snapshot_); }

 private:
  ProtocolDetector(WorkerContext& worker, Owner& owner, std::unique_ptr<Transport> transport);

  void onTransportRead() override;
  void onTransportWrite() override {}
  void onTransportEvent(short events) override;
  static void timerCb(void* ctx) noexcept;
  void decide(bool http2);
  void close();

  WorkerContext& worker_;
  Owner& owner_;
  std::unique_ptr<Transport> transport_;
  LazyTimer timer_;
  sockaddr_storage peer_{};
  std::string listener_address_;
  config::SnapshotConstSharedPtr tls_snapshot_;
  bool done_ = false;
};

}  // namespace sy::proxy
