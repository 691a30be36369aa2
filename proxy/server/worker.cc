#include "proxy/server/worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "common/log.h"
#include "config/tls_context.h"

namespace sy::proxy {

Worker::Worker(size_t index, SharedState& shared, Publication first)
    : shared_(shared),
      context_(index, shared.connections),
      pools_(context_),
      mirror_(context_, shared.diffs),
      exchanges_(context_, pools_, mirror_, *this),
      factory_(exchanges_) {
  event_base* base = context_.base();
  wake_fd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  posted_event_.reset(
      event_new(base, wake_fd_.get(), EV_READ | EV_PERSIST, &Worker::onPosted, this));
  event_add(posted_event_.get(), nullptr);
  drain_timer_.reset(evtimer_new(base, &Worker::onDrainTimer, this));
  access_log_timer_.reset(evtimer_new(base, &Worker::onAccessLogTimer, this));
  setGeneration(std::move(first));
}

Worker::~Worker() {
  // Connections first: their exchanges return upstream connections to pools that must still
  // exist.
  connections_.clear();
  context_.freeDeferred();
  pools_.retireAll();
  context_.freeDeferred();
  listeners_.clear();
  posted_event_.reset();
}

void Worker::addListeners(std::vector<ListenSocket> sockets) {
  for (ListenSocket& s : sockets) {
    std::unique_ptr<Listener> l = Listener::create(context_, *this, std::move(s));
    if (l) listeners_.push_back(std::move(l));
  }
}

void Worker::start() {
  thread_ = std::thread([this] {
    event_base_loop(context_.base(), EVLOOP_NO_EXIT_ON_EMPTY);
    access_batch_.flush();
    finished_.store(true, std::memory_order_release);
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    posted_.push_back(std::move(fn));
  }
  // The only cross-thread touch of a worker: a write to its eventfd wakes its loop.
  const uint64_t one = 1;
  ssize_t n = write(wake_fd_.get(), &one, sizeof(one));
  (void)n;  // EAGAIN means the counter is already non-zero: a wake-up is pending anyway
}

void Worker::onPosted(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<Worker*>(ctx)->runPosted();
}

void Worker::runPosted() {
  uint64_t count = 0;
  ssize_t n = read(wake_fd_.get(), &count, sizeof(count));
  (void)n;
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    tasks.swap(posted_);
  }
  for (auto& t : tasks) t();
}

void Worker::publish(Publication next, std::vector<ListenSocket> new_listeners) {
  // (std::function wants a copyable task: the sockets travel behind a shared_ptr.)
  auto sockets = std::make_shared<std::vector<ListenSocket>>(std::move(new_listeners));
  post([this, next = std::move(next), sockets]() mutable {
    closeRemovedListeners(*next.snapshot);
    if (!context_.draining()) addListeners(std::move(*sockets));  // else they close with it
    setGeneration(std::move(next));
  });
}

void Worker::closeRemovedListeners(const config::Snapshot& next) {
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    const std::string& address = (*it)->address();
    if (listensOn(next, address, (*it)->tls())) {
      ++it;
      continue;
    }
    SY_LOG(Info, "worker %zu: no longer listening on %s", index(), address.c_str());
    for (auto& [ptr, owned] : connections_) {
      if (ptr->listenerAddress() == address) ptr->closeWhenIdle();
    }
    it = listeners_.erase(it);
  }
}

void Worker::setGeneration(Publication next) {
  std::vector<const config::Pool*> pools;
  pools.reserve(next.snapshot->pools.size());
  for (const auto& [name, pool] : next.snapshot->pools) pools.push_back(&pool);
  pools_.update(pools, *next.health);
  mirror_.setSnapshot(*next.snapshot, *next.health);
  exchanges_.snapshot = std::move(next.snapshot);
  exchanges_.route_metrics = std::move(next.metrics);
}

Acceptor::Result Worker::accept(UniqueFd fd, const sockaddr* peer, const std::string& address,
                                bool tls) {
  const config::Snapshot& snapshot = *exchanges_.snapshot;
  if (context_.draining()) return Result::Refused;
  if (shared_.connections.client.load(std::memory_order_relaxed) >=
      snapshot.server.limits.max_connections) {
    return Result::Full;  // refused now; the next ones wait in the backlog for a while
  }
  for (const config::Listener& l : snapshot.listeners) {
    if (l.address.text != address || (l.tls != nullptr) != tls || !l.proxy_protocol) continue;
    // SPEC §13: the PROXY header comes first, before TLS and before the HTTP/2 preface.
    std::unique_ptr<ProxyProtocolReader> reader =
        ProxyProtocolReader::create(context_, *this, std::move(fd), peer, address, tls,
                                    snapshot.server.timeouts.client_header_ms);
    if (!reader) return Result::Refused;
    ClientConnection* key = reader.get();
    connections_.emplace(key, std::move(reader));
    return Result::Taken;
  }
  return startConnection(std::move(fd), peer, address, tls) ? Result::Taken : Result::Refused;
}

