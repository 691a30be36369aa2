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
// DATA received) reset the offending stream with PROTOCOL_ERROR; CONNECT is reset with
// PROTOCOL_ERROR too; a header list above max_header_list_bytes goes to the exchange as
// HeadTooLarge (431). Request bodies go upstream as HTTP/1.1: Content-Length when the client
// gave one, else chunked when the stream has a body. Flow control: a stream's window reopens
// (WINDOW_UPDATE) only for DATA its exchange took without backpressure; the connection window
// reopens at once, so one slow upstream never stalls the other streams.
//
// Thread: worker-local. Made by create(); its `this` is libevent and nghttp2 callback context,
// so it is neither copyable nor movable, and it is freed only through its Owner (deferred
// deletion). Streams and their exchanges are freed through deferred deletion as well.

#include <sys/socket.h>

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

  // Takes `transport`: a TLS stream whose handshake chose "h2", or a plain stream whose input
  // starts with kPreface (left in its input; start() reads it). `current` is the worker's
  // snapshot pointer (read for the timeouts and [server.http2] when the connection starts); it
  // must outlive the connection. `tls_snapshot`: kept alive with the connection, or null. Null
  // when nghttp2 cannot allocate.
  static std::unique_ptr<Http2Connection> create(WorkerContext& worker, ExchangeFactory& factory,
                                                 Owner& owner,
                                                 const config::SnapshotConstSharedPtr& current,
                                                 std::unique_ptr<Transport> transport,
                                                 const sockaddr* peer,
                                                 const std::string& listener_address,
                                                 config::SnapshotConstSharedPtr tls_snapshot);
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
  int onHeader(int32_t stream_id, std::string_view name, std::string_view value);
  int onFrameRecv(int32_t stream_id, uint8_t type, uint8_t flags, bool request_headers);
  int onDataChunk(int32_t stream_id, std::string_view data);
  int onFrameSend(int32_t stream_id, uint8_t type, uint8_t flags);
  int onStreamClose(int32_t stream_id, uint32_t error_code);

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
  EventPtr drain_event_;  // runs notifyDrained outside the exchanges' callbacks
  uint64_t max_header_list_bytes_ = 0;
  uint32_t header_ms_ = 0;
  uint32_t idle_ms_ = 0;
  int in_nghttp2_ = 0;         // depth of nghttp2 calls in progress (no re-entry)
  bool send_wanted_ = false;   // sendPending was asked for inside an nghttp2 call
  bool close_wanted_ = false;  // a fatal error inside an nghttp2 call: close after it
  bool closed_ = false;
  bool draining_ = false;
  bool tls_;
};

}  // namespace sy::proxy
