#include <doctest.h>

#include <string>
#include <vector>

#include "proxy/http1/http_codec.h"

using sy::proxy::BodyFraming;
using sy::proxy::MessageDecoder;
using Event = MessageDecoder::Event;

namespace {

struct Collect : MessageDecoder::BodySink {
  std::string body;
  void onBodyData(std::string_view data) override { body.append(data); }
};

// Feeds `input` in pieces of `step` bytes, recording every event.
std::vector<Event> feed(MessageDecoder& d, std::string_view input, size_t step = 1 << 20) {
  std::vector<Event> events;
  size_t pos = 0;
  std::string pending;
  while (pos < input.size() || !pending.empty()) {
    if (pos < input.size()) {
      size_t n = std::min(step, input.size() - pos);
      pending.append(input.substr(pos, n));
      pos += n;
    }
    while (!pending.empty()) {
      size_t consumed = 0;
      Event ev = d.decode(pending.data(), pending.size(), consumed);
      pending.erase(0, consumed);
      if (ev != Event::NeedMore) events.push_back(ev);
      if (ev == Event::Error) return events;
      if (ev == Event::NeedMore) break;
    }
    if (pos >= input.size() && !pending.empty()) break;
  }
  return events;
}

}  // namespace

TEST_CASE("request head, then body, then completion are separate events") {
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  std::string req =
      "POST /a/b?x=1 HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 5\r\n"
      "X-Multi: one\r\n\r\nhello";
  for (size_t step : {size_t{1}, size_t{3}, req.size()}) {
    CAPTURE(step);
    sink.body.clear();
    d.reset();
    auto events = feed(d, req, step);
    REQUIRE(events.size() == 2);
    CHECK(events[0] == Event::HeadComplete);
    CHECK(events[1] == Event::MessageComplete);
    CHECK(d.request().method == "POST");
    CHECK(d.request().target == "/a/b?x=1");
    CHECK(d.request().path() == "/a/b");
    REQUIRE(d.request().headers.size() == 3);
    CHECK(d.request().headers[0].name == "Host");
    CHECK(d.request().headers[0].value == "shop.example.com");
    CHECK(d.framing() == BodyFraming::ContentLength);
    CHECK(d.contentLength() == 5);
    CHECK(sink.body == "hello");
    CHECK(d.keepAlive());
  }
}

TEST_CASE("chunked request body is decoded") {
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  auto events = feed(d,
                     "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
                     2);
  REQUIRE(events.size() == 2);
  CHECK(d.framing() == BodyFraming::Chunked);
  CHECK(sink.body == "abcdefg");
}

TEST_CASE("pipelined requests stop after each message") {
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  std::string two = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
  size_t consumed = 0;
  CHECK(d.decode(two.data(), two.size(), consumed) == Event::HeadComplete);
  CHECK(d.request().target == "/1");
  size_t total = consumed;
  CHECK(d.decode(two.data() + total, two.size() - total, consumed) == Event::MessageComplete);
  total += consumed;
  CHECK(two.substr(total).rfind("GET /2", 0) == 0);  // the second request is left untouched
  CHECK(d.idle());
  CHECK(d.decode(two.data() + total, two.size() - total, consumed) == Event::HeadComplete);
  CHECK(d.request().target == "/2");
  CHECK(d.request().headers.size() == 1);  // the first request's headers are gone
}

