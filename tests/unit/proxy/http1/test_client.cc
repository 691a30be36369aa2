// Http1Client: the request as the upstream receives it, the response as the exchange and the
// shadow see it, and what a retry needs (responseStarted, replayable, reusable). The transport
// is a pair of evbuffers: "written" is whatever the test drains from the output.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "proxy/http1/client.h"

using namespace sy::proxy;

namespace {

class FakeTransport final : public Transport {
 public:
  FakeTransport() : in_buf_(evbuffer_new()), out_buf_(evbuffer_new()) {
    in_ = in_buf_.get();
    out_ = out_buf_.get();
  }
  void setHandler(Handler*) override {}
  void enableRead() override {}
  void disableRead() override {}
  bool reading() const override { return true; }
  void flush() override {}
  void setTimeouts(uint32_t, uint32_t) override {}
  void shutdownWrite() override {}
  evutil_socket_t fd() const override { return -1; }
  bool tls() const override { return false; }
  std::string failure() const override { return {}; }

  // The upstream receives `n` bytes (all when n is -1).
  std::string written(long n = -1) {
    const size_t len = n < 0 ? evbuffer_get_length(out_) : static_cast<size_t>(n);
    std::string s(len, '\0');
    evbuffer_remove(out_, s.data(), len);
    return s;
  }
  void arrive(std::string_view bytes) { evbuffer_add(in_, bytes.data(), bytes.size()); }

 private:
  EvBufferPtr in_buf_;
  EvBufferPtr out_buf_;
};

struct Recorder final : Http1Client::Callbacks {
  std::vector<unsigned> heads;
  std::string body;
  BodyFraming framing = BodyFraming::None;
  void onResponseHead(const ResponseHead& head, BodyFraming f, uint64_t) override {
    heads.push_back(head.status);
    framing = f;
  }
  void onResponseBody(std::string_view data) override { body.append(data); }
};

RequestHead request(std::string method, std::string target) {
  RequestHead h;
  h.method = std::move(method);
  h.target = std::move(target);
  h.headers = {{"Host", "app.test"}};
  return h;
}

Http1Client::Result read(Http1Client& c) {
  return c.readResponse([] { return false; });
}

}  // namespace

TEST_CASE("a GET goes out rewritten and its response comes back whole") {
  FakeTransport t;
  Recorder r;
  Http1Client c(t);
  RequestRewrite rw;
  rw.client_ip = "192.0.2.7";
  c.begin(r, request("GET", "/a"), rw, 65536);
  c.endRequest({});
  const std::string sent = t.written();
  CHECK(sent.rfind("GET /a HTTP/1.1\r\n", 0) == 0);
  CHECK(sent.find("X-Forwarded-For: 192.0.2.7\r\n") != std::string::npos);
  CHECK_FALSE(c.responseStarted());
  t.arrive("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel");
  CHECK(read(c) == Http1Client::Result::NeedMore);
  CHECK(c.responseStarted());
  t.arrive("lo");
  CHECK(read(c) == Http1Client::Result::Complete);
  CHECK(r.heads == std::vector<unsigned>{200});
  CHECK(r.body == "hello");
  CHECK(r.framing == BodyFraming::ContentLength);
  CHECK(c.reusable());
}

TEST_CASE("interim 1xx responses are skipped; a 101 is reported") {
  FakeTransport t;
  Recorder r;
  Http1Client c(t);
  c.begin(r, request("GET", "/"), RequestRewrite{}, 65536);
  c.endRequest({});
  t.arrive(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
      "HTTP/1.1 204 No Content\r\n\r\n");
  CHECK(read(c) == Http1Client::Result::Complete);
  CHECK(r.heads == std::vector<unsigned>{204});

  FakeTransport t2;
  Recorder r2;
  Http1Client up(t2);
  RequestRewrite rw;
  rw.upgrade = true;
  up.begin(r2, request("GET", "/ws"), rw, 65536);
  up.endRequest({});
  t2.arrive(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
      "raw");
  CHECK(read(up) == Http1Client::Result::Complete);
  CHECK(r2.heads == std::vector<unsigned>{101});
  up.startTunnel();
  CHECK(read(up) == Http1Client::Result::NeedMore);
  CHECK(r2.body == "raw");
  CHECK_FALSE(up.reusable());
}

TEST_CASE("a chunked body goes out chunked and ends with the last chunk") {
  FakeTransport t;
  Recorder r;
  Http1Client c(t);
  RequestRewrite rw;
  rw.framing = BodyFraming::Chunked;
  c.begin(r, request("POST", "/up"), rw, 65536);
  t.written();  // the head
  c.sendBody("abc");
  c.endRequest({});
  CHECK(t.written() == "3\r\nabc\r\n0\r\n\r\n");
}

