#include "proxy/observe/metrics.h"

namespace sy::proxy {

void VariantCounters::recordResponse(int status, uint64_t duration_us) {
  const int cls = status / 100;
  if (cls >= 1 && cls <= 5) bump(responses[cls - 1]);
  const double seconds = static_cast<double>(duration_us) / 1e6;
  size_t b = 0;
  while (b < kDurationBuckets.size() && seconds > kDurationBuckets[b]) ++b;
  bump(buckets[b]);
  bump(duration_sum_us, duration_us);
}

void VariantCounters::recordUpstreamError(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::ConnectFailed:
      bump(upstream_errors[static_cast<size_t>(UpstreamErrorKind::Connect)]);
      break;
    case ErrorKind::ResponseTimeout:
      bump(upstream_errors[static_cast<size_t>(UpstreamErrorKind::Timeout)]);
      break;
    case ErrorKind::ResetBeforeResponse:
      bump(upstream_errors[static_cast<size_t>(UpstreamErrorKind::Reset)]);
      break;
    case ErrorKind::MalformedResponse:
      bump(upstream_errors[static_cast<size_t>(UpstreamErrorKind::Protocol)]);
      break;
    default: break;
  }
}

RouteMetrics::RouteMetrics(std::string name, size_t workers)
    : name_(std::move(name)),
      workers_(workers),
      slots_(new VariantCounters[workers * config::kVariants]),
      shadow_(new ShadowCounters[workers]) {}

RouteMetrics::ShadowTotals RouteMetrics::shadowTotals() const {
  ShadowTotals t;
  for (size_t w = 0; w < workers_; ++w) {
    for (size_t i = 0; i < kShadowResults; ++i)
      t.results[i] += shadow_[w].results[i].load(std::memory_order_relaxed);
    for (size_t i = 0; i < kMismatchKinds; ++i)
      t.mismatches[i] += shadow_[w].mismatches[i].load(std::memory_order_relaxed);
    t.compared += shadow_[w].compared.load(std::memory_order_relaxed);
    t.mismatched += shadow_[w].mismatched.load(std::memory_order_relaxed);
  }
  return t;
}

RouteMetrics::Totals RouteMetrics::totals(config::Variant v) const {
  Totals t;
  for (size_t w = 0; w < workers_; ++w) {
    const VariantCounters& c = slots_[w * config::kVariants + static_cast<size_t>(v)];
    for (size_t i = 0; i < t.responses.size(); ++i)
      t.responses[i] += c.responses[i].load(std::memory_order_relaxed);
    for (size_t i = 0; i < t.buckets.size(); ++i)
      t.buckets[i] += c.buckets[i].load(std::memory_order_relaxed);
    t.duration_sum_us += c.duration_sum_us.load(std::memory_order_relaxed);
    for (size_t i = 0; i < t.upstream_errors.size(); ++i)
      t.upstream_errors[i] += c.upstream_errors[i].load(std::memory_order_relaxed);
    for (size_t src = 0; src < kTerminationSources; ++src) {
      for (size_t ph = 0; ph < kTerminationPhases; ++ph)
        t.terminations[src][ph] += c.terminations[src][ph].load(std::memory_order_relaxed);
    }
    for (size_t i = 0; i < kClientProtocols; ++i)
      t.protocols[i] += c.protocols[i].load(std::memory_order_relaxed);
    t.judged += c.judged.load(std::memory_order_relaxed);
    t.judged_errors += c.judged_errors.load(std::memory_order_relaxed);
    for (size_t i = 0; i < kLatencyBuckets; ++i)
      t.latency[i] += c.latency[i].load(std::memory_order_relaxed);
  }
  return t;
}

RouteMetrics& MetricsRegistry::route(const std::string& name) {
  auto& slot = routes_[name];
  if (!slot) slot = std::make_unique<RouteMetrics>(name, workers_);
  return *slot;
}

RouteMetrics& MetricsRegistry::unmatched() { return route(""); }

std::shared_ptr<const RouteMetricsTable> MetricsRegistry::tableFor(
    const config::Snapshot& snapshot) {
  auto table = std::make_shared<RouteMetricsTable>();
  table->reserve(snapshot.routes.size() + 1);
  for (const config::Route& r : snapshot.routes) table->push_back(&route(r.name));
  table->push_back(&unmatched());  // last: requests that matched no route
  table->worker_counters = worker_counters_.get();
  table->proxy_protocol_errors = &proxy_protocol_errors_;
  return table;
}

std::array<uint64_t, kHttp2AbuseReasons> MetricsRegistry::http2GoawayTotals() const {
  std::array<uint64_t, kHttp2AbuseReasons> out{};
  for (size_t w = 0; w < workers_; ++w) {
    for (size_t r = 0; r < kHttp2AbuseReasons; ++r) {
      out[r] += worker_counters_[w].http2_goaways[r].load(std::memory_order_relaxed);
    }
  }
  return out;
}

const RouteMetrics* MetricsRegistry::find(const std::string& name) const {
  auto it = routes_.find(name);
  return it == routes_.end() ? nullptr : it->second.get();
}

}  // namespace sy::proxy
