#pragma once
// A listening socket of one worker (SO_REUSEPORT, so the kernel spreads connections over the
// workers). Accepted sockets become DownstreamConns of that worker.
//
// Thread: worker-local (created on the main thread before the worker starts).

#include <memory>
#include <string>

#include "config/snapshot.h"
#include "proxy/libevent_ptr.h"

namespace sy::proxy {

class Worker;

class Listener {
 public:
  // Binds `address`; null with `error` set on failure.
  static std::unique_ptr<Listener> create(Worker& worker, const config::SocketAddress& address,
                                          std::string& error);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  void disable();
  const std::string& address() const { return address_; }

 private:
  Listener(Worker& worker, std::string address) : worker_(worker), address_(std::move(address)) {}
  static void acceptCb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len,
                       void* ctx) noexcept;
  void onAccept(evutil_socket_t fd, const sockaddr* addr);

  Worker& worker_;
  std::string address_;
  ListenerPtr listener_;
};

}  // namespace sy::proxy
