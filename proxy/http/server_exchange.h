#pragma once
// The two sides of one request as a server connection (HTTP/1 today, HTTP/2 next) and an
// exchange see each other (Envoy's RequestDecoder / ResponseEncoder pair). The connection
// owns the socket and the framing and decodes the request into RequestHandler calls; the
// exchange (proxy/exchange/) owns the request's lifecycle and answers through the
// ResponseEncoder the connection gave it. Declared here, below both, so that neither folder
// includes the other; server/ wires them together through an ExchangeFactory.
//
// Thread: worker-local. Calls in either direction may re-enter the other side (an encode
// from inside a decode call): neither side frees itself or the other inside a call; the
// connection frees a finished exchange through deferred deletion. A call that ends the
// response (encodeEnd, encodeLocalReply, encodeAbort) may start the next pipelined request's
// exchange before it returns, so it is the last thing an exchange does in that callback.

#include <cstdint>
#include <memory>
#include <string_view>

#include "common/deferred.h"
#include "proxy/http/client_ip.h"
#include "proxy/http/error.h"
#include "proxy/http/http_message.h"
#include "proxy/http/local_reply.h"

namespace sy::proxy {

// What the connection knows about the client, for every exchange on it.
struct ConnectionInfo {
  // The connection's address: the TCP peer, or the source its PROXY protocol header named. The
  // request's client may differ (trusted_proxies): the exchange works it out per request.
  std::string_view client_ip;  // as text (appended to X-Forwarded-For)
  const ClientIp* client_addr = nullptr;
  bool tls = false;    // X-Forwarded-Proto https
  bool http2 = false;  // an HTTP/2 stream (else HTTP/1.x)
};

// What the connection learned from the request head besides the head itself.
struct RequestFraming {
  BodyFraming framing = BodyFraming::None;  // None, ContentLength or Chunked
  uint64_t content_length = 0;
  bool upgrade = false;          // an Upgrade request (a 101 turns the rest into a tunnel)
  bool expect_continue = false;  // "Expect: 100-continue": the connection sends 100 on demand
};

// The response side, implemented by the server connection.
class ResponseEncoder {
 public:
  virtual ~ResponseEncoder() = default;

  // The upstream's response head, to be rewritten for the client. `framing` says how the
  // upstream delimits the body (None, ContentLength, Chunked, UntilClose); `upgrade`: an
  // accepted 101, after which encodeBody carries raw tunnel bytes both ways until the end.
  struct Head {
    const ResponseHead& head;
    BodyFraming framing;
    uint64_t content_length;
    std::string_view variant_header;  // "" = not added
    std::string_view variant;
    std::string_view set_cookie;  // "name=value" for assign_cookie, or ""
    bool upgrade;
  };
  virtual void encodeHead(const Head& head) = 0;
  virtual void encodeBody(std::string_view data) = 0;
  // The response is complete. `trailers`: the upstream's trailer fields as received (empty for
  // none), valid during the call only; the encoder passes on those forwardableTrailer() allows
  // where the client's framing has room for them (HTTP/2: a trailing HEADERS; HTTP/1.1: the
  // trailer section of a chunked body) and drops them elsewhere.
  virtual void encodeEnd(const Headers& trailers) = 0;
  // An answer of the proxy's own instead of (never after) a response head.
  virtual void encodeLocalReply(const LocalReply& reply) = 0;
  // Too late for a status: ends the response cut short (HTTP/1: the connection closes without
  // the rest, so the client sees the truncation).
  virtual void encodeAbort() = 0;
  // "100 Continue", if the client asked for it; at most once.
  virtual void encodeContinue() = 0;
  // The client reads slower than the response comes: the exchange stops reading the upstream
  // until RequestHandler::onEncoderDrained.
  virtual bool encoderBackpressured() const = 0;
  // The exchange's upstream drained what the request body filled: reading the client resumes.
  virtual void resumeRequestBody() = 0;
  // Response bytes (head, body and trailers) handed to the connection so far, for the access
  // log.
  virtual uint64_t bytesEncoded() const = 0;
  // Sends what was encoded (one write for everything a callback encoded), after flushing the
  // connection's current exchange (RequestHandler::flush). The exchange calls it at the end
  // of each of its own callbacks; harmless on a closed connection.
  virtual void flush() = 0;
};

// The request side, implemented by the exchange.
class RequestHandler : public Deferrable {
 public:
  // A complete head. `head` stays valid and unchanged until the exchange ends.
  virtual void decodeHead(RequestHead& head, const RequestFraming& framing) = 0;
  virtual void decodeBody(std::string_view data) = 0;
  // The request is complete. `trailers`: its trailer fields as received (empty for none),
  // valid during the call only. They never change routing, metrics or the access log.
  virtual void decodeEnd(const Headers& trailers) = 0;
  // The request could not be decoded or is not acceptable on this connection (malformed,
  // too large, head timeout, a version we do not speak): the exchange answers with the
  // status of SPEC §4 and ends. `head`: the decoded head, or null when it is incomplete.
  virtual void decodeError(const ProxyError& error, RequestHead* head) = 0;
  // The client closed, reset or timed out before the exchange ended (also with only part of a
  // head, then the exchange has had no other call); nothing more can be sent.
  virtual void onClientGone() = 0;
  // Whether the request body should wait (the upstream reads slower than the client sends).
  virtual bool bodyBackpressured() const = 0;
  // The client's output drained after encoderBackpressured(): upstream reading resumes.
  virtual void onEncoderDrained() = 0;
  // Sends what the decode calls queued for the upstream (one write per callback).
  virtual void flush() = 0;
};

// Makes the exchange for the next request of a connection.
class ExchangeFactory {
 public:
  virtual ~ExchangeFactory() = default;
  virtual std::unique_ptr<RequestHandler> newExchange(ResponseEncoder& encoder,
                                                      const ConnectionInfo& connection) = 0;
};

}  // namespace sy::proxy
