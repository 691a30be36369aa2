// PlainTransport and LazyTimer on real loopback sockets: what a connection owner relies on
// (every byte, then the end of the stream, is reported; a full socket drains and says so;
// timeouts fire; connects complete or fail).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "proxy/net/lazy_timer.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/net/transport.h"

namespace sy::proxy {
namespace {

// A TCP socket bound to a free port of 127.0.0.1 (not listening yet); `a` gets its address.
int boundLoopback(sockaddr_in& a, socklen_t& len) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  len = sizeof(a);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), len) == 0);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  return fd;
}

// A connected TCP pair on 127.0.0.1: `ours` (non-blocking, for the stream) and `peer`.
struct TcpPair {
  int ours = -1;
  int peer = -1;
  TcpPair() {
    sockaddr_in a;
    socklen_t len;
    const int lfd = boundLoopback(a, len);
    REQUIRE(listen(lfd, 1) == 0);
    peer = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(connect(peer, reinterpret_cast<sockaddr*>(&a), len) == 0);
    ours = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK);
    REQUIRE(ours >= 0);
    close(lfd);
  }
  ~TcpPair() {
    if (peer >= 0) close(peer);
  }
};

// Records what the stream reports; drains input as a consumer would.
struct Recorder : Transport::Handler {
  Transport* stream = nullptr;
  event_base* base = nullptr;
  std::string data;
  std::vector<short> events;
  int writes = 0;
  bool stop_on_event = true;
  void onTransportRead() override {
    evbuffer* in = stream->input();
    const size_t n = evbuffer_get_length(in);
    std::string chunk(n, '\0');
    evbuffer_remove(in, chunk.data(), n);
    data += chunk;
  }
  void onTransportWrite() override {
    ++writes;
    event_base_loopbreak(base);
  }
  void onTransportEvent(short what) override {
    events.push_back(what);
    if (stop_on_event) event_base_loopbreak(base);
  }
};

// Runs the loop until a handler breaks it, or `ms` pass.
void runFor(event_base* base, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  event_base_loopexit(base, &tv);
  event_base_dispatch(base);
}

// A stream under test with its recorder and loop.
struct Fixture {
  EventBasePtr base{event_base_new()};
  std::unique_ptr<PlainTransport> stream;
  Recorder rec;
  void attach(std::unique_ptr<PlainTransport> s) {
    REQUIRE(s);
    stream = std::move(s);
    rec.stream = stream.get();
    rec.base = base.get();
    stream->setHandler(&rec);
  }
  void accept(int fd) { attach(PlainTransport::accepted(base.get(), sy::UniqueFd(fd))); }
  void run(int ms) { runFor(base.get(), ms); }
  ~Fixture() {
    if (stream) stream->setHandler(nullptr);
  }
};

}  // namespace

TEST_CASE("stream: data queued together with the peer's FIN is delivered, then EOF") {
  TcpPair pair;
  const std::string sent(100000, 'x');
  REQUIRE(write(pair.peer, sent.data(), sent.size()) == static_cast<ssize_t>(sent.size()));
  shutdown(pair.peer, SHUT_WR);  // the FIN sits behind the data before the stream reads at all
  Fixture f;
  f.accept(pair.ours);
  f.run(2000);
  CHECK(f.rec.data == sent);
  REQUIRE(f.rec.events.size() == 1);
  CHECK((f.rec.events[0] & BEV_EVENT_EOF));
}

