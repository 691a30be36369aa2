#pragma once
// Listening sockets. Every worker has its own socket for every listen address (SO_REUSEPORT,
// so the kernel spreads connections over the workers); accepted sockets go to the worker's
// Acceptor, which makes them server connections.
//
// Thread: openListenSocket: main. Listener: worker-local (it may be created on the main thread
// before the worker starts).

#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "config/snapshot.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/net/worker_context.h"

namespace sy::proxy {

// A bound, listening, non-blocking socket not yet owned by a Listener.
struct ListenSocket {
  std::string address;  // as configured ("host:port")
  bool tls = false;
  UniqueFd fd;
};

// Every address a snapshot listens on: server.listen (plain) and [[listener]] (TLS, or plain
// without listener.tls).
struct ListenAddress {
  const config::SocketAddress* address;
  bool tls;
};
std::vector<ListenAddress> listenAddresses(const config::Snapshot& snapshot);
bool listensOn(const config::Snapshot& snapshot, const std::string& address, bool tls);

// Binds and listens on `address` with SO_REUSEADDR and SO_REUSEPORT. Returns false with `error`
// set ("cannot listen on ADDR: reason") on failure. Opening on the main thread lets a reload
// fail cleanly, before anything is published, when a new address cannot be bound.
bool openListenSocket(const config::SocketAddress& address, bool tls, ListenSocket& out,
                      std::string& error);

// Takes accepted sockets. Thread: worker-local.
class Acceptor {
 public:
  enum class Result : uint8_t { Taken, Refused, Full };
  virtual ~Acceptor() = default;
  // Takes `fd` (non-blocking): Taken (a connection now), Refused (closed), Full (closed; the
  // listener pauses, see Listener::kPauseMs).
  virtual Result accept(UniqueFd fd, const sockaddr* peer, const std::string& address,
                        bool tls) = 0;
};

class Listener {
 public:
  // Takes ownership of `socket.fd` (closed with the Listener). Null if libevent refuses it.
  static std::unique_ptr<Listener> create(WorkerContext& worker, Acceptor& acceptor,
                                          ListenSocket socket);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  const std::string& address() const { return address_; }
  bool tls() const { return tls_; }

 private:
  Listener(WorkerContext& worker, Acceptor& acceptor, std::string address, bool tls)
      : worker_(worker), acceptor_(acceptor), address_(std::move(address)), tls_(tls) {}
  // Pausing instead of spinning: when accept() fails for lack of descriptors or memory, or
  // max_connections is reached, the listener stops for kPauseMs (the kernel keeps queueing
  // in the backlog) and then tries again.
  static constexpr uint32_t kPauseMs = 100;

  static void acceptCb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len,
                       void* ctx) noexcept;
  static void errorCb(evconnlistener*, void* ctx) noexcept;
  static void resumeCb(evutil_socket_t, short, void* ctx) noexcept;
  void onAccept(evutil_socket_t fd, const sockaddr* addr);
  void pause();

  WorkerContext& worker_;
  Acceptor& acceptor_;
  std::string address_;
  bool tls_;
  ListenerPtr listener_;
  EventPtr resume_timer_;
  bool paused_ = false;
};

}  // namespace sy::proxy
