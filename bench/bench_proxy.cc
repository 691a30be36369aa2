// The per-request work of the data plane outside routing (bench_splitter.cc has that): decoding a
// request head and writing the head sent upstream, the same for the response, taking the
// worker's snapshot, and recording the response in the metrics. Inputs are what a browser and a
// typical upstream send; every benchmark first checks that its input decodes as intended.
//
// Each benchmark also reports allocs/op: calls to operator new per iteration on the benchmark's
// thread, counted by the replacement below (one thread-local increment per allocation).

#include <array>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <thread>

#include <benchmark/benchmark.h>

#include "config/snapshot.h"
#include "proxy/http/rewrite.h"
#include "proxy/http1/http_codec.h"
#include "proxy/observe/metrics.h"

namespace {
thread_local uint64_t tl_allocations = 0;
}  // namespace

// Counting replacements of the global allocation functions (the array and sized forms of the
// standard library forward to these). Aligned forms keep the library's own implementation.
// noinline: once inlined in this file, g++ 12 pairs the operator new call with the free() inside
// the delete and warns of a mismatch (-Wmismatched-new-delete).
[[gnu::noinline]] void* operator new(std::size_t n) {
  ++tl_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace sy::proxy {
namespace {

// The proxy always runs worker threads, so shared_ptr reference counts there are atomic
// operations. libstdc++ skips the atomics while glibc says the process is single-threaded
// (__libc_single_threaded, true until the first thread is created), which would make the
// single-thread BM_SnapshotAcquire measure plain increments. One short-lived thread at start-up
// makes this process multi-threaded for good, as the proxy is.
const bool kMultiThreaded = [] {
  std::thread([] {}).join();
  return true;
}();

// A Chrome GET of a JSON API behind a cart page: 614 bytes, 12 header fields, no X-Request-Id
// (so the proxy adds one), keep-alive.
constexpr std::string_view kRequest =
    "GET /api/cart/items?page=2 HTTP/1.1\r\n"
    "Host: shop.example.com\r\n"
    "Connection: keep-alive\r\n"
    "sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
    "sec-ch-ua-mobile: ?0\r\n"
    "sec-ch-ua-platform: \"Linux\"\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36\r\n"
    "Accept: application/json, text/plain, */*\r\n"
    "Referer: https://shop.example.com/cart\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-GB,en;q=0.9\r\n"
    "Cookie: _ga=GA1.2.1234567890.1700000000; theme=dark; "
    "session=7f3c9a2e-41b8-4d2a-9c6e-0b5f8e2d1a47; lang=en\r\n"
    "X-User-Id: 4815162342\r\n"
    "\r\n";
constexpr size_t kRequestHeaders = 12;

// An nginx-style 200 with a JSON body (318 bytes of head, 9 fields). The body is not fed: the
// benchmark measures the head.
constexpr std::string_view kResponseHead =
    "HTTP/1.1 200 OK\r\n"
    "Server: nginx/1.22.1\r\n"
    "Date: Tue, 14 May 2024 10:21:33 GMT\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 1832\r\n"
    "Connection: keep-alive\r\n"
    "Cache-Control: private, max-age=0, no-cache\r\n"
    "ETag: W/\"728-18f6e0c2a4b\"\r\n"
    "Vary: Accept-Encoding\r\n"
    "X-Request-Id: 0d9f6c1e-5b7a-4e3c-8a2f-6c1d9e0b7a35\r\n"
    "\r\n";
constexpr size_t kResponseHeaders = 9;

constexpr std::string_view kRequestId = "0d9f6c1e-5b7a-4e3c-8a2f-6c1d9e0b7a35";

struct DiscardBody : MessageDecoder::BodySink {
  void onBodyData(std::string_view data) override { benchmark::DoNotOptimize(data.data()); }
};

// What ServerConnection::processInput does with one request that arrived whole: decode to the
// head, then on to the end of the (empty) message. False if the input did not decode so.
bool decodeRequest(MessageDecoder& d) {
  d.reset();
  size_t consumed = 0;
  if (d.decode(kRequest.data(), kRequest.size(), consumed) != MessageDecoder::Event::HeadComplete)
    return false;
  size_t rest = 0;
  const auto ev = d.decode(kRequest.data() + consumed, kRequest.size() - consumed, rest);
  return ev == MessageDecoder::Event::MessageComplete && consumed + rest == kRequest.size();
}

// What the upstream side does with a response head that arrived whole: a fresh decoder state
// per exchange, decoded to HeadComplete, then on through the rest of the head (http-parser
// stops on its final LF when paused there) to where the body would start.
bool decodeResponseHead(MessageDecoder& d) {
  d.reset();
  size_t consumed = 0;
  if (d.decode(kResponseHead.data(), kResponseHead.size(), consumed) !=
      MessageDecoder::Event::HeadComplete)
    return false;
  size_t rest = 0;
  const auto ev = d.decode(kResponseHead.data() + consumed, kResponseHead.size() - consumed, rest);
  return ev == MessageDecoder::Event::NeedMore && consumed + rest == kResponseHead.size();
}

// The rewrite upstreamRewrite() builds for a plain-HTTP client with no X-Request-Id.
RequestRewrite requestRewrite(const MessageDecoder& d) {
  RequestRewrite rw;
  rw.client_ip = "203.0.113.9";
  rw.proto = "http";
  rw.variant_header = "X-Switchyard-Variant";
  rw.variant = "blue";
  rw.request_id = kRequestId;
  rw.framing = d.framing();
  rw.content_length = d.contentLength();
  rw.upgrade = d.upgrade();
  return rw;
}

ResponseRewrite responseRewrite(const MessageDecoder& d) {
  ResponseRewrite rw;
  rw.variant_header = "X-Switchyard-Variant";
  rw.variant = "blue";
  rw.framing = d.framing();
  rw.content_length = d.contentLength();
  rw.keep_alive = true;
  return rw;
}

void reportAllocations(benchmark::State& state, uint64_t before) {
  state.counters["allocs/op"] = benchmark::Counter(static_cast<double>(tl_allocations - before),
                                                   benchmark::Counter::kAvgIterations);
}

// Request head decoding alone: http-parser plus building RequestHead (method, target, header
// name/value strings), one decoder reused across requests as on a keep-alive connection.
void BM_ParseRequest(benchmark::State& state) {
  DiscardBody sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  if (!decodeRequest(d) || d.request().headers.size() != kRequestHeaders) {
    state.SkipWithError("request does not decode as intended");
    return;
  }
  const uint64_t allocs = tl_allocations;
  for (auto _ : state) {
    bool ok = decodeRequest(d);
    benchmark::DoNotOptimize(ok);
    benchmark::DoNotOptimize(d.request().headers.data());
  }
  reportAllocations(state, allocs);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRequest.size()));
}
BENCHMARK(BM_ParseRequest);

// Writing the upstream request head (hop-by-hop removal, X-Forwarded-*, request id, variant
// header) from an already decoded head into a buffer reused per connection.
void BM_RewriteRequestHead(benchmark::State& state) {
  DiscardBody sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  if (!decodeRequest(d)) {
    state.SkipWithError("request does not decode as intended");
    return;
  }
  const RequestRewrite rw = requestRewrite(d);
  std::string out;
  appendUpstreamRequestHead(out, d.request(), rw);
  if (out.find("\r\nConnection:") != std::string::npos ||
      out.find("\r\nX-Forwarded-For: 203.0.113.9\r\n") == std::string::npos ||
      out.find("\r\nX-Switchyard-Variant: blue\r\n") == std::string::npos) {
    state.SkipWithError("rewrite does not produce the intended head");
    return;
  }
  const uint64_t allocs = tl_allocations;
  for (auto _ : state) {
    out.clear();
    appendUpstreamRequestHead(out, d.request(), rw);
    benchmark::DoNotOptimize(out.data());
  }
  reportAllocations(state, allocs);
  state.counters["out_bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_RewriteRequestHead);

// The whole per-request head work on the client side: decode the request, write the head that
// goes upstream.
void BM_ParseAndRewrite(benchmark::State& state) {
  DiscardBody sink;
  MessageDecoder d(MessageDecoder::Kind::Request, sink);
  if (!decodeRequest(d)) {
    state.SkipWithError("request does not decode as intended");
    return;
  }
  std::string out;
  appendUpstreamRequestHead(out, d.request(), requestRewrite(d));
  const uint64_t allocs = tl_allocations;
  for (auto _ : state) {
    bool ok = decodeRequest(d);
    benchmark::DoNotOptimize(ok);
    out.clear();
    appendUpstreamRequestHead(out, d.request(), requestRewrite(d));
    benchmark::DoNotOptimize(out.data());
  }
  reportAllocations(state, allocs);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRequest.size()));
}
BENCHMARK(BM_ParseAndRewrite);

// The per-response head work on the upstream side: decode the response head (Content-Length
// body follows) and write the head sent to the client with the variant header.
void BM_ParseResponseAndRewrite(benchmark::State& state) {
  DiscardBody sink;
  MessageDecoder d(MessageDecoder::Kind::Response, sink);
  if (!decodeResponseHead(d) || d.response().headers.size() != kResponseHeaders ||
      d.framing() != BodyFraming::ContentLength || d.contentLength() != 1832) {
    state.SkipWithError("response does not decode as intended");
    return;
  }
  std::string out;
  appendDownstreamResponseHead(out, d.response(), responseRewrite(d));
  const uint64_t allocs = tl_allocations;
  for (auto _ : state) {
    bool ok = decodeResponseHead(d);
    benchmark::DoNotOptimize(ok);
    out.clear();
    appendDownstreamResponseHead(out, d.response(), responseRewrite(d));
    benchmark::DoNotOptimize(out.data());
  }
  reportAllocations(state, allocs);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kResponseHead.size()));
}
BENCHMARK(BM_ParseResponseAndRewrite);

