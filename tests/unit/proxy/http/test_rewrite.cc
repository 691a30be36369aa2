#include <doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "proxy/http/rewrite.h"

using namespace sy::proxy;

namespace {

RequestHead request(Headers headers) {
  RequestHead h;
  h.method = "POST";
  h.target = "/cart?id=1";
  h.headers = std::move(headers);
  return h;
}

bool hasLine(const std::string& head, const std::string& line) {
  return head.find("\r\n" + line + "\r\n") != std::string::npos;
}

bool hasName(const std::string& head, const std::string& name) {
  return head.find("\r\n" + name + ":") != std::string::npos;
}

}  // namespace

TEST_CASE("upstream request: hop-by-hop removed, forwarding headers set") {
  RequestHead h = request({{"Host", "shop.example.com:8080"},
                           {"Connection", "keep-alive, X-Secret"},
                           {"X-Secret", "1"},
                           {"Keep-Alive", "timeout=5"},
                           {"TE", "trailers"},
                           {"Trailer", "X-T"},
                           {"Proxy-Connection", "keep-alive"},
                           {"Upgrade", "h2c"},
                           {"Transfer-Encoding", "chunked"},
                           {"Expect", "100-continue"},
                           {"X-Forwarded-For", "10.0.0.1"},
                           {"X-Forwarded-For", "10.0.0.2"},
                           {"X-Forwarded-Proto", "https"},
                           {"X-Switchyard-Variant", "spoofed"},
                           {"Cookie", "a=b"}});
  RequestRewrite rw;
  rw.client_ip = "127.0.0.1";
  rw.variant_header = "X-Switchyard-Variant";
  rw.variant = "canary";
  rw.request_id = "abc123";
  rw.framing = BodyFraming::Chunked;
  std::string out;
  appendUpstreamRequestHead(out, h, rw);
  CHECK(out.rfind("POST /cart?id=1 HTTP/1.1\r\n", 0) == 0);
  CHECK(out.size() >= 4);
  CHECK(out.substr(out.size() - 4) == "\r\n\r\n");
  for (const char* gone : {"Connection", "X-Secret", "Keep-Alive", "TE", "Trailer",
                           "Proxy-Connection", "Upgrade", "Expect"}) {
    CAPTURE(gone);
    CHECK(!hasName(out, gone));
  }
  CHECK(hasLine(out, "Host: shop.example.com:8080"));
  CHECK(hasLine(out, "Cookie: a=b"));
  CHECK(hasLine(out, "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 127.0.0.1"));
  CHECK(hasLine(out, "X-Forwarded-Proto: http"));
  CHECK(hasLine(out, "X-Forwarded-Host: shop.example.com:8080"));
  CHECK(hasLine(out, "X-Request-Id: abc123"));
  CHECK(hasLine(out, "X-Switchyard-Variant: canary"));
  CHECK(out.find("spoofed") == std::string::npos);
  CHECK(hasLine(out, "Transfer-Encoding: chunked"));
}

TEST_CASE("upstream request: content-length is re-emitted, upgrade kept when asked") {
  RequestHead h = request({{"Host", "h"},
                           {"Content-Length", "5"},
                           {"Connection", "Upgrade"},
                           {"Upgrade", "websocket"}});
  RequestRewrite rw;
  rw.client_ip = "::1";
  rw.framing = BodyFraming::ContentLength;
  rw.content_length = 5;
  rw.upgrade = true;
  std::string out;
  appendUpstreamRequestHead(out, h, rw);
  CHECK(hasLine(out, "Content-Length: 5"));
  CHECK(hasLine(out, "Upgrade: websocket"));
  CHECK(hasLine(out, "Connection: upgrade"));
  CHECK(hasLine(out, "X-Forwarded-For: ::1"));
  CHECK(!hasName(out, "X-Switchyard-Variant"));  // variant_header "" disables it
}

