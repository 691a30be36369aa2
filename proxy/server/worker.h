#pragma once
// One thread + one event_base. Owns every per-thread object: its listeners, its client
// connections (each with its current exchange), its upstream pools, its shadow side, its copy
// of the current snapshot pointer. Other threads talk to a worker only through post().
//
// Thread: worker-local, except where a method says "Thread: any".

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "config/snapshot.h"
#include "proxy/exchange/context.h"
#include "proxy/exchange/exchange.h"
#include "proxy/http1/server_connection.h"
#include "proxy/http2/server_connection.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/net/listener.h"
#include "proxy/net/worker_context.h"
#include "proxy/observe/access_log.h"
#include "proxy/observe/metrics.h"
#include "proxy/server/protocol_detect.h"
#include "proxy/server/proxy_protocol_reader.h"
#include "proxy/shadow/mirror.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/pool_set.h"

namespace sy::proxy {

// Process-wide state shared by every worker. Atomics or self-locking, touched once per
// connection or per mismatch.
struct SharedState {
  ConnectionCounts connections;
  DiffLog diffs;  // latest shadow mismatches of every worker
  AccessLog access_log;
};

// What the main thread hands every worker for one config generation: the snapshot and the
// per-route / per-server state objects that belong to it (created on the main thread).
struct Publication {
  config::SnapshotConstSharedPtr snapshot;
  std::shared_ptr<const RouteMetricsTable> metrics;
  std::shared_ptr<const HealthTable> health;
};

class Worker final : private Acceptor,
                     private ProtocolDetector::Owner,
                     private ProxyProtocolReader::Owner,
                     private AccessLogSink {
 public:
  // Thread: main. `first` is the generation to start with.
  Worker(size_t index, SharedState& shared, Publication first);
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Thread: main, before start(). Takes the sockets to accept on.
  void addListeners(std::vector<ListenSocket> sockets);
  // Thread: main. Starts the thread running the loop.
  void start();
  // Thread: main. Waits for the loop to exit.
  void join();

  // Thread: any. Runs `fn` on this worker's thread (soon; in order of posting).
  void post(std::function<void()> fn);
  // Thread: any. Requests from now on use `next`; requests in flight keep theirs.
  // `new_listeners` are sockets for addresses the snapshot adds; listeners for addresses it
  // no longer has are closed, and their connections close once idle.
  void publish(Publication next, std::vector<ListenSocket> new_listeners);
  // Thread: any. Closes the listeners, then runs `done` (on this worker's thread).
  void stopAccepting(std::function<void()> done);
  // Thread: any. Stop accepting; exit the loop once every connection is gone or after
  // `timeout_ms`; idle keep-alive connections close after ServerConnection::kDrainIdleMs.
  void drain(uint32_t timeout_ms);

  size_t index() const { return context_.index(); }
  // Thread: any. True once the loop has exited (after a drain).
  bool finished() const { return finished_.load(std::memory_order_acquire); }

 private:
  // Acceptor.
  Result accept(UniqueFd fd, const sockaddr* peer, const std::string& address, bool tls) override;
  // ClientConnection::Owner.
  void connectionClosed(ClientConnection* conn) override;
  // ProtocolDetector::Owner: the HTTP/1 or HTTP/2 connection takes the detector's place.
  void protocolDetected(ProtocolDetector* detector, bool http2) override;
  // ProxyProtocolReader::Owner: the connection starts from the header's source address.
  void proxyHeaderRead(ProxyProtocolReader* reader) override;
  void proxyHeaderRefused(ProxyProtocolReader* reader, ProxyProtocolError why) override;
  // What accept() does once the connection's address is known: the HTTP/1 connection, or the
  // protocol detector (TLS with h2, or http2_cleartext). False: refused (fd closed).
  bool startConnection(UniqueFd fd, const sockaddr* peer, const std::string& address, bool tls);
  // AccessLogSink: lines are batched; a lone line is written within 100 ms.
  bool enabled() const override { return shared_.access_log.enabled(); }
  void log(const AccessLogEntry& entry) override;

  static void onPosted(evutil_socket_t, short, void* ctx) noexcept;
  static void onDrainTimer(evutil_socket_t, short, void* ctx) noexcept;
  static void onAccessLogTimer(evutil_socket_t, short, void* ctx) noexcept;
  void runPosted();
  void closeRemovedListeners(const config::Snapshot& next);
  void setGeneration(Publication next);
  void maybeFinishDrain();

  SharedState& shared_;
  WorkerContext context_;
  EventPtr posted_event_;
  EventPtr drain_timer_;
  EventPtr access_log_timer_;  // flushes a partial batch of access-log lines
  std::thread thread_;

  UniqueFd wake_fd_;         // eventfd: post() writes, the loop reads
  std::mutex posted_mutex_;  // guards posted_ (the only cross-thread state)
  std::vector<std::function<void()>> posted_;

  PoolSet pools_;
  Mirror mirror_;
  ExchangeContext exchanges_;
  ExchangeFactoryImpl factory_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  // Every client connection: HTTP/1, HTTP/2, or still finding its protocol.
  std::unordered_map<ClientConnection*, std::unique_ptr<ClientConnection>> connections_;
  AccessLogBatch access_batch_{shared_.access_log};
  std::atomic<bool> finished_{false};
};

}  // namespace sy::proxy