// The worker's current snapshot, shared by every thread that runs this benchmark.
const config::SnapshotConstSharedPtr& currentSnapshot() {
  static const config::SnapshotConstSharedPtr s = std::make_shared<const config::Snapshot>();
  return s;
}

// Taking the snapshot for a request (Exchange::decodeHead copies the worker's
// shared_ptr) and dropping it at the end: two atomic read-modify-writes on the control block.
// With Threads(2) both threads hit the same control block, as two workers do between reloads,
// so the cache line bounces between cores (run it on two CPUs to see that).
void BM_SnapshotAcquire(benchmark::State& state) {
  const config::SnapshotConstSharedPtr& current = currentSnapshot();
  for (auto _ : state) {
    config::SnapshotConstSharedPtr request = current;
    benchmark::DoNotOptimize(request.get());
  }
}
BENCHMARK(BM_SnapshotAcquire);
BENCHMARK(BM_SnapshotAcquire)->Threads(2);

// The control for the two-thread case: each thread copies a shared_ptr with its own control
// block, so any difference from BM_SnapshotAcquire/threads:2 is the sharing, not the machine.
void BM_SnapshotAcquireOwnBlock(benchmark::State& state) {
  const config::SnapshotConstSharedPtr own = std::make_shared<const config::Snapshot>();
  for (auto _ : state) {
    config::SnapshotConstSharedPtr request = own;
    benchmark::DoNotOptimize(request.get());
  }
}
BENCHMARK(BM_SnapshotAcquireOwnBlock)->Threads(2);