TEST_CASE("downstream response: re-framed, variant and cookie added") {
  ResponseHead r;
  r.status = 200;
  r.reason = "OK";
  r.headers = {{"Content-Type", "text/plain"},
               {"Transfer-Encoding", "chunked"},
               {"Connection", "close, X-Internal"},
               {"X-Internal", "1"}};
  ResponseRewrite rw;
  rw.variant_header = "X-Switchyard-Variant";
  rw.variant = "blue";
  rw.set_cookie = "sy_id=0123";
  rw.framing = BodyFraming::Chunked;
  std::string out;
  appendDownstreamResponseHead(out, r, rw);
  CHECK(out.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(hasLine(out, "Transfer-Encoding: chunked"));
  CHECK(hasLine(out, "X-Switchyard-Variant: blue"));
  CHECK(hasLine(out, "Set-Cookie: sy_id=0123; Path=/; HttpOnly; SameSite=Lax"));
  CHECK(!hasName(out, "X-Internal"));
  CHECK(!hasName(out, "Connection"));  // keep-alive is the HTTP/1.1 default

  std::string closing;
  rw.keep_alive = false;
  rw.framing = BodyFraming::ContentLength;
  rw.content_length = 42;
  appendDownstreamResponseHead(closing, r, rw);
  CHECK(hasLine(closing, "Content-Length: 42"));
  CHECK(hasLine(closing, "Connection: close"));
  CHECK(!hasName(closing, "Transfer-Encoding"));
}

TEST_CASE("the response header list for HTTP/2: no framing or connection fields") {
  ResponseHead r;
  r.status = 200;
  r.headers = {{"Content-Type", "text/plain"},     {"Content-Length", "99"},
               {"Transfer-Encoding", "chunked"},   {"Keep-Alive", "timeout=5"},
               {"Connection", "X-Internal"},       {"X-Internal", "1"},
               {"X-Switchyard-Variant", "spoofed"}};
  ResponseRewrite rw;
  rw.variant_header = "X-Switchyard-Variant";
  rw.variant = "green";
  rw.set_cookie = "sy_id=9";
  rw.framing = BodyFraming::UntilClose;  // DATA frames until END_STREAM
  std::vector<std::pair<std::string, std::string>> got;
  forEachDownstreamResponseHeader(r, rw, [&](std::string_view name, std::string_view value) {
    got.emplace_back(std::string(name), std::string(value));
  });
  const std::vector<std::pair<std::string, std::string>> want = {
      {"Content-Type", "text/plain"},
      {"X-Switchyard-Variant", "green"},
      {"Set-Cookie", "sy_id=9; Path=/; HttpOnly; SameSite=Lax"}};
  CHECK(got == want);

  got.clear();
  rw.framing = BodyFraming::ContentLength;
  rw.content_length = 7;
  rw.set_cookie = "";
  forEachDownstreamResponseHeader(r, rw, [&](std::string_view name, std::string_view value) {
    got.emplace_back(std::string(name), std::string(value));
  });
  REQUIRE(got.size() == 3);
  CHECK(got[2] == std::pair<std::string, std::string>{"Content-Length", "7"});
}

TEST_CASE("a HEAD/304 response keeps its Content-Length") {
  ResponseHead r;
  r.status = 304;
  r.headers = {{"Content-Length", "1234"}, {"ETag", "\"x\""}};
  ResponseRewrite rw;
  rw.framing = BodyFraming::None;
  std::string out;
  appendDownstreamResponseHead(out, r, rw);
  CHECK(out.rfind("HTTP/1.1 304 Not Modified\r\n", 0) == 0);
  CHECK(hasLine(out, "Content-Length: 1234"));
}

TEST_CASE("error responses are short plain text") {
  std::string out;
  appendErrorResponse(out, 502, "upstream connect failed", false, "rid");
  CHECK(out.rfind("HTTP/1.1 502 Bad Gateway\r\n", 0) == 0);
  CHECK(hasLine(out, "Content-Type: text/plain; charset=utf-8"));
  CHECK(hasLine(out, "Content-Length: 24"));
  CHECK(hasLine(out, "Connection: close"));
  CHECK(hasLine(out, "X-Request-Id: rid"));
  CHECK(out.substr(out.size() - 24) == "upstream connect failed\n");
}

TEST_CASE("absolute-form targets become origin-form with the URL's authority as Host") {
  RequestHead h;
  h.method = "GET";
  h.target = "http://Shop.example.com:8080/api/x?q=1";
  h.headers = {{"Host", "other.test"}, {"Accept", "*/*"}, {"host", "dup"}};
  REQUIRE(toOriginForm(h));
  CHECK(h.target == "/api/x?q=1");
  CHECK(h.path() == "/api/x");
  REQUIRE(h.headers.size() == 2);
  CHECK(h.headers[0].value == "Shop.example.com:8080");

  RequestHead bare;
  bare.target = "HTTPS://[::1]:8443";
  REQUIRE(toOriginForm(bare));
  CHECK(bare.target == "/");
  REQUIRE(bare.headers.size() == 1);
  CHECK(bare.headers[0].value == "[::1]:8443");

  RequestHead origin;
  origin.target = "/plain";
  REQUIRE(toOriginForm(origin));
  CHECK(origin.target == "/plain");
  CHECK(origin.headers.empty());

  RequestHead userinfo;
  userinfo.target = "http://user:pw@host/x";
  CHECK_FALSE(toOriginForm(userinfo));
}

TEST_CASE("trailer fields: framing, routing, hop-by-hop and pseudo-headers are not forwarded") {
  for (const char* name :
       {"content-length", "Transfer-Encoding", "HOST", "connection", "keep-alive",
        "proxy-connection", "te", "trailer", "upgrade", ":path", ":status"}) {
    CAPTURE(name);
    CHECK_FALSE(forwardableTrailer(name));
  }
  for (const char* name : {"grpc-status", "X-Checksum", "server-timing", "digest", "trailers"}) {
    CAPTURE(name);
    CHECK(forwardableTrailer(name));
  }
}

TEST_CASE("the last chunk carries the forwardable trailers") {
  std::string out;
  appendLastChunk(out, {});
  CHECK(out == "0\r\n\r\n");
  out.clear();
  appendLastChunk(out, {{"Grpc-Status", "0"}, {"Content-Length", "1"}, {"x-sum", "a b"}});
  CHECK(out == "0\r\nGrpc-Status: 0\r\nx-sum: a b\r\n\r\n");
}