TEST_CASE("replayable while nothing of the body has left; the replay carries the body") {
  FakeTransport first;
  Recorder r;
  Http1Client c(first);
  RequestRewrite rw;
  rw.framing = BodyFraming::ContentLength;
  rw.content_length = 4;
  const RequestHead head = request("POST", "/p");
  c.begin(r, head, rw, 65536);
  c.sendBody("bo");
  CHECK(c.replayable());
  first.written(10);  // part of the head left
  CHECK(c.replayable());

  FakeTransport second;
  Http1Client fresh(second);
  fresh.replayFrom(c, head, rw);
  fresh.sendBody("dy");
  fresh.endRequest({});
  const std::string sent = second.written();
  CHECK(sent.rfind("POST /p HTTP/1.1\r\n", 0) == 0);
  CHECK(sent.size() > 4);
  CHECK(sent.substr(sent.size() - 4) == "body");
  CHECK(sent.find("\r\n\r\nbody") != std::string::npos);

  // Once a body byte has left, the request cannot be replayed.
  FakeTransport third;
  Http1Client d(third);
  d.begin(r, head, rw, 65536);
  d.sendBody("bo");
  third.written();  // head and body left
  CHECK_FALSE(d.replayable());
}

TEST_CASE("not reusable: close-delimited, Connection: close, extra bytes, request not done") {
  auto after = [](std::string_view response, bool end_request) {
    FakeTransport t;
    Recorder r;
    Http1Client c(t);
    c.begin(r, request("GET", "/"), RequestRewrite{}, 65536);
    if (end_request) c.endRequest({});
    t.written();
    t.arrive(response);
    Http1Client::Result res = read(c);
    if (res == Http1Client::Result::NeedMore) res = c.readEof();
    CHECK(res == Http1Client::Result::Complete);
    return c.reusable();
  };
  CHECK(after("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true));
  CHECK_FALSE(after("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false));
  CHECK_FALSE(after("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", true));
  CHECK_FALSE(after("HTTP/1.1 200 OK\r\n\r\nuntil close", true));
  CHECK_FALSE(after("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1", true));
}

TEST_CASE("a truncated or malformed response is an error") {
  FakeTransport t;
  Recorder r;
  Http1Client c(t);
  c.begin(r, request("GET", "/"), RequestRewrite{}, 65536);
  c.endRequest({});
  t.arrive("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
  CHECK(read(c) == Http1Client::Result::NeedMore);
  CHECK(c.readEof() == Http1Client::Result::Error);

  FakeTransport t2;
  Http1Client d(t2);
  d.begin(r, request("GET", "/"), RequestRewrite{}, 65536);
  t2.arrive("HTTP/2.0 200 OK\r\n\r\n");
  CHECK(read(d) == Http1Client::Result::Error);
}

TEST_CASE("request trailers end a chunked body, filtered; a Content-Length body drops them") {
  const Headers trailers = {{"X-Checksum", "42"},    {"Content-Length", "9"}, {"Host", "evil"},
                            {"Connection", "close"}, {"TE", "trailers"},      {"Trailer", "x"},
                            {"Grpc-Status", "0"}};
  FakeTransport t;
  Recorder r;
  Http1Client c(t);
  RequestRewrite rw;
  rw.framing = BodyFraming::Chunked;
  c.begin(r, request("POST", "/up"), rw, 65536);
  t.written();  // the head
  c.sendBody("abc");
  c.endRequest(trailers);
  CHECK(t.written() == "3\r\nabc\r\n0\r\nX-Checksum: 42\r\nGrpc-Status: 0\r\n\r\n");

  FakeTransport t2;
  Http1Client d(t2);
  rw.framing = BodyFraming::ContentLength;
  rw.content_length = 3;
  d.begin(r, request("POST", "/up"), rw, 65536);
  t2.written();
  d.sendBody("abc");
  d.endRequest(trailers);
  CHECK(t2.written() == "abc");
}

TEST_CASE("the response's trailers are there once it is complete") {
  FakeTransport t;
  Recorder r;
  Http1Client c(t);
  c.begin(r, request("GET", "/"), RequestRewrite{}, 65536);
  c.endRequest({});
  t.written();
  t.arrive("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 7\r\n\r\n");
  CHECK(read(c) == Http1Client::Result::Complete);
  CHECK(r.body == "ok");
  REQUIRE(c.trailers().size() == 1);
  CHECK(c.trailers()[0].name == "X-Sum");
  CHECK(c.trailers()[0].value == "7");
  CHECK(c.response().headers.size() == 1);
  CHECK(c.reusable());
}
