#include "proxy/http1/client.h"

#include "proxy/http1/buffer_decode.h"

namespace sy::proxy {
namespace {

constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace

void Http1Client::begin(Callbacks& callbacks, const RequestHead& head,
                        const RequestRewrite& rewrite, uint64_t max_head_bytes) {
  callbacks_ = &callbacks;
  queued_ = body_bytes_ = 0;
  chunked_ = rewrite.framing == BodyFraming::Chunked;
  request_done_ = interim_ = response_bytes_ = tunnel_ = false;
  decoder_.reset();
  decoder_.setHeadRequest(head.method == "HEAD");
  decoder_.setMaxHeadBytes(max_head_bytes);
  max_head_bytes_ = max_head_bytes;
  head_.clear();
  appendUpstreamRequestHead(head_, head, rewrite);
  queue(head_);
}

bool Http1Client::replayable() const {
  const uint64_t written = queued_ - evbuffer_get_length(transport_.output());
  return written <= head_.size();
}

void Http1Client::replayFrom(Http1Client& failed, const RequestHead& head,
                             const RequestRewrite& rewrite) {
  evbuffer* old = failed.transport_.output();
  const uint64_t written = failed.queued_ - evbuffer_get_length(old);
  // What is left of the old head goes; the body behind it moves to this connection.
  evbuffer_drain(old, failed.head_.size() - written);
  begin(*failed.callbacks_, head, rewrite, failed.max_head_bytes_);
  body_bytes_ = failed.body_bytes_;
  request_done_ = failed.request_done_;
  queued_ += evbuffer_get_length(old);
  evbuffer_add_buffer(transport_.output(), old);
  failed.detach();
}

void Http1Client::queue(std::string_view data) {
  queued_ += data.size();
  evbuffer_add(transport_.output(), data.data(), data.size());
}

void Http1Client::sendBody(std::string_view data) {
  if (data.empty()) return;
  body_bytes_ += data.size();
  if (chunked_ && !tunnel_) {
    evbuffer* out = transport_.output();
    const size_t before = evbuffer_get_length(out);
    evbuffer_add_printf(out, "%zx\r\n", data.size());
    evbuffer_add(out, data.data(), data.size());
    evbuffer_add(out, "\r\n", 2);
    queued_ += evbuffer_get_length(out) - before;
  } else {
    queue(data);
  }
}

void Http1Client::endRequest(const Headers& trailers) {
  request_done_ = true;
  if (!chunked_) return;
  if (trailers.empty()) {
    queue(kLastChunk);
    return;
  }
  std::string last_chunk;
  appendLastChunk(last_chunk, trailers);
  queue(last_chunk);
}

Http1Client::Result Http1Client::step() {
  size_t consumed = 0;
  switch (decodeFrom(decoder_, transport_.input(), consumed)) {
    case MessageDecoder::Event::NeedMore:
      return consumed == 0 ? Result::NeedMore : Result::Paused;  // Paused: "go on" (see .h)
    case MessageDecoder::Event::HeadComplete: {
      const ResponseHead& resp = decoder_.response();
      if (resp.status / 100 == 1 && resp.status != 101) {
        interim_ = true;  // 100 Continue / 103 Early Hints: the final response follows
        return Result::Paused;
      }
      callbacks_->onResponseHead(resp, decoder_.framing(), decoder_.contentLength());
      return Result::Paused;
    }
    case MessageDecoder::Event::MessageComplete:
      if (interim_) {
        interim_ = false;
        return Result::Paused;
      }
      return Result::Complete;
    case MessageDecoder::Event::Error: return Result::Error;
  }
  return Result::Error;
}

Http1Client::Result Http1Client::readEof() {
  if (tunnel_) return Result::Complete;
  return decoder_.finish() == MessageDecoder::Event::MessageComplete ? Result::Complete
                                                                     : Result::Error;
}

bool Http1Client::reusable() const {
  return request_done_ && !tunnel_ && decoder_.keepAlive() &&
         decoder_.framing() != BodyFraming::UntilClose &&
         evbuffer_get_length(transport_.input()) == 0 &&
         evbuffer_get_length(transport_.output()) == 0;
}

void Http1Client::onBodyData(std::string_view data) {
  if (!interim_ && callbacks_ != nullptr) callbacks_->onResponseBody(data);
}

}  // namespace sy::proxy
