#pragma once
// What every exchange of one worker shares: the worker's services, its pools and shadow side,
// and the current config generation (snapshot + the per-route state made for it). The worker
// owns one and replaces `snapshot` and `metrics` together when a new generation is published;
// an exchange copies the snapshot pointer when its head arrives and keeps it to its end.
//
// Thread: worker-local.

#include <memory>

#include "config/snapshot.h"
#include "proxy/net/worker_context.h"
#include "proxy/observe/access_log.h"
#include "proxy/observe/metrics.h"
#include "proxy/shadow/mirror.h"
#include "proxy/upstream/pool_set.h"

namespace sy::proxy {

// Where an exchange's access-log line goes (the worker batches them).
class AccessLogSink {
 public:
  virtual ~AccessLogSink() = default;
  virtual bool enabled() const = 0;
  virtual void log(const AccessLogEntry& entry) = 0;
};

struct ExchangeContext {
  ExchangeContext(WorkerContext& w, PoolSet& p, Mirror& m, AccessLogSink& l)
      : worker(w), pools(p), mirror(m), access_log(l) {}

  WorkerContext& worker;
  PoolSet& pools;
  Mirror& mirror;
  AccessLogSink& access_log;
  config::SnapshotConstSharedPtr snapshot;                 // the current generation
  std::shared_ptr<const RouteMetricsTable> route_metrics;  // parallel to snapshot->routes

  // The metrics of route `index` of `snapshot`; index == routes.size() for unmatched requests.
  RouteMetrics& routeMetrics(size_t index) const { return *(*route_metrics)[index]; }
};

}  // namespace sy::proxy
