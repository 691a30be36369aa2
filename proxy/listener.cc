#include "proxy/listener.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "proxy/downstream_conn.h"
#include "proxy/log.h"
#include "proxy/worker.h"

namespace sy::proxy {

std::vector<ListenAddress> listenAddresses(const config::Snapshot& snapshot) {
  std::vector<ListenAddress> out;
  for (const config::SocketAddress& a : snapshot.server.listen) out.push_back({&a, false});
  for (const config::TlsListener& l : snapshot.tls_listeners) out.push_back({&l.address, true});
  return out;
}

bool listensOn(const config::Snapshot& snapshot, const std::string& address, bool tls) {
  for (const ListenAddress& a : listenAddresses(snapshot)) {
    if (a.address->text == address && a.tls == tls) return true;
  }
  return false;
}

bool openListenSocket(const config::SocketAddress& address, bool tls, ListenSocket& out,
                      std::string& error) {
  const sockaddr* sa = reinterpret_cast<const sockaddr*>(&address.addr);
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = "cannot listen on " + address.text + ": " + strerror(errno);
    return false;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (bind(fd, sa, address.len) != 0 || listen(fd, 1024) != 0) {
    error = "cannot listen on " + address.text + ": " + strerror(errno);
    close(fd);
    return false;
  }
  out.address = address.text;
  out.tls = tls;
  out.fd = fd;
  return true;
}

std::unique_ptr<Listener> Listener::create(Worker& worker, ListenSocket socket) {
  std::unique_ptr<Listener> l(new Listener(worker, socket.address, socket.tls));
  // The evconnlistener owns the fd from here (LEV_OPT_CLOSE_ON_FREE).
  l->listener_.reset(evconnlistener_new(worker.base(), &Listener::acceptCb, l.get(),
                                        // backlog 0: already listening (with 1024)
                                        LEV_OPT_CLOSE_ON_FREE, 0, socket.fd));
  if (!l->listener_) {
    close(socket.fd);
    SY_LOG(Error, "cannot accept on %s", socket.address.c_str());
    return nullptr;
  }
  evconnlistener_set_error_cb(l->listener_.get(), &Listener::errorCb);
  l->resume_timer_.reset(evtimer_new(worker.base(), &Listener::resumeCb, l.get()));
  return l;
}

void Listener::errorCb(evconnlistener*, void* ctx) noexcept {
  auto* l = static_cast<Listener*>(ctx);
  const int err = EVUTIL_SOCKET_ERROR();
  if (!l->paused_) {
    SY_LOG(Warn, "accept on %s: %s; pausing %u ms", l->address_.c_str(),
           evutil_socket_error_to_string(err), kPauseMs);
  }
  l->pause();
}

void Listener::resumeCb(evutil_socket_t, short, void* ctx) noexcept {
  auto* l = static_cast<Listener*>(ctx);
  l->paused_ = false;
  if (!l->worker_.draining()) evconnlistener_enable(l->listener_.get());
}

void Listener::pause() {
  paused_ = true;
  evconnlistener_disable(listener_.get());
  timeval tv{0, static_cast<suseconds_t>(kPauseMs) * 1000};
  evtimer_add(resume_timer_.get(), &tv);
}

void Listener::acceptCb(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int,
                        void* ctx) noexcept {
  static_cast<Listener*>(ctx)->onAccept(fd, addr);
}

void Listener::onAccept(evutil_socket_t fd, const sockaddr* addr) {
  const uint32_t limit = worker_.snapshot()->server.limits.max_connections;
  if (worker_.draining()) {
    evutil_closesocket(fd);
    return;
  }
  if (worker_.shared().client_connections.load(std::memory_order_relaxed) >= limit) {
    evutil_closesocket(fd);  // refused now; the next ones wait in the backlog for a while
    pause();
    return;
  }
  evutil_make_socket_nonblocking(fd);
  const config::ServerTls* tls = nullptr;
  if (tls_) {
    // The certificates of the current snapshot: a reload changes them for new handshakes.
    for (const config::TlsListener& l : worker_.snapshot()->tls_listeners) {
      if (l.address.text == address_) tls = l.tls.get();
    }
    if (tls == nullptr) {
      evutil_closesocket(fd);
      return;
    }
  }
  std::unique_ptr<DownstreamConn> conn = DownstreamConn::create(worker_, fd, addr, address_, tls);
  if (conn) worker_.adopt(std::move(conn));
}

}  // namespace sy::proxy
