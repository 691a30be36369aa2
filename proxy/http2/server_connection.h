#pragma once
// The client side of an HTTP/2 connection (RFC 9113) on nghttp2's server session: the framing,
// HPACK, flow control and the stream state machine are nghttp2's; this class maps each stream
// onto one exchange (a RequestHandler made by the ExchangeFactory) and is that stream's
// ResponseEncoder through a per-stream object. Like the HTTP/1 connection it never decides a
// status: decode errors and timeouts go to the stream's exchange, which answers with a
// LocalReply.
//
// What it accepts and refuses: nghttp2's HTTP messaging checks (pseudo-headers, lower-case
// names, connection-specific fields, "te" other than "trailers", Content-Length against the
// DATA received) reset the offending stream with PROTOCOL_ERROR; CONNECT and methods HTTP/1.1
// clients cannot send either go to the exchange as MethodNotImplemented (501); a header list
// above max_header_list_bytes goes to the exchange as HeadTooLarge (431), and so does a trailer
// section above it. Request bodies go upstream as HTTP/1.1: Content-Length when the client gave
// one, else chunked when the stream has a body; request trailers go in the chunked trailer
// section (dropped with a Content-Length), response trailers as a trailing HEADERS frame. Flow
// control: a stream's window reopens (WINDOW_UPDATE) only for DATA its exchange took without
// backpressure; the connection window reopens at once, so one slow upstream never stalls the
// other streams.
//
// Abuse (SPEC §12): per-connection budgets over a sliding 10 s window for streams reset before
// their response completed (rapid reset, CVE-2023-44487), SETTINGS, PING, PRIORITY and empty
// DATA frames, and a bound on CONTINUATION frames per header block (CVE-2024-27316, counted by
// nghttp2). A client beyond one gets GOAWAY(ENHANCE_YOUR_CALM), counted in
// switchyard_http2_goaways_total{reason}; the GOAWAY is flushed, the sending side shut, the
// rest of the input discarded, and the connection closes at EOF or after kCalmLingerMs. The
// numbers and what nghttp2 already bounds by itself are in server_connection.cc.
//
// Thread: worker-local. Made by create(); its `this` is libevent and nghttp2 callback context,
// so it is neither copyable nor movable, and it is freed only through its Owner (deferred
// deletion). Streams and their exchanges are freed through deferred deletion as well.

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "config/snapshot.h"
#include "proxy/http/server_exchange.h"
#include "proxy/net/client_connection.h"
#include "proxy/net/lazy_timer.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/net/transport.h"
#include "proxy/net/worker_context.h"
#include "proxy/observe/metrics.h"

struct nghttp2_session;

namespace sy::proxy {

class Http2Connection final : public ClientConnection, private Transport::Handler {
 public:
  // Response bytes buffered per stream above which its exchange stops reading the upstream
  // (encoderBackpressured) until they drain to kLowWater: the HTTP/1 watermarks.
  static constexpr size_t kHighWater = Transport::kReadHighWater;
  static constexpr size_t kLowWater = Transport::kWriteLowWater;
  // The HTTP/2 connection preface a client with prior knowledge starts with (RFC 9113 §3.4).
  static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  // Draining: how long a connection with no stream open stays for its GOAWAY to go out.
  static constexpr uint32_t kDrainLingerMs = 50;
  // After GOAWAY(ENHANCE_YOUR_CALM): how long the connection reads (and discards) at most
  // before it closes, so the client reads the GOAWAY rather than a TCP reset.
  static constexpr uint32_t kCalmLingerMs = 1000;

  // Counts events over the last kSeconds seconds in one-second slots: a sliding window, exact
  // to within a second (the oldest slot may have begun up to a second earlier).
  class EventWindow {
   public:
    static constexpr uint32_t kSeconds = 10;
    // Adds one event at `now_ms` (a monotonic clock); the count over the window after it.
    uint32_t add(uint64_t now_ms);
    uint32_t count(uint64_t now_ms);

   private:
    void advance(uint64_t second);
    std::array<uint32_t, kSeconds> slots_{};
    uint64_t second_ = 0;  // the newest slot's second
    uint32_t total_ = 0;
  };

  // Takes `transport`: a TLS stream whose handshake chose "h2", or a plain stream whose input
  // starts with kPreface (left in its input; start() reads it). `current` is the worker's
  // snapshot pointer (read for the timeouts and [server.http2] when the connection starts); it
  // must outlive the connection. `tls_snapshot`: kept alive with the connection, or null. Null
  // when nghttp2 cannot allocate.
  static std::unique_ptr<Http2Connection> create(
      WorkerContext& worker, ExchangeFactory& factory, Owner& owner,
      const config::SnapshotConstSharedPtr& current, std::unique_ptr<Transport> transport,
      const sockaddr* peer, const std::string& listener_address,
      config::SnapshotConstSharedPtr tls_snapshot, WorkerCounters* counters = nullptr);
  ~Http2Connection() override;
  Http2Connection(const Http2Connection&) = delete;
  Http2Connection& operator=(const Http2Connection&) = delete;

