#pragma once
// The Prometheus text exposition (format 0.0.4) of every SPEC §7 metric, for GET /metrics.
// Counting happens in proxy/observe/; this file only reads the totals and writes text.
//
// Thread: main (it reads the registries, which only the main thread changes).

#include <cstdint>
#include <string>

namespace sy::config {
struct Snapshot;
}  // namespace sy::config

namespace sy::proxy {

class HealthRegistry;
class MetricsRegistry;
class RolloutManager;

// What a scrape reads. Null pointers are allowed: their metrics are written with no series.
struct MetricsSources {
  const MetricsRegistry* registry = nullptr;
  const config::Snapshot* snapshot = nullptr;  // current: weights and pools
  uint64_t generation = 0;
  uint64_t reloads_success = 0;
  uint64_t reloads_failure = 0;
  uint64_t client_connections = 0;
  uint64_t upstream_connections = 0;
  uint64_t access_log_dropped_lines = 0;
  const HealthRegistry* health = nullptr;
  const RolloutManager* rollouts = nullptr;
};

// Appends the exposition to `out`. Every metric gets its # HELP and # TYPE lines even when it
// has no series.
//
// switchyard_requests_terminated_total{route,variant,source,phase} (SPEC §10) has a series only
// for a combination that has counted at least one exchange: of the 15 abnormal (source, phase)
// pairs per route and variant a process usually sees a handful, so writing all of them would
// multiply the scrape for nothing. A combination absent from a scrape has counted 0. The cost:
// PromQL's increase() does not see the count that made a series appear.
void renderPrometheus(std::string& out, const MetricsSources& sources);

}  // namespace sy::proxy