TEST_CASE("malformed requests are errors") {
  for (std::string bad :
       {"GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nHost h\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}) {
    CAPTURE(bad);
    Collect sink;
    MessageDecoder d(MessageDecoder::Kind::Request, sink);
    auto events = feed(d, bad);
    REQUIRE(!events.empty());
    CHECK(events.back() == Event::Error);
    CHECK(!d.headTooLarge());
  }
}

TEST_CASE("a head over the limit is HeadTooLarge") {
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  d.setMaxHeadBytes(1024);
  std::string req = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n";
  auto events = feed(d, req, 100);
  REQUIRE(!events.empty());
  CHECK(events.back() == Event::Error);
  CHECK(d.headTooLarge());
}

TEST_CASE("response framings") {
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Response, sink);
  SUBCASE("content-length") {
    auto ev = feed(d, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
    REQUIRE(ev.size() == 2);
    CHECK(d.response().status == 200);
    CHECK(d.response().reason == "OK");
    CHECK(sink.body == "abc");
  }
  SUBCASE("close-delimited completes at EOF") {
    auto ev = feed(d, "HTTP/1.1 200 OK\r\n\r\nabcdef");
    REQUIRE(ev.size() == 1);
    CHECK(d.framing() == BodyFraming::UntilClose);
    CHECK(d.finish() == Event::MessageComplete);
    CHECK(sink.body == "abcdef");
    CHECK(!d.keepAlive());
  }
  SUBCASE("truncated content-length body is an error at EOF") {
    auto ev = feed(d, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    REQUIRE(ev.size() == 1);
    CHECK(d.finish() == Event::Error);
  }
  SUBCASE("204 and 304 have no body") {
    for (const char* r : {"HTTP/1.1 204 No Content\r\n\r\n",
                          "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"}) {
      d.reset();
      auto ev = feed(d, r);
      REQUIRE(ev.size() == 2);
      CHECK(d.framing() == BodyFraming::None);
    }
  }
  SUBCASE("a response to HEAD has no body whatever its length says") {
    d.setHeadRequest(true);
    auto ev = feed(d, "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
    REQUIRE(ev.size() == 2);
    CHECK(ev[1] == Event::MessageComplete);
    CHECK(sink.body.empty());
  }
  SUBCASE("100 Continue is a message of its own") {
    auto ev = feed(d, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    REQUIRE(ev.size() == 4);
    CHECK(d.response().status == 200);
    CHECK(sink.body == "x");
  }
}

TEST_CASE("upgrade request leaves the tunnelled bytes unconsumed") {
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  std::string req =
      "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW";
  size_t consumed = 0;
  CHECK(d.decode(req.data(), req.size(), consumed) == Event::HeadComplete);
  CHECK(d.upgrade());
  size_t total = consumed;
  CHECK(d.decode(req.data() + total, req.size() - total, consumed) == Event::MessageComplete);
  total += consumed;
  CHECK(req.substr(total) == "RAW");
}

TEST_CASE("a 101 response ends after its head; the tunnelled bytes stay unconsumed") {
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Response, sink);
  std::string resp =
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nWS";
  size_t consumed = 0;
  CHECK(d.decode(resp.data(), resp.size(), consumed) == Event::HeadComplete);
  size_t total = consumed;
  // The head is complete only with its final LF; the caller must decode once more before it
  // treats the rest as tunnel data (a regression: the LF leaked into the tunnel).
  CHECK(d.decode(resp.data() + total, resp.size() - total, consumed) == Event::MessageComplete);
  total += consumed;
  CHECK(resp.substr(total) == "WS");
}

TEST_CASE("chunk data must be followed by CRLF (http-parser alone does not check)") {
  for (auto kind : {MessageDecoder::Kind::Request, MessageDecoder::Kind::Response}) {
    for (size_t step : {size_t{1}, size_t{7}, size_t{1000}}) {
      CAPTURE(step);
      Collect sink;
      MessageDecoder d(kind, sink);
      std::string head = kind == MessageDecoder::Kind::Request
                             ? "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             : "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
      auto events = feed(d, head + "5\r\nhelloXX5\r\nhello\r\n0\r\n\r\n", step);
      REQUIRE(!events.empty());
      CHECK(events.back() == Event::Error);
      Collect ok_sink;
      MessageDecoder ok(kind, ok_sink);
      auto good = feed(ok, head + "5\r\nhello\r\n5\r\nhello\r\n0\r\n\r\n", step);
      REQUIRE(good.size() == 2);
      CHECK(good.back() == Event::MessageComplete);
      CHECK(ok_sink.body == "hellohello");
    }
  }
}

TEST_CASE("an empty buffer is not the end of the stream") {
  // http-parser reads len 0 as EOF, which completes a close-delimited body; only finish() may.
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Response, sink);
  auto ev = feed(d, "HTTP/1.1 200 OK\r\n\r\npartial");
  REQUIRE(ev.size() == 1);
  size_t consumed = 1;
  CHECK(d.decode("", 0, consumed) == Event::NeedMore);
  CHECK(consumed == 0);
  CHECK(d.finish() == Event::MessageComplete);
}

TEST_CASE("the trailer section of a chunked message is captured apart from the head") {
  // (Before trailers were forwarded, their fields were appended to the head's.)
  for (auto kind : {MessageDecoder::Kind::Request, MessageDecoder::Kind::Response}) {
    for (size_t step : {size_t{1}, size_t{5}, size_t{1000}}) {
      CAPTURE(step);
      Collect sink;
      MessageDecoder d(kind, sink);
      d.setMaxHeadBytes(4096);
      std::string head = kind == MessageDecoder::Kind::Request
                             ? "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             : "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
      auto events =
          feed(d, head + "3\r\nabc\r\n0\r\nX-Checksum: 42\r\nGrpc-Status: 0\r\n\r\n", step);
      REQUIRE(events.size() == 2);
      CHECK(events.back() == Event::MessageComplete);
      CHECK(sink.body == "abc");
      const auto& head_fields =
          kind == MessageDecoder::Kind::Request ? d.request().headers : d.response().headers;
      CHECK(head_fields.size() == (kind == MessageDecoder::Kind::Request ? 2 : 1));
      REQUIRE(d.trailers().size() == 2);
      CHECK(d.trailers()[0].name == "X-Checksum");
      CHECK(d.trailers()[0].value == "42");
      CHECK(d.trailers()[1].name == "Grpc-Status");
      CHECK(d.trailers()[1].value == "0");
    }
  }
}

TEST_CASE("the next message starts without the previous one's trailers") {
  Collect sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  auto events = feed(d,
                     "POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "0\r\nX-T: 1\r\n\r\n");
  REQUIRE(events.size() == 2);
  CHECK(d.trailers().size() == 1);
  events = feed(d,
                "POST /2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                "1\r\nx\r\n0\r\n\r\n");
  REQUIRE(events.size() == 2);
  CHECK(d.request().target == "/2");
  CHECK(d.request().headers.size() == 2);
  CHECK(d.trailers().empty());
}

TEST_CASE("a trailer section over the limit is HeadTooLarge; it has a budget of its own") {
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n";
  const std::string filler = "X-Pad: " + std::string(600, 'p') + "\r\n";
  for (size_t step : {size_t{7}, size_t{100000}}) {
    CAPTURE(step);
    Collect sink;
    MessageDecoder d(MessageDecoder::Kind::Request, sink);
    d.setMaxHeadBytes(1024);
    // Head and trailers of 600-odd bytes each: each within the limit, together beyond it.
    auto events = feed(d, head + filler + "\r\n1\r\nx\r\n0\r\n" + filler + "\r\n", step);
    REQUIRE(events.size() == 2);
    CHECK(events.back() == Event::MessageComplete);
    CHECK(d.trailers().size() == 1);

    Collect big_sink;
    MessageDecoder big(MessageDecoder::Kind::Request, big_sink);
    big.setMaxHeadBytes(1024);
    std::string trailers;
    for (int i = 0; i < 100; ++i) trailers += "X-T" + std::to_string(i) + ": " + filler;
    events = feed(big, head + "\r\n1\r\nx\r\n0\r\n" + trailers + "\r\n", step);
    REQUIRE(events.size() == 2);
    CHECK(events[0] == Event::HeadComplete);
    CHECK(events[1] == Event::Error);
    CHECK(big.headTooLarge());
    CHECK(std::string(big.errorDescription()) == "trailer section too large");
  }
}

TEST_CASE("trailer fields are checked as the head's are") {
  for (std::string bad : {"X-Bad\x01: v\r\n", "X-T: \x01v\r\n", "X-T: a\x7f\r\n"}) {
    CAPTURE(bad);
    Collect sink;
    MessageDecoder d(MessageDecoder::Kind::Request, sink);
    auto events = feed(d,
                       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "1\r\nx\r\n0\r\n" +
                           bad + "\r\n");
    REQUIRE(!events.empty());
    CHECK(events.back() == Event::Error);
    CHECK(!d.headTooLarge());
  }
}

TEST_CASE("framing fields in a trailer section do not leak into the next message") {
  // http-parser matches Content-Length and Transfer-Encoding in trailer fields as in a head.
  for (std::string field :
       {"Transfer-Encoding: chunked", "Transfer-Encodings: x", "Content-Length: 5"}) {
    CAPTURE(field);
    Collect sink;
    MessageDecoder d(MessageDecoder::Kind::Request, sink);
    auto events = feed(d,
                       "POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "0\r\n" +
                           field + "\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    REQUIRE(events.size() == 4);
    CHECK(events[3] == Event::MessageComplete);
    CHECK(d.request().target == "/2");
    CHECK(d.framing() == BodyFraming::None);
  }
}
