#pragma once
// One request's lifecycle, independent of the HTTP version of the client connection: the
// snapshot it started with, route, split, the upstream connection with retry and failover,
// the shadow copy, the outcome (metrics, access log) and its termination record (SPEC §10).
// THE one place where errors become statuses (as a LocalReply to the server connection).
//
// Retry is decided in one place (retryable()): a connect that failed, or a reused keep-alive
// connection that the upstream closed before any response byte, is retried once on another
// server (or the same one, afresh), and then the route's failover variant, as long as the
// request can be replayed (nothing of its body has left).
//
// Thread: worker-local. Made by ExchangeFactoryImpl for a server connection, which frees it
// (deferred) once the response and the request have ended.

#include <cstdint>
#include <memory>
#include <string>

#include "config/snapshot.h"
#include "proxy/exchange/context.h"
#include "proxy/http/error.h"
#include "proxy/http/server_exchange.h"
#include "proxy/http/termination.h"
#include "proxy/http1/client.h"
#include "proxy/routing/client_address.h"
#include "proxy/routing/segments.h"
#include "proxy/routing/splitter.h"
#include "proxy/shadow/mirror.h"
#include "proxy/upstream/pool.h"

namespace sy::proxy {

class Exchange final : public RequestHandler,
                       private UpstreamConn::Owner,
                       private Http1Client::Callbacks {
 public:
  Exchange(ExchangeContext& ctx, ResponseEncoder& encoder, const ConnectionInfo& connection);
  ~Exchange() override;
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;
  // One is made and freed per request, always on its worker's thread: the memory is recycled
  // through a per-thread free list instead of a malloc and a free per request.
  static void* operator new(size_t size);
  static void operator delete(void* p, size_t size);

  // RequestHandler.
  void decodeHead(RequestHead& head, const RequestFraming& framing) override;
  void decodeBody(std::string_view data) override;
  void decodeEnd(const Headers& trailers) override;
  void decodeError(const ProxyError& error, RequestHead* head) override;
  void onClientGone() override;
  bool bodyBackpressured() const override;
  void onEncoderDrained() override;
  void flush() override;

 private:
  struct FlushOnExit;

  // UpstreamConn::Owner.
  void onUpstreamRead() override;
  void onUpstreamWrite() override;
  void onUpstreamEvent(short events) override;
  // Http1Client::Callbacks.
  void onResponseHead(const ResponseHead& head, BodyFraming framing,
                      uint64_t content_length) override;
  void onResponseBody(std::string_view data) override;

  Http1Client& client() const { return upstream_->client(); }  // only while upstream_
  // Nothing of the request has left for an upstream (none yet, or its body is all still
  // queued): it can go to another connection.
  bool replayable() const { return !upstream_ || upstream_->client().replayable(); }
  bool variantUsable(config::Variant v) const;
  UpstreamPool* poolOf(config::Variant v) const;
  // Takes a connection to a server of the current variant (not `exclude_server`; `fresh`: not
  // an idle one) and queues the request on it (a retry moves what is queued). False when none
  // could be had.
  bool connectUpstream(int exclude_server, bool fresh = false);
  RequestRewrite upstreamRewrite() const;
  // Notes the head and makes the request id (unless the client sent X-Request-Id).
  void takeHead(RequestHead& head);
  void readUpstream();
  void onResponseComplete();
  void startShadow();
  void detachShadow(bool complete);
  void releaseUpstream(bool reusable);

  // Errors: answers the client (or cuts the response when it has started). Records the outcome.
  void fail(const ProxyError& error);
  void failUpstream(ErrorKind kind);
  bool retryable(ErrorKind kind) const;
  Termination terminationFor(const ProxyError& error) const;
  TerminationPhase requestPhase() const;
  TerminationPhase upstreamPhase() const;
  // Counts the exchange once (requests_total + duration unless `status` is 0, terminations)
  // and writes its access-log line.
  void recordOutcome(int status, Termination termination);

  ExchangeContext& ctx_;
  ResponseEncoder& encoder_;
  ConnectionInfo connection_;
  // The request's client (SPEC §13): the connection's address, or behind trusted_proxies the
  // one X-Forwarded-For names (takeHead). THE one client address: routing (client_ip overrides,
  // fallback = "client_ip", segments) and the access log read it; X-Forwarded-For upstream
  // appends the connection's own address instead.
  ClientIp client_;
  std::string_view client_text_;     // client_ as text: connection_.client_ip or the storage
  std::string client_text_storage_;  // only when X-Forwarded-For decided
  config::SnapshotConstSharedPtr snapshot_;  // the snapshot this request started with
  const config::Route* route_ = nullptr;
  RouteMetrics* route_metrics_ = nullptr;
  RequestHead* head_ = nullptr;  // the connection's decoded head (valid to our end)
  RequestFraming framing_;
  SplitDecision decision_;
  config::Variant variant_ = config::Variant::Blue;  // the variant that serves (after failover)
  std::unique_ptr<UpstreamConn> upstream_;
  ShadowRequest* shadow_ = nullptr;  // owned by the worker's Mirror; see mirror.h
  // The generated X-Request-Id (32 hex digits), or empty when the client sent one.
  char request_id_buf_[32];
  std::string_view request_id_;
  std::string upstream_text_;  // the server that answered, for the access log
  std::string set_cookie_;
  uint64_t start_us_;  // made when the head is complete (or the request failed before)
  uint64_t request_body_bytes_ = 0;
  unsigned response_status_ = 0;
  int connect_attempts_ = 0;
  bool failed_over_ = false;
  bool request_done_ = false;
  bool response_started_ = false;  // a response head went to the client
  bool upgrade_accepted_ = false;  // a 101 went to the client: a tunnel follows
  bool upstream_paused_ = false;   // upstream reading stopped: the client is slow
  bool upstream_eof_ = false;      // the upstream's failure was a clean close (FIN), not a reset
  bool mirrored_ = false;
  config::CountryCode country_ = 0;  // the client's, for the access log (0 = unknown)
  bool country_known_ = false;       // looked up already
  bool recorded_ = false;
  bool ended_ = false;  // the response ended (or the client left): nothing more to do
};

// Makes Exchanges for the server connections of one worker.
class ExchangeFactoryImpl final : public ExchangeFactory {
 public:
  explicit ExchangeFactoryImpl(ExchangeContext& ctx) : ctx_(ctx) {}
  std::unique_ptr<RequestHandler> newExchange(ResponseEncoder& encoder,
                                              const ConnectionInfo& connection) override {
    return std::make_unique<Exchange>(ctx_, encoder, connection);
  }

 private:
  ExchangeContext& ctx_;
};

}  // namespace sy::proxy
