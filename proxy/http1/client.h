#pragma once
// The HTTP/1 client side of one upstream connection: for each request on it, encodes the
// request (the head rewritten, the body in the framing the head announced), decodes the
// response and hands it to the request's Callbacks. The primary exchange and the shadow copies
// both use it, so an upstream response is parsed in one place. It lives as long as its
// connection, so a keep-alive connection's decoder and head buffer keep their capacity from
// one request to the next (no allocation per request once warm).
//
// It also knows what a retry needs: whether any response byte arrived, and whether the
// request can still be replayed on another connection (nothing of its body has left).
//
// Thread: worker-local.

#include <cstdint>
#include <string_view>

#include "proxy/http/http_message.h"
#include "proxy/http/rewrite.h"
#include "proxy/http1/http_codec.h"
#include "proxy/net/transport.h"

namespace sy::proxy {

class Http1Client final : private MessageDecoder::BodySink {
 public:
  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    // A final response head (interim 1xx responses other than 101 are skipped). `framing`
    // says how the upstream delimits the body.
    virtual void onResponseHead(const ResponseHead& head, BodyFraming framing,
                                uint64_t content_length) = 0;
    // Response body bytes (chunk framing removed), or raw bytes after startTunnel().
    virtual void onResponseBody(std::string_view data) = 0;
  };

  enum class Result : uint8_t {
    NeedMore,  // all input decoded; more to come
    Paused,    // the caller asked to stop (backpressure); input kept
    Complete,  // the response (for a 101: its head) is complete
    Error,     // malformed response; errorDescription() says why
  };

  explicit Http1Client(Transport& transport) : transport_(transport) {}
  Http1Client(const Http1Client&) = delete;
  Http1Client& operator=(const Http1Client&) = delete;

  // Starts a request whose response goes to `callbacks`: the head is queued at once (sent by
  // the transport's flush, or when its connect completes).
  void begin(Callbacks& callbacks, const RequestHead& head, const RequestRewrite& rewrite,
             uint64_t max_head_bytes);
  // Takes over the request of `failed` (another connection's client, which failed): a new head
  // (the rewrite may name another variant) and the body queued there that never left. Only
  // when failed.replayable().
  void replayFrom(Http1Client& failed, const RequestHead& head, const RequestRewrite& rewrite);
  void sendBody(std::string_view data);
  // The request body is complete. A chunked body ends with the forwardable fields of
  // `trailers` (forwardableTrailer) as its trailer section; any other body has none in
  // HTTP/1.1, so there they are dropped (RFC 9110 §6.5.1 lets a recipient discard trailers).
  void endRequest(const Headers& trailers);
  // After a 101: from now on bytes go both ways unframed.
  void startTunnel() { tunnel_ = true; }
  bool tunnel() const { return tunnel_; }

  // Decodes what the transport's input holds. `paused` is asked before each step.
  template <class Paused>
  Result readResponse(Paused&& paused);
  // The upstream closed: completes a close-delimited body (Complete) or reports a truncated
  // response (Error).
  Result readEof();

  // Some response byte arrived.
  bool responseStarted() const { return response_bytes_; }
  // Nothing of the request body has left: the request can be replayed elsewhere.
  bool replayable() const;
  // The connection can serve another request: the request went out whole, the response was
  // length-delimited, said keep-alive and nothing followed it.
  bool reusable() const;
  uint64_t bodyBytesSent() const { return body_bytes_; }
  const ResponseHead& response() const { return decoder_.response(); }
  // The response's trailer fields as received (after Complete; empty for none). Valid until
  // the connection decodes again, so also while it waits idle in its pool.
  const Headers& trailers() const { return decoder_.trailers(); }
  const char* errorDescription() const { return decoder_.errorDescription(); }
  // The request's owner is done with it (the connection goes back to its pool or closes): no
  // more callbacks, also from a readResponse() in progress.
  void detach() { callbacks_ = nullptr; }

 private:
  void onBodyData(std::string_view data) override;
  // One decode step. Returns Paused for "progress made, go on", NeedMore when the input
  // yielded nothing, else the final outcome.
  Result step();
  void queue(std::string_view data);

  Transport& transport_;
  Callbacks* callbacks_ = nullptr;  // the current request's; null between requests
  MessageDecoder decoder_{MessageDecoder::Kind::Response, *this};
  std::string head_;     // the encoded request head (kept for a replay's bookkeeping)
  uint64_t queued_ = 0;  // bytes queued on transport_ for this request (head + body)
  uint64_t body_bytes_ = 0;
  uint64_t max_head_bytes_ = 0;
  bool chunked_ = false;  // the body goes upstream chunked
  bool request_done_ = false;
  bool interim_ = false;  // a 1xx (not 101) is being skipped
  bool response_bytes_ = false;
  bool tunnel_ = false;
};

template <class Paused>
Http1Client::Result Http1Client::readResponse(Paused&& paused) {
  // A callback may end the request and detach(): checked before every step.
  evbuffer* in = transport_.input();
  while (callbacks_ != nullptr && evbuffer_get_length(in) > 0) {
    if (paused()) return Result::Paused;
    response_bytes_ = true;
    if (tunnel_) {
      evbuffer_iovec vec;
      if (evbuffer_peek(in, -1, nullptr, &vec, 1) < 1) break;
      const size_t n = vec.iov_len;
      callbacks_->onResponseBody({static_cast<const char*>(vec.iov_base), n});
      evbuffer_drain(in, n);
      continue;
    }
    const Result r = step();
    if (r == Result::NeedMore) break;
    if (r != Result::Paused) return r;
  }
  return Result::NeedMore;
}

}  // namespace sy::proxy
