#include "proxy/net/listener.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace sy::proxy {

std::vector<ListenAddress> listenAddresses(const config::Snapshot& snapshot) {
  std::vector<ListenAddress> out;
  for (const config::SocketAddress& a : snapshot.server.listen) out.push_back({&a, false});
  for (const config::Listener& l : snapshot.listeners) {
    out.push_back({&l.address, l.tls != nullptr});
  }
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
  UniqueFd fd(socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = "cannot listen on " + address.text + ": " + strerror(errno);
    return false;
  }
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (bind(fd.get(), sa, address.len) != 0 || listen(fd.get(), 1024) != 0) {
    error = "cannot listen on " + address.text + ": " + strerror(errno);
    return false;
  }
  out.address = address.text;
  out.tls = tls;
  out.fd = std::move(fd);
  return true;
}

std::unique_ptr<Listener> Listener::create(WorkerContext& worker, Acceptor& acceptor,
                                           ListenSocket socket) {
  std::unique_ptr<Listener> l(new Listener(worker, acceptor, socket.address, socket.tls));
  l->listener_.reset(evconnlistener_new(worker.base(), &Listener::acceptCb, l.get(),
                                        // backlog 0: already listening (with 1024)
                                        LEV_OPT_CLOSE_ON_FREE, 0, socket.fd.get()));
  if (!l->listener_) {
    SY_LOG(Error, "cannot accept on %s", socket.address.c_str());
    return nullptr;
  }
  socket.fd.release();  // the evconnlistener owns it now (LEV_OPT_CLOSE_ON_FREE)
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
  evutil_make_socket_nonblocking(fd);
  if (acceptor_.accept(UniqueFd(fd), addr, address_, tls_) == Acceptor::Result::Full) {
    pause();  // refused now; the next ones wait in the backlog for a while
  }
}

}  // namespace sy::proxy