  // Sends the server's SETTINGS and serves what the transport's input already holds; call
  // once the owner has linked the connection.
  void start();

  // Drain (or the listener went away): GOAWAY naming the last stream taken; the open streams
  // finish, then the connection closes. Never closes inside the call.
  void closeWhenIdle() override;
  const std::string& listenerAddress() const override { return listener_address_; }

 private:
  class Stream;
  struct Callbacks;  // nghttp2's callbacks (trampolines into the members below)
  struct FlushOnExit;

  Http2Connection(WorkerContext& worker, ExchangeFactory& factory, Owner& owner,
                  const config::SnapshotConstSharedPtr& current, std::unique_ptr<Transport> t,
                  const sockaddr* peer);
  bool init();

  void onTransportRead() override;
  void onTransportWrite() override;
  void onTransportEvent(short events) override;
  static void timerCb(void* ctx) noexcept;
  void onTimer();
  static void drainCb(evutil_socket_t fd, short what, void* ctx) noexcept;
  // Tells the exchanges of streams whose buffered response drained (onEncoderDrained).
  void notifyDrained();

  // nghttp2 callbacks.
  int onBeginHeaders(int32_t stream_id);
  // `trailer`: a field of the request's trailer section (else of its head).
  int onHeader(int32_t stream_id, bool trailer, std::string_view name, std::string_view value);
  // `data_length`: a DATA frame's payload without its padding.
  int onFrameRecv(int32_t stream_id, uint8_t type, uint8_t flags, bool request_headers,
                  size_t data_length);
  int onDataChunk(int32_t stream_id, std::string_view data);
  int onFrameSend(int32_t stream_id, uint8_t type, uint8_t flags);
  int onStreamClose(int32_t stream_id, uint32_t error_code);

  // The per-connection budgets: false (and GOAWAY(ENHANCE_YOUR_CALM) under way) once the
  // client went beyond one.
  bool withinBudget(int32_t stream_id, uint8_t type, uint8_t flags, size_t data_length);
  // GOAWAY(ENHANCE_YOUR_CALM) for `reason`, counted; the connection closes once it went out.
  void calmDown(Http2Abuse reason);
  // Every unfinished exchange is told its client is gone (the streams stay until closeNow).
  void abandonStreams();

  Stream* stream(int32_t id) const;
  void headComplete(Stream& s, bool end_stream);
  void requestEnd(Stream& s);
  // Feeds the input to nghttp2.
  void processInput();
  // Serializes what nghttp2 has to send into the transport's output (up to kHighWater), then
  // tells drained streams' exchanges. Deferred while inside an nghttp2 call.
  void sendPending();
  // Flushes every exchange's upstream, then the client (the end of each callback).
  void flush();
  void updateTimer();
  // The client vanished (EOF, error, timeout): every unfinished exchange is told, then close.
  void clientGone();
  void closeNow();
  const config::ServerSettings& settings() const { return current_->server; }

  WorkerContext& worker_;
  ExchangeFactory& factory_;
  Owner& owner_;
  const config::SnapshotConstSharedPtr& current_;
  std::unique_ptr<Transport> client_;
  LazyTimer timer_;
  std::string listener_address_;
  config::SnapshotConstSharedPtr tls_snapshot_;
  ClientIp client_addr_;
  std::string client_ip_;
  std::unique_ptr<nghttp2_session, void (*)(nghttp2_session*)> session_;
  std::map<int32_t, std::unique_ptr<Stream>> streams_;
  WorkerCounters* counters_ = nullptr;
  // The budgets' windows (see withinBudget).
  EventWindow opened_;  // streams begun
  EventWindow resets_;  // streams that closed before their exchange ended its response
  EventWindow settings_frames_;
  EventWindow ping_frames_;
  EventWindow priority_frames_;
  EventWindow empty_data_frames_;
  uint32_t reset_budget_ = 0;
  uint64_t calm_deadline_ = 0;  // LazyTimer clock; 0 unless calm_
  EventPtr drain_event_;        // runs notifyDrained outside the exchanges' callbacks
  uint64_t max_header_list_bytes_ = 0;
  uint32_t header_ms_ = 0;
  uint32_t idle_ms_ = 0;
  int in_nghttp2_ = 0;         // depth of nghttp2 calls in progress (no re-entry)
  bool send_wanted_ = false;   // sendPending was asked for inside an nghttp2 call
  bool close_wanted_ = false;  // a fatal error inside an nghttp2 call: close after it
  bool closed_ = false;
  bool draining_ = false;
  bool calm_ = false;       // GOAWAY(ENHANCE_YOUR_CALM): input is discarded from now
  bool calm_shut_ = false;  // ... it went out and the sending side is shut
  bool tls_;
};

}  // namespace sy::proxy
