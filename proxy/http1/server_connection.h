#pragma once
// The client side of an HTTP/1 connection: the socket (plain or TLS), the request framing,
// keep-alive and pipelining (one exchange at a time, in order; pipelined requests wait in the
// input buffer), 100-continue, the tunnel after a 101, the head and idle timers, and the
// lingering close. Each request is handed to a fresh exchange (RequestHandler) made by the
// ExchangeFactory; the connection is that exchange's ResponseEncoder. It never decides a
// status: decode errors and timeouts go to the exchange, which answers with a LocalReply.
//
// Thread: worker-local. Made by create(); its `this` is libevent callback context, so it is
// neither copyable nor movable, and it is freed only through its Owner (deferred deletion).

#include <sys/socket.h>

#include <memory>
#include <string>

#include "config/snapshot.h"
#include "proxy/http/server_exchange.h"
#include "proxy/http1/http_codec.h"
#include "proxy/net/client_connection.h"
#include "proxy/net/lazy_timer.h"
#include "proxy/net/transport.h"
#include "proxy/net/worker_context.h"

namespace sy::proxy {

class ServerConnection final : public ClientConnection,
                               public ResponseEncoder,
                               private Transport::Handler,
                               private MessageDecoder::BodySink {
 public:
  // Bounds on what is buffered per direction: above kHighWater of output the producing side
  // stops reading until the output drains to kLowWater (libevent's le-proxy pattern).
  static constexpr size_t kHighWater = Transport::kReadHighWater;
  static constexpr size_t kLowWater = Transport::kWriteLowWater;
  // Lingering close (SPEC §10): after an answer sent while the client may still be sending,
  // what it sends is read and discarded for up to kLingerMs after the answer is out, and up to
  // kLingerBytes beyond the rest of the body its Content-Length announced (a client that
  // announced 20 MB may have most of them in flight, in socket buffers, when it sees the
  // answer); then the socket closes.
  static constexpr uint32_t kLingerMs = 2000;
  static constexpr uint64_t kLingerBytes = 1 << 20;
  // Draining: an idle keep-alive connection is closed once it has stayed idle this long.
  static constexpr uint32_t kDrainIdleMs = 1000;

  using Owner = ClientConnection::Owner;

  // Takes `fd` (accepted, non-blocking; closed when null is returned). With `tls`,
  // the connection starts with a TLS handshake (server side) and keeps `current` (the
  // snapshot that owns `tls`) alive. `current` is the worker's snapshot pointer, read for the
  // timeouts and limits of each new request; it must outlive the connection.
  static std::unique_ptr<ServerConnection> create(WorkerContext& worker, ExchangeFactory& factory,
                                                  Owner& owner,
                                                  const config::SnapshotConstSharedPtr& current,
                                                  UniqueFd fd, const sockaddr* peer,
                                                  const std::string& listener_address,
                                                  const config::ServerTls* tls);
  // Takes a stream another step accepted (and, for TLS, completed the handshake of: ALPN chose
  // HTTP/1.1 or nothing; or a plain stream that is not HTTP/2). What it already read waits in
  // its input until start(). `tls_snapshot`: kept alive with the connection (the one that owns
  // the ServerTls of the handshake), or null.
  static std::unique_ptr<ServerConnection> create(WorkerContext& worker, ExchangeFactory& factory,
                                                  Owner& owner,
                                                  const config::SnapshotConstSharedPtr& current,
                                                  std::unique_ptr<Transport> transport,
                                                  const sockaddr* peer,
                                                  const std::string& listener_address,
                                                  config::SnapshotConstSharedPtr tls_snapshot);
  // Serves what the transport's input already holds (after create() from a transport, once
  // the owner has linked the connection).
  void start();
  ~ServerConnection() override;
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;

  // Drain (or the listener went away): the response in progress says "Connection: close"
  // and the connection closes after it; an idle connection closes after kDrainIdleMs idle.
  void closeWhenIdle() override;
  const std::string& listenerAddress() const override { return listener_address_; }

  // ResponseEncoder.
  void encodeHead(const Head& head) override;
  void encodeBody(std::string_view data) override;
  void encodeEnd(const Headers& trailers) override;
  void encodeLocalReply(const LocalReply& reply) override;
  void encodeAbort() override;
  void encodeContinue() override;
  bool encoderBackpressured() const override;
  void resumeRequestBody() override;
  uint64_t bytesEncoded() const override { return msg_.bytes_out; }
  void flush() override;

 private:
  enum class State : uint8_t {
    Idle,        // between requests (no byte of the next one yet)
    Request,     // an exchange is in progress (head being read, or later)
    Discarding,  // the exchange answered; the empty rest of its request is skipped
    Tunnel,      // after a 101: raw bytes both ways through the exchange
    Closing,     // flushing the last bytes, then lingering or closed
    Lingering,   // write side shut; reading and discarding until EOF, kLingerMs or kLingerBytes
    Closed,
  };

  ServerConnection(WorkerContext& worker, ExchangeFactory& factory, Owner& owner,
                   const config::SnapshotConstSharedPtr& current, std::unique_ptr<Transport> t,
                   const sockaddr* peer);

  // Ends each of the connection's callbacks with flush().
  struct FlushOnExit;

  void onTransportRead() override;
  void onTransportWrite() override;
  void onTransportEvent(short events) override;
  void onBodyData(std::string_view data) override;
  static void timerCb(void* ctx) noexcept;
  void onTimer();

  void processInput();
  RequestHandler& exchange();  // the current exchange, made on first use
  void onHeadComplete();
  void onMessageComplete();
  void decodeError(ErrorKind kind);
  // The response ended (end, local reply or abort): the exchange is over once its request is.
  void responseDone(bool keep_alive);
  // The head is complete and no body follows it: what is left of the request is its end.
  bool restOfRequestEmpty() const;
  void finishExchange();
  // The client vanished (EOF, error, timeout) before the exchange ended.
  void clientGone();
  void pumpTunnel();
  void write(std::string_view data);
  void closeAfterFlush(bool linger);
  void closeNow();
  void armTimer(uint32_t ms) { timer_.setDeadline(LazyTimer::nowMs() + ms); }
  const config::ServerSettings& settings() const { return current_->server; }

  WorkerContext& worker_;
  ExchangeFactory& factory_;
  Owner& owner_;
  const config::SnapshotConstSharedPtr& current_;
  std::unique_ptr<Transport> client_;
  LazyTimer timer_;
  MessageDecoder decoder_{MessageDecoder::Kind::Request, *this};
  std::string listener_address_;
  config::SnapshotConstSharedPtr tls_snapshot_;  // TLS: owns the ServerTls the SNI callback uses
  ClientIp client_addr_;
  std::string client_ip_;  // client_addr_ as text
  std::unique_ptr<RequestHandler> exchange_;
  std::string scratch_;  // response heads being encoded (keeps its capacity)
  State state_ = State::Idle;
  uint64_t linger_budget_ = 0;  // Closing, Lingering: bytes still to discard before closing
  bool tls_;
  bool in_process_input_ = false;
  // The request in progress and its response: replaced as a whole at the first byte of each
  // request (never reset field by field).
  struct Message {
    uint64_t bytes_out = 0;         // response bytes encoded
    uint64_t body_seen = 0;         // request body bytes decoded so far
    bool head_complete = false;     // the head was decoded
    bool request_done = false;      // the whole request was decoded
    bool response_done = false;     // the response ended
    bool keep_alive = true;         // the connection survives this exchange
    bool http10 = false;            // the request is HTTP/1.0
    bool head_request = false;      // HEAD: a response has no body (RFC 9110 §9.3.2)
    bool response_chunked = false;  // the response body goes to the client chunked
    bool expect_continue = false;   // the client asked for 100 Continue
    bool continue_sent = false;
  };
  Message msg_;
  bool client_paused_ = false;  // reading stopped: the exchange's upstream is slow
  bool client_eof_ = false;
  bool close_when_idle_ = false;
  bool linger_ = false;  // Closing: linger once the output is out
};

}  // namespace sy::proxy
