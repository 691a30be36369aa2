#pragma once
// The Prometheus side of SPEC §14, as pure functions: the metrics each replica exports for a
// rollout judged through Prometheus (names, the latency buckets), the PromQL that reads their
// sums back, the HTTP API's URLs and answers, and the interval arithmetic. No I/O and no clock,
// so unit tests drive them directly; the manager (manager.cc) sends what they build with the
// client of prometheus_client.h.
//
// Intervals. Interval k (k >= 1) covers (T_{k-1}, T_k] with T_k = start + k x interval, and is
// evaluated once the wall clock passes T_k + lag: by then every replica's counters at T_k have
// been scraped (lag > scrape interval), and the query pins the evaluation to T_k with `@`, so
// every replica that asks gets the same numbers however late it asks.
//
// Thread: any (pure).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/snapshot.h"
#include "proxy/rollout/analysis.h"
#include "proxy/rollout/rollout.h"

namespace sy::proxy {

// ---- Exported series ----------------------------------------------------------------------------

// The latency buckets exported as switchyard_rollout_latency_seconds_bucket{le}: the analysis's
// own buckets (latency_buckets.h, 8 per power of two) from "<= 63 µs" to "<= 67.1 s", so the
// analysis sees the same resolution it has locally over every latency an HTTP upstream answers
// in; faster requests count in the first, slower ones only in +Inf.
inline constexpr size_t kExportedLatencyFirst = 31;  // upper edge 63 µs
inline constexpr size_t kExportedLatencyLast = 191;  // upper edge 67,108,863 µs
// The "le" label of analysis bucket `b`: its upper edge in seconds, e.g. "0.000063".
std::string latencyLe(size_t b);

// ---- Queries ------------------------------------------------------------------------------------

// A PromQL string literal: "..." with backslash and double quote escaped.
std::string promqlString(std::string_view value);
// {route="...",rollout="..."}
std::string rolloutSelector(const std::string& route, const std::string& id);

// Every series of the evidence of the interval ending at `at_ms` (summed over the replicas), as
// one query: judged requests and errors and the latency buckets by variant, shadow comparisons
// and mismatches, each tagged with a label `series` ("judged", "errors", "latency",
// "shadow_compared", "shadow_mismatched"). Each is, per replica, the counter at the interval's
// end minus the counter one interval earlier (the latest samples at or before those times), or
// the whole counter when it went down (a restart) or did not exist then. Consecutive intervals
// tile exactly and the counts are integers. Not increase(): it extrapolates to the window's
// edges, scaling counts by up to interval / (interval - scrape interval), which would overstate
// the evidence the statistics weigh, and it sees nothing in a window holding one sample. With
// `at_ms`, pinned there with `@`; without, for a range query whose steps are the intervals' ends.
std::string evidenceQuery(const std::string& route, const std::string& id, uint64_t interval_ms,
                          std::optional<int64_t> at_ms);
// The earliest start any replica exported for this rollout within `lookback_ms`.
std::string startQuery(const std::string& route, const std::string& id, uint64_t lookback_ms);
// Every operator event any replica exported within `lookback_ms` (one series per event).
std::string eventsQuery(const std::string& route, const std::string& id, uint64_t lookback_ms);

// Prometheus durations and times: "30s", "500ms"; "1700000000.123".
std::string promDuration(uint64_t ms);
std::string promTime(int64_t unix_ms);

// The path and query of GET /api/v1/query (at `time_ms`) and /api/v1/query_range (from
// `start_ms` to `end_ms` every `step_ms`), with the query percent-encoded. The client puts the
// prometheus_url's own path (e.g. "/prometheus") in front.
std::string instantQueryTarget(std::string_view query, int64_t time_ms);
std::string rangeQueryTarget(std::string_view query, int64_t start_ms, int64_t end_ms,
                             uint64_t step_ms);

// ---- Answers ------------------------------------------------------------------------------------

using PromLabels = std::map<std::string, std::string>;
struct PromSeries {
  PromLabels labels;
  std::vector<std::pair<int64_t, double>> points;  // (ms, value); one for a vector or a scalar
};
struct PromAnswer {
  bool ok = false;
  std::string error;  // why not ok: Prometheus's own error, the HTTP status, or a parse failure
  std::vector<PromSeries> series;
};
// Parses an answer of the HTTP API (vector, matrix or scalar). "NaN" and "+Inf" values are kept
// (callers decide); an answer without "status": "success" is an error.
PromAnswer parsePromAnswer(int http_status, std::string_view body);

// One interval's evidence from the evidence query's series at one time (value per series).
// Counts are rounded to the nearest integer (NaN and negatives count 0), the latency buckets
// are made non-decreasing in `le` before they are turned into per-bucket counts (a replica
// scraped between two buckets' reads cannot make a bucket negative), and errors are capped at
// the requests (mismatches at the comparisons).
IntervalEvidence evidenceFromSeries(const std::vector<std::pair<const PromLabels*, double>>& series,
                                    config::Variant variant, config::Variant baseline);
// The evidence of each step of a range answer, by the step's time (ms). A step no series has
// a point at gets no entry (no traffic: the caller counts it as empty evidence).
std::map<int64_t, IntervalEvidence> evidenceByTime(const PromAnswer& answer,
                                                   config::Variant variant,
                                                   config::Variant baseline);

// ---- Intervals ----------------------------------------------------------------------------------

// T_k = start + k x interval.
int64_t intervalEndMs(int64_t start_ms, uint64_t interval_ms, uint64_t k);
// The largest k with T_k + lag <= now (0 when none).
uint64_t evaluableIntervals(int64_t now_ms, int64_t start_ms, uint64_t interval_ms,
                            uint64_t lag_ms);

// ---- Operator events ----------------------------------------------------------------------------

// One operator call as exported by the replica that took it
// (switchyard_rollout_operator_event_time_seconds{replica,seq,event,slot,to,reason} = at).
struct FleetEvent {
  std::string replica;  // the random id of the process that took it
  uint64_t seq = 0;     // 1, 2, ... per replica
  RolloutCommand command = RolloutCommand::Pause;
  uint64_t slot = 0;     // applied after this many intervals were evaluated
  int64_t at_ms = 0;     // wall clock where it was taken
  bool to_last = false;  // promote ?to=100
  std::string reason;
};
// The order every replica applies events in: by slot, then time, replica and seq.
bool fleetEventBefore(const FleetEvent& a, const FleetEvent& b);
// The events in an answer of eventsQuery(); series that do not parse are skipped.
std::vector<FleetEvent> eventsFromAnswer(const PromAnswer& answer);
const char* commandName(RolloutCommand command);
std::optional<RolloutCommand> parseCommand(std::string_view name);

}  // namespace sy::proxy
