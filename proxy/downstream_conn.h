#pragma once
// The client side of the proxy: one accepted connection, its requests answered one at a time
// and in order (keep-alive and pipelining), each forwarded to an upstream connection with the
// body streamed both ways under watermarks. The ONE place where errors become HTTP statuses.
//
// Thread: worker-local. Made by create(); its `this` is libevent callback context, so it is
// neither copyable nor movable and is freed only through Worker::close().

#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>

#include "config/snapshot.h"
#include "proxy/deferred.h"
#include "proxy/error.h"
#include "proxy/http_codec.h"
#include "proxy/libevent_ptr.h"
#include "proxy/metrics.h"
#include "proxy/mirror.h"
#include "proxy/rewrite.h"
#include "proxy/splitter.h"
#include "proxy/upstream_pool.h"

namespace sy::proxy {

class Worker;

class DownstreamConn : public Deferrable, private UpstreamConn::Owner, private Stream::Handler {
 public:
  // Bounds on what is buffered per direction: above kHighWater of output the producing side
  // stops reading until the output drains to kLowWater (libevent's le-proxy pattern); the
  // same bounds as a Stream's own input.
  static constexpr size_t kHighWater = Stream::kReadHighWater;
  static constexpr size_t kLowWater = Stream::kWriteLowWater;

  // Takes `fd` (accepted, non-blocking). Null if the stream could not be made (the fd is
  // closed then).
  // With `tls`, the connection starts with a TLS handshake (server side).
  static std::unique_ptr<DownstreamConn> create(Worker& worker, evutil_socket_t fd,
                                                const sockaddr* peer,
                                                const std::string& listener_address,
                                                const config::ServerTls* tls);
  ~DownstreamConn() override;
  DownstreamConn(const DownstreamConn&) = delete;
  DownstreamConn& operator=(const DownstreamConn&) = delete;

  // Drain: closes the connection now if it is between requests, else after the current
  // response.
  void closeWhenIdle();
  const std::string& listenerAddress() const { return listener_address_; }

 private:
  enum class State : uint8_t {
    ReadingHead,  // waiting for or decoding a request head
    Forwarding,   // a request is being exchanged with an upstream
    Discarding,   // an error was answered at head time; skipping the rest of the request
    Tunnel,       // after a 101: raw bytes both ways
    Closing,      // flushing the last bytes to the client, then closed
    Closed,
  };

  // Adapters: both decoders deliver body pieces, to different places.
  struct RequestBody final : MessageDecoder::BodySink {
    explicit RequestBody(DownstreamConn& c) : conn(c) {}
    void onBodyData(std::string_view data) override { conn.onRequestBody(data); }
    DownstreamConn& conn;
  };
  struct ResponseBody final : MessageDecoder::BodySink {
    explicit ResponseBody(DownstreamConn& c) : conn(c) {}
    void onBodyData(std::string_view data) override { conn.onResponseBody(data); }
    DownstreamConn& conn;
  };

  DownstreamConn(Worker& worker, std::unique_ptr<Stream> client, const sockaddr* peer);

  // The client stream's callbacks (each ends with FlushOnExit).
  void onStreamRead() override;
  void onStreamWrite() override;
  void onStreamEvent(short events) override;
  static void timerCb(void* ctx) noexcept;

  void onClientRead();
  void onClientWrite();
  void onClientEvent(short events);
  void onTimer();
  void onUpstreamRead() override;
  void onUpstreamWrite() override;
  void onUpstreamEvent(short events) override;

  // Request side.
  void processClientInput();
  void onRequestHead();
  void onRequestBody(std::string_view data);
  void onRequestComplete();
  bool connectUpstream(int exclude_server);
  bool variantUsable(config::Variant v);
  void writeUpstreamHead();
  RequestRewrite upstreamRewrite() const;
  void startShadow();
  // Ends the primary's part in the shadow copy (no comparison unless `complete`).
  void detachShadow(bool complete);
  // Response side.
  void processUpstreamInput();
  void onResponseHead();
  void onResponseBody(std::string_view data);
  void onResponseComplete();
  void startTunnel();
  void pumpTunnel();