TEST_CASE("stream: a reset queued behind data is reported as an error, not a hang") {
  TcpPair pair;
  const std::string sent(5000, 'y');
  REQUIRE(write(pair.peer, sent.data(), sent.size()) == static_cast<ssize_t>(sent.size()));
  linger lg{1, 0};
  setsockopt(pair.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(pair.peer);  // RST
  pair.peer = -1;
  usleep(20000);
  Fixture f;
  f.accept(pair.ours);
  f.run(2000);
  REQUIRE(f.rec.events.size() == 1);
  CHECK((f.rec.events[0] & (BEV_EVENT_ERROR | BEV_EVENT_EOF)));
  if (f.rec.events[0] & BEV_EVENT_ERROR) CHECK(!f.stream->failure().empty());
}

TEST_CASE("stream: a write the socket cannot take at once drains later and says so") {
  TcpPair pair;
  // Fixed, smallish buffers (no autotuning): 4 MiB cannot fit at once. (Not tiny: windows of
  // a few KiB make the transfer crawl on delayed ACKs.)
  int size = 64 * 1024;
  setsockopt(pair.ours, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  setsockopt(pair.peer, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  Fixture f;
  f.accept(pair.ours);
  const std::string big(4 * 1024 * 1024, 'z');
  evbuffer_add(f.stream->output(), big.data(), big.size());
  f.stream->flush();
  REQUIRE(evbuffer_get_length(f.stream->output()) >
          Transport::kWriteLowWater);  // the socket is full
  // The peer reads everything; the stream writes the rest as the socket drains.
  std::string got;
  std::vector<char> buf(1 << 16);
  for (int rounds = 0; got.size() < big.size() && rounds < 20000; ++rounds) {
    f.run(1);
    ssize_t n;
    while ((n = recv(pair.peer, buf.data(), buf.size(), MSG_DONTWAIT)) > 0) {
      got.append(buf.data(), static_cast<size_t>(n));
    }
    if (n < 0 && errno != EAGAIN) FAIL("recv failed");
  }
  CHECK(got == big);
  CHECK(evbuffer_get_length(f.stream->output()) == 0);
  CHECK(f.rec.writes >= 1);  // told once the output was down to the low-water mark
  CHECK(f.rec.events.empty());
}

TEST_CASE("stream: the read timeout fires without input, and not while input keeps coming") {
  TcpPair pair;
  Fixture f;
  f.accept(pair.ours);
  f.stream->setTimeouts(150, 0);
  const uint64_t start = LazyTimer::nowMs();
  // Input every 50 ms for 300 ms pushes the deadline on.
  for (int i = 0; i < 6; ++i) {
    REQUIRE(write(pair.peer, "a", 1) == 1);
    f.run(50);
  }
  CHECK(f.rec.events.empty());
  CHECK(f.rec.data == "aaaaaa");
  f.run(1000);
  REQUIRE(f.rec.events.size() == 1);
  CHECK(f.rec.events[0] == (BEV_EVENT_TIMEOUT | BEV_EVENT_READING));
  CHECK(LazyTimer::nowMs() - start >= 250 + 150 - 20);  // the last input came at ~250 ms
  CHECK_FALSE(f.stream->reading());
}

TEST_CASE("stream: connect completes, or fails with an error event") {
  sockaddr_in a;
  socklen_t len;
  const int lfd = boundLoopback(a, len);
  {
    // Bound but not listening: refused.
    Fixture f;
    f.attach(PlainTransport::connect(f.base.get(), reinterpret_cast<sockaddr*>(&a), len, 1000));
    f.run(2000);
    REQUIRE(f.rec.events.size() == 1);
    CHECK(f.rec.events[0] == BEV_EVENT_ERROR);
    CHECK(f.stream->failure() == "Connection refused");
  }
  REQUIRE(listen(lfd, 1) == 0);
  {
    Fixture f;
    f.attach(PlainTransport::connect(f.base.get(), reinterpret_cast<sockaddr*>(&a), len, 1000));
    evbuffer_add(f.stream->output(), "hello", 5);  // queued during the connect, sent after it
    f.run(2000);
    REQUIRE(f.rec.events.size() == 1);
    CHECK(f.rec.events[0] == BEV_EVENT_CONNECTED);
    const int peer = accept(lfd, nullptr, nullptr);
    REQUIRE(peer >= 0);
    char buf[8] = {};
    CHECK(recv(peer, buf, sizeof(buf), 0) == 5);
    CHECK(std::string(buf) == "hello");
    close(peer);
  }
  close(lfd);
}

TEST_CASE("lazy timer: a deadline moved later fires once, at the later time") {
  EventBasePtr base(event_base_new());
  int fired = 0;
  uint64_t fired_at = 0;
  struct Ctx {
    int* fired;
    uint64_t* at;
    event_base* base;
  } ctx{&fired, &fired_at, base.get()};
  LazyTimer t(
      base.get(),
      [](void* p) {
        auto* c = static_cast<Ctx*>(p);
        ++*c->fired;
        *c->at = LazyTimer::nowMs();
      },
      &ctx);
  const uint64_t start = LazyTimer::nowMs();
  t.setDeadline(start + 50);
  t.setDeadline(start + 200);  // later: no re-arm now; the early wake-up re-arms
  runFor(base.get(), 500);
  CHECK(fired == 1);
  CHECK(fired_at >= start + 200);
  t.setDeadline(LazyTimer::nowMs() + 50);
  t.cancel();
  runFor(base.get(), 200);
  CHECK(fired == 1);  // cancelled
}

}  // namespace sy::proxy
