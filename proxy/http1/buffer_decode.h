#pragma once
// Feeding a MessageDecoder from a libevent input buffer: the first contiguous piece is
// decoded in place (no copy) and what the decoder used is drained.

#include <event2/buffer.h>

#include "proxy/http1/http_codec.h"

namespace sy::proxy {

// NeedMore with consumed = 0 when `in` is empty.
inline MessageDecoder::Event decodeFrom(MessageDecoder& decoder, evbuffer* in, size_t& consumed) {
  consumed = 0;
  evbuffer_iovec vec;
  if (evbuffer_peek(in, -1, nullptr, &vec, 1) < 1 || vec.iov_len == 0) {
    return MessageDecoder::Event::NeedMore;  // (an empty buffer may still hold an empty chain)
  }
  const MessageDecoder::Event ev =
      decoder.decode(static_cast<const char*>(vec.iov_base), vec.iov_len, consumed);
  evbuffer_drain(in, consumed);
  return ev;
}

}  // namespace sy::proxy