  // Errors: answers the client (or aborts it when the response has started). The only place
  // a ProxyError becomes a status code.
  void fail(const ProxyError& error);
  void failUpstream(ErrorKind kind);

  // Counts the exchange's outcome once (requests_total, duration histogram).
  void recordOutcome(int status);
  void finishExchange();
  void releaseUpstream(bool reusable);
  void closeAfterFlush();
  void closeNow();
  void armTimer(uint32_t ms);
  void disarmTimer();
  void writeToClient(std::string_view data);
  // Sends what the callback queued, with one write per side (Stream::flush). Runs at the end
  // of every callback.
  void flushOutputs();
  struct FlushOnExit {
    explicit FlushOnExit(DownstreamConn& c) : conn(c) {}
    ~FlushOnExit() { conn.flushOutputs(); }
    DownstreamConn& conn;
  };
  bool clientBackpressured() const;
  bool upstreamBackpressured() const;
  const config::Timeouts& timeouts() const;

  Worker& worker_;
  std::unique_ptr<Stream> client_;
  bool tls_;  // client_ is a TlsStream
  // Head and keep-alive idle timeouts (armTimer). Lazy: re-arming it for every request costs
  // no event_add unless the new deadline is earlier.
  LazyTimer timer_;
  RequestBody request_body_{*this};
  ResponseBody response_body_{*this};
  MessageDecoder request_decoder_{MessageDecoder::Kind::Request, request_body_};
  MessageDecoder response_decoder_{MessageDecoder::Kind::Response, response_body_};
  std::string listener_address_;
  config::SnapshotConstSharedPtr tls_snapshot_;  // TLS: owns the ServerTls the SNI callback uses
  ClientIp client_addr_;
  std::string client_ip_;  // client_addr_ as text (X-Forwarded-For, logs)
  State state_ = State::ReadingHead;
  bool in_process_input_ = false;
  bool head_timer_armed_ = false;
  bool client_eof_ = false;
  bool close_when_idle_ = false;

  // The exchange in progress (valid in Forwarding/Tunnel). Reset by finishExchange().
  config::SnapshotConstSharedPtr snapshot_;  // the snapshot this request started with
  const config::Route* route_ = nullptr;
  SplitDecision decision_;
  config::Variant variant_ = config::Variant::Blue;  // the variant that serves (after failover)
  RouteMetrics* route_metrics_ = nullptr;
  uint64_t start_us_ = 0;
  uint64_t bytes_out_ = 0;     // response bytes written to the client in this exchange
  std::string upstream_text_;  // the server that answered, for the access log
  bool mirrored_ = false;
  bool head_complete_ = false;  // the current request's head was decoded in full
  bool recorded_ = false;
  std::unique_ptr<UpstreamConn> upstream_;
  ShadowRequest* shadow_ = nullptr;  // owned by the worker's Mirror; see mirror.h
  std::string head_buf_;    // serialized head (reused; keeps its capacity)
  std::string request_id_;  // generated X-Request-Id, or empty when the client sent one
  size_t upstream_head_len_ = 0;  // bytes of our head at the front of a not-yet-connected upstream
  uint64_t request_body_bytes_ = 0;
  int connect_attempts_ = 0;
  bool failed_over_ = false;
  bool request_done_ = false;     // the whole request was read from the client
  bool request_chunked_ = false;  // the body goes upstream chunked
  bool keep_alive_ = true;        // the client connection survives this exchange
  bool response_started_ = false; // the response head was written to the client
  bool response_chunked_ = false; // the body goes to the client chunked
  bool interim_response_ = false; // a 1xx (not 101) is being skipped
  bool upgraded_ = false;         // a 101 head went to the client; the tunnel follows
  bool upstream_paused_ = false;  // upstream reading stopped: the client is slow
  bool client_paused_ = false;    // client reading stopped: the upstream is slow
};

}  // namespace sy::proxy
