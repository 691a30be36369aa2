#pragma once
// Request metrics. Counters live per worker and per (route, variant): each worker writes only
// its own slot (a relaxed load + store, no locked instruction on the hot path) and the admin
// thread sums the slots on scrape. This file only counts; rendering (Prometheus text, JSON)
// belongs to proxy/admin/. Route entries are created only on the main thread, when a
// config is loaded, before the snapshot that uses them is published, so workers never see the
// registry change under them; entries are never removed (counters survive reloads).
//
// Thread: Registry methods: main. RouteMetrics::slot(): the worker owning the slot writes,
// the main thread reads.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "config/snapshot.h"
#include "proxy/http/error.h"
#include "proxy/http/termination.h"
#include "proxy/net/proxy_protocol.h"
#include "proxy/observe/latency_buckets.h"

namespace sy::proxy {

// Adds to a counter that only the calling thread writes.
inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

template <class T>
inline void bump(std::atomic<T>& c, std::type_identity_t<T> n) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
template <class T>
inline void unbump(std::atomic<T>& c) {
  c.store(c.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

// Histogram upper bounds in seconds, 1 ms .. 10 s (Prometheus "le" labels).
inline constexpr std::array<double, 13> kDurationBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

enum class UpstreamErrorKind : uint8_t { Connect, Timeout, Reset, Protocol };
inline constexpr size_t kUpstreamErrorKinds = 4;

// Counts of abnormal ends, indexed [source][phase] as the enums of termination.h (SPEC §10).
// Row TerminationSource::None stays zero: a normal end is not counted here.
template <class T>
using TerminationGrid = std::array<std::array<T, kTerminationPhases>, kTerminationSources>;

// The protocol a client spoke (SPEC §12): HTTP/1.0 counts as HTTP/1.1.
enum class ClientProtocol : uint8_t { Http1, Http2 };
inline constexpr size_t kClientProtocols = 2;
inline constexpr std::array<const char*, kClientProtocols> kClientProtocolNames = {"HTTP/1.1",
                                                                                   "HTTP/2"};

// One worker's counters for one (route, variant). Cache-line aligned so two workers never
// write the same line.
struct alignas(64) VariantCounters {
  std::array<std::atomic<uint64_t>, 5> responses{};  // by status class 1xx..5xx
  std::array<std::atomic<uint64_t>, kDurationBuckets.size() + 1> buckets{};  // last = +Inf
  std::atomic<uint64_t> duration_sum_us{0};
  std::array<std::atomic<uint64_t>, kUpstreamErrorKinds> upstream_errors{};
  TerminationGrid<std::atomic<uint64_t>> terminations{};
  std::array<std::atomic<uint64_t>, kClientProtocols> protocols{};  // exchanges, by ClientProtocol
  // Rollout evidence (SPEC §11), counted on routes with a rollout: requests the analysis judges
  // (the upstream answered, or the exchange ended with source upstream), the errors among them
  // (5xx or source upstream), and the time from the request head to the upstream's response
  // head.
  std::atomic<uint64_t> judged{0};
  std::atomic<uint64_t> judged_errors{0};
  std::array<std::atomic<uint64_t>, kLatencyBuckets> latency{};

  // Thread: the owning worker.
  void recordResponse(int status, uint64_t duration_us);
  void recordUpstreamError(ErrorKind kind);
  void recordProtocol(ClientProtocol p) { bump(protocols[static_cast<size_t>(p)]); }
  // Counts `t` under [source][phase]; does nothing for a normal end (source None).
  void recordTermination(Termination t) {
    if (t.normal()) return;
    bump(terminations[static_cast<size_t>(t.source)][static_cast<size_t>(t.phase)]);
  }
  // One judged request (see judged above); `latency_us` only when a response head arrived.
  void recordJudged(bool error) {
    bump(judged);
    if (error) bump(judged_errors);
  }
  void recordLatency(uint64_t latency_us) { bump(latency[latencyBucket(latency_us)]); }
};

enum class ShadowResult : uint8_t { Sent, Completed, Failed, Dropped, Skipped };
inline constexpr size_t kShadowResults = 5;
enum class MismatchKind : uint8_t { Status, Body, Headers };
inline constexpr size_t kMismatchKinds = 3;

// One worker's shadow counters for one route.
struct alignas(64) ShadowCounters {
  std::array<std::atomic<uint64_t>, kShadowResults> results{};
  std::array<std::atomic<uint64_t>, kMismatchKinds> mismatches{};
  // Comparisons made, and those that found any mismatch (the rollout's shadow check).
  std::atomic<uint64_t> compared{0};
  std::atomic<uint64_t> mismatched{0};
  uint32_t in_flight = 0;  // Thread: the owning worker only (enforces max_in_flight)

  void record(ShadowResult r) { bump(results[static_cast<size_t>(r)]); }
  void record(MismatchKind k) { bump(mismatches[static_cast<size_t>(k)]); }
};

class RouteMetrics {
 public:
  RouteMetrics(std::string name, size_t workers);
  const std::string& name() const { return name_; }
  // Thread: the worker `worker` writes; the main thread reads.
  VariantCounters& slot(size_t worker, config::Variant v) {
    return slots_[worker * config::kVariants + static_cast<size_t>(v)];
  }
  ShadowCounters& shadow(size_t worker) { return shadow_[worker]; }

  // Thread: main. Sum over workers.
  struct ShadowTotals {
    std::array<uint64_t, kShadowResults> results{};
    std::array<uint64_t, kMismatchKinds> mismatches{};
    uint64_t compared = 0;
    uint64_t mismatched = 0;
  };
  ShadowTotals shadowTotals() const;

  struct Totals {
    std::array<uint64_t, 5> responses{};
    std::array<uint64_t, kDurationBuckets.size() + 1> buckets{};
    uint64_t duration_sum_us = 0;
    std::array<uint64_t, kUpstreamErrorKinds> upstream_errors{};
    TerminationGrid<uint64_t> terminations{};  // [source][phase]; row None is always zero
    std::array<uint64_t, kClientProtocols> protocols{};
    uint64_t judged = 0;
    uint64_t judged_errors = 0;
    std::array<uint64_t, kLatencyBuckets> latency{};
  };
  Totals totals(config::Variant v) const;

 private:
  std::string name_;
  size_t workers_;
  std::unique_ptr<VariantCounters[]> slots_;
  std::unique_ptr<ShadowCounters[]> shadow_;
};

// Why an HTTP/2 connection was closed with GOAWAY(ENHANCE_YOUR_CALM) (SPEC §12): the budget
// its client went beyond (switchyard_http2_goaways_total{reason}).
enum class Http2Abuse : uint8_t { RapidReset, Continuation, Settings, Ping, Priority, EmptyData };
inline constexpr size_t kHttp2AbuseReasons = 6;
inline constexpr std::array<const char*, kHttp2AbuseReasons> kHttp2AbuseNames = {
    "rapid_reset", "continuation", "settings", "ping", "priority", "empty_data"};

// One worker's process-wide counters (not per route). Cache-line aligned like VariantCounters.
struct alignas(64) WorkerCounters {
  std::array<std::atomic<uint64_t>, kHttp2AbuseReasons> http2_goaways{};

  // Thread: the owning worker.
  void recordHttp2Goaway(Http2Abuse reason) { bump(http2_goaways[static_cast<size_t>(reason)]); }
};

// PROXY protocol headers refused, by listener ("host:port" as configured) and reason
// (switchyard_proxy_protocol_errors_total{listener,reason}). Bad input only, so rare: one mutex
// instead of per-worker slots, and listeners need no slot made in advance. Entries are never
// removed (counters survive reloads).
//
// Thread: any.
class ProxyProtocolErrors {
 public:
  using Counts = std::array<uint64_t, kProxyProtocolErrors>;
  void record(const std::string& listener, ProxyProtocolError why) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++counts_[listener][static_cast<size_t>(why)];
  }
  std::map<std::string, Counts> totals() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return counts_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Counts> counts_;  // guarded by mutex_
};

// The route metrics of one snapshot, by route index (what a worker looks up per request), and
// the registry's per-worker counters (`worker_counters[worker index]`; they outlive every table).
struct RouteMetricsTable : std::vector<RouteMetrics*> {
  WorkerCounters* worker_counters = nullptr;
  ProxyProtocolErrors* proxy_protocol_errors = nullptr;  // the registry's; outlives every table
};

class MetricsRegistry {
 public:
  explicit MetricsRegistry(size_t workers)
      : workers_(workers), worker_counters_(new WorkerCounters[workers > 0 ? workers : 1]) {}
  // Thread: main. The metrics of every route of `snapshot`, created as needed. Routes without
  // a match (404) are counted under the route name "".
  std::shared_ptr<const RouteMetricsTable> tableFor(const config::Snapshot& snapshot);
  RouteMetrics& unmatched();
  // Thread: main.
  const std::map<std::string, std::unique_ptr<RouteMetrics>>& routes() const { return routes_; }
  const RouteMetrics* find(const std::string& name) const;
  // Thread: the worker `worker` writes (through its table's worker_counters); main reads.
  WorkerCounters& workerCounters(size_t worker) { return worker_counters_[worker]; }
  // Thread: main. Sum over workers, by Http2Abuse.
  std::array<uint64_t, kHttp2AbuseReasons> http2GoawayTotals() const;
  // Thread: any.
  ProxyProtocolErrors& proxyProtocolErrors() { return proxy_protocol_errors_; }
  const ProxyProtocolErrors& proxyProtocolErrors() const { return proxy_protocol_errors_; }

 private:
  RouteMetrics& route(const std::string& name);
  size_t workers_;
  std::unique_ptr<WorkerCounters[]> worker_counters_;
  ProxyProtocolErrors proxy_protocol_errors_;
  std::map<std::string, std::unique_ptr<RouteMetrics>> routes_;
};

}  // namespace sy::proxy