// Recording one response in the worker's own slot: status class counter, duration histogram
// (linear scan of 13 bounds) and duration sum, over a mix of statuses and latencies.
void BM_MetricsRecord(benchmark::State& state) {
  struct Sample {
    int status;
    uint64_t duration_us;
  };
  // Mostly 200s in 1-40 ms, some 304/404, a rare 5xx and slow tail.
  constexpr std::array<Sample, 16> kSamples = {{{200, 850},
                                                {200, 3200},
                                                {200, 12400},
                                                {304, 600},
                                                {200, 7300},
                                                {200, 1900},
                                                {404, 450},
                                                {200, 26000},
                                                {200, 4100},
                                                {200, 15800},
                                                {503, 2000},
                                                {200, 9600},
                                                {200, 2400},
                                                {302, 1100},
                                                {200, 41000},
                                                {200, 310000}}};
  RouteMetrics metrics("route-18", 4);
  VariantCounters& slot = metrics.slot(1, config::Variant::Green);
  size_t i = 0;
  const uint64_t allocs = tl_allocations;
  for (auto _ : state) {
    const Sample& s = kSamples[i++ % kSamples.size()];
    slot.recordResponse(s.status, s.duration_us);
    benchmark::ClobberMemory();
  }
  reportAllocations(state, allocs);
  const uint64_t recorded = metrics.totals(config::Variant::Green).responses[1];
  if (recorded == 0) state.SkipWithError("nothing recorded");
}
BENCHMARK(BM_MetricsRecord);

// Recording one judged request's rollout evidence in the worker's own slot (SPEC §11): the judged
// and error counters and the latency histogram (a count-leading-zeros and two shifts to find the
// bucket), over a mix of outcomes and latencies. Target: <= 30 ns per request.
void BM_RolloutRecordJudged(benchmark::State& state) {
  struct Sample {
    bool error;
    uint64_t latency_us;
  };
  // Mostly fast successes in 0.3-40 ms, a rare error, sub-16 µs and multi-second outliers.
  constexpr std::array<Sample, 16> kSamples = {{{false, 850},
                                                {false, 3200},
                                                {false, 12400},
                                                {false, 600},
                                                {false, 7300},
                                                {false, 1900},
                                                {false, 9},
                                                {false, 26000},
                                                {false, 4100},
                                                {false, 15800},
                                                {true, 2000},
                                                {false, 9600},
                                                {false, 2400},
                                                {false, 310},
                                                {false, 41000},
                                                {true, 4200000}}};
  RouteMetrics metrics("route-18", 4);
  VariantCounters& slot = metrics.slot(1, config::Variant::Canary);
  size_t i = 0;
  const uint64_t allocs = tl_allocations;
  for (auto _ : state) {
    const Sample& s = kSamples[i++ % kSamples.size()];
    slot.recordJudged(s.error);
    slot.recordLatency(s.latency_us);
    benchmark::ClobberMemory();
  }
  reportAllocations(state, allocs);
  const RouteMetrics::Totals totals = metrics.totals(config::Variant::Canary);
  uint64_t latencies = 0;
  for (uint64_t n : totals.latency) latencies += n;
  const bool errors_seen = totals.judged < kSamples.size() || totals.judged_errors > 0;
  if (totals.judged == 0 || !errors_seen || latencies != totals.judged) {
    state.SkipWithError("judged requests not recorded as intended");
  }
}
BENCHMARK(BM_RolloutRecordJudged);

}  // namespace
}  // namespace sy::proxy
