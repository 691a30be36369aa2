#include "proxy/listener.h"

#include "proxy/downstream_conn.h"
#include "proxy/log.h"
#include "proxy/worker.h"

namespace sy::proxy {

std::unique_ptr<Listener> Listener::create(Worker& worker, const config::SocketAddress& address,
                                           std::string& error) {
  std::unique_ptr<Listener> l(new Listener(worker, address.text));
  // Every worker binds the same address with SO_REUSEPORT; the kernel balances accepts.
  l->listener_.reset(evconnlistener_new_bind(
      worker.base(), &Listener::acceptCb, l.get(),
      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
      1024, reinterpret_cast<const sockaddr*>(&address.addr), static_cast<int>(address.len)));
  if (!l->listener_) {
    error = "cannot listen on " + address.text + ": " +
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
    return nullptr;
  }
  return l;
}

void Listener::disable() {
  if (listener_) evconnlistener_disable(listener_.get());
}

void Listener::acceptCb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int,
                        void* ctx) noexcept {
  static_cast<Listener*>(ctx)->onAccept(fd, addr);
}

void Listener::onAccept(evutil_socket_t fd, const sockaddr* addr) {
  const uint32_t limit = worker_.snapshot()->server.limits.max_connections;
  if (worker_.draining() ||
      worker_.shared().client_connections.load(std::memory_order_relaxed) >= limit) {
    evutil_closesocket(fd);
    return;
  }
  evutil_make_socket_nonblocking(fd);
  std::unique_ptr<DownstreamConn> conn = DownstreamConn::create(worker_, fd, addr);
  if (conn) worker_.adopt(std::move(conn));
}

}  // namespace sy::proxy