bool Worker::startConnection(UniqueFd fd, const sockaddr* peer, const std::string& address,
                             bool tls) {
  const config::Snapshot& snapshot = *exchanges_.snapshot;
  const config::ServerTls* server_tls = nullptr;
  bool http2 = false;  // the connection may speak HTTP/2: find out before choosing
  if (tls) {
    // The certificates of the current snapshot: a reload changes them for new handshakes.
    for (const config::Listener& l : snapshot.listeners) {
      if (l.address.text == address && l.tls != nullptr) {
        server_tls = l.tls.get();
        http2 = l.http2;
      }
    }
    if (server_tls == nullptr) return false;
  } else {
    http2 = snapshot.server.http2_cleartext;
  }
  std::unique_ptr<ClientConnection> conn;
  if (!http2) {
    conn = ServerConnection::create(context_, factory_, *this, exchanges_.snapshot, std::move(fd),
                                    peer, address, server_tls);
  } else {
    std::unique_ptr<Transport> transport;
    if (server_tls != nullptr) {
      transport =
          TlsTransport::accepted(context_.base(), std::move(fd), server_tls->defaultContext());
    } else {
      transport = PlainTransport::accepted(context_.base(), std::move(fd));
    }
    if (transport) {
      // The SNI callback reads the snapshot's ServerTls: kept alive through the handshake.
      conn = ProtocolDetector::create(context_, *this, std::move(transport), peer, address,
                                      snapshot.server.timeouts.client_header_ms,
                                      server_tls != nullptr ? exchanges_.snapshot : nullptr);
    }
  }
  if (!conn) return false;
  ClientConnection* key = conn.get();
  connections_.emplace(key, std::move(conn));
  return true;
}

void Worker::proxyHeaderRead(ProxyProtocolReader* reader) {
  auto it = connections_.find(reader);
  if (it == connections_.end()) return;
  UniqueFd fd = reader->takeFd();
  sockaddr_storage source;
  std::memcpy(&source, reader->source(), sizeof(source));
  const std::string address = reader->listenerAddress();
  const bool tls = reader->tls();
  context_.deferDelete(std::move(it->second));
  connections_.erase(it);
  if (context_.draining()) {  // the fd closes
    maybeFinishDrain();
    return;
  }
  // (A reload that removed a TLS listener since the accept: refused, the fd closes.)
  startConnection(std::move(fd), reinterpret_cast<const sockaddr*>(&source), address, tls);
}

void Worker::proxyHeaderRefused(ProxyProtocolReader* reader, ProxyProtocolError why) {
  if (exchanges_.route_metrics && exchanges_.route_metrics->proxy_protocol_errors) {
    exchanges_.route_metrics->proxy_protocol_errors->record(reader->listenerAddress(), why);
  }
}

void Worker::protocolDetected(ProtocolDetector* detector, bool http2) {
  auto it = connections_.find(detector);
  if (it == connections_.end()) return;
  std::unique_ptr<Transport> transport = detector->takeTransport();
  config::SnapshotConstSharedPtr tls_snapshot = detector->takeTlsSnapshot();
  const std::string address = detector->listenerAddress();
  const sockaddr* peer = detector->peer();  // (the detector is freed later, not now)
  context_.deferDelete(std::move(it->second));
  connections_.erase(it);
  auto link = [&](auto conn) {
    if (!conn) {
      if (context_.draining()) maybeFinishDrain();
      return;
    }
    auto* raw = conn.get();
    connections_.emplace(raw, std::move(conn));
    raw->start();
    if (context_.draining()) raw->closeWhenIdle();
  };
  if (http2) {
    WorkerCounters* counters = exchanges_.route_metrics && exchanges_.route_metrics->worker_counters
                                   ? &exchanges_.route_metrics->worker_counters[context_.index()]
                                   : nullptr;
    link(Http2Connection::create(context_, factory_, *this, exchanges_.snapshot,
                                 std::move(transport), peer, address, tls_snapshot, counters));
  } else {
    link(ServerConnection::create(context_, factory_, *this, exchanges_.snapshot,
                                  std::move(transport), peer, address, tls_snapshot));
  }
}

void Worker::connectionClosed(ClientConnection* conn) {
  auto it = connections_.find(conn);
  if (it == connections_.end()) return;
  context_.deferDelete(std::move(it->second));
  connections_.erase(it);
  if (context_.draining()) maybeFinishDrain();
}

void Worker::drain(uint32_t timeout_ms) {
  post([this, timeout_ms] {
    context_.setDraining();
    listeners_.clear();  // (stopAccepting did it already, unless it timed out)
    for (auto& [ptr, owned] : connections_) ptr->closeWhenIdle();
    timeval tv{static_cast<time_t>(timeout_ms / 1000),
               static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
    evtimer_add(drain_timer_.get(), &tv);
    maybeFinishDrain();
  });
}

void Worker::stopAccepting(std::function<void()> done) {
  post([this, done = std::move(done)] {
    // Closed, not just disabled: a disabled socket still completes handshakes into its
    // backlog, leaving new clients hanging until exit instead of being refused.
    listeners_.clear();
    done();
  });
}

void Worker::maybeFinishDrain() {
  if (connections_.empty()) event_base_loopexit(context_.base(), nullptr);
}

void Worker::onDrainTimer(evutil_socket_t, short, void* ctx) noexcept {
  auto* w = static_cast<Worker*>(ctx);
  SY_LOG(Warn, "worker %zu: drain timeout with %zu connections left", w->index(),
         w->connections_.size());
  event_base_loopexit(w->context_.base(), nullptr);
}

void Worker::log(const AccessLogEntry& entry) {
  const bool was_empty = access_batch_.empty();
  access_batch_.add(entry);
  if (was_empty && !access_batch_.empty()) {
    // A lone line is written within 100 ms; busy workers flush by size long before.
    timeval tv{0, 100000};
    evtimer_add(access_log_timer_.get(), &tv);
  }
}

void Worker::onAccessLogTimer(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<Worker*>(ctx)->access_batch_.flush();
}

}  // namespace sy::proxy
