#pragma once
// Shadow traffic (SPEC §5): a sampled copy of a request is sent to the route's shadow pool
// while the primary exchange goes on, and, with `compare`, the shadow's answer is compared
// with the primary's (status, headers, body digest).
//
// The primary never waits for, buffers for, or fails because of the shadow: the primary side
// only calls the non-blocking hooks of ShadowRequest, which copy at most max_body_bytes of
// request body into the shadow connection's buffer and hash the primary's response body as it
// streams past. What does not fit is dropped and counted. Shadow connections come from pools
// of their own, so a slow shadow never holds a primary connection.
//
// Thread: worker-local, except DiffLog (Thread: any).

#include <cstdint>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/deferred.h"
#include "config/snapshot.h"
#include "proxy/http/rewrite.h"
#include "proxy/http1/client.h"
#include "proxy/net/worker_context.h"
#include "proxy/observe/metrics.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/pool.h"
#include "proxy/upstream/pool_set.h"

namespace sy::proxy {

class Mirror;

// One shadow mismatch, as served by GET /shadow/diffs.
struct ShadowDiff {
  time_t ts = 0;
  std::string route;
  std::string method;
  std::string path;
  std::string request_id;
  std::vector<MismatchKind> kinds;
  unsigned primary_status = 0;
  unsigned shadow_status = 0;
  uint64_t primary_digest = 0;
  uint64_t shadow_digest = 0;
  std::vector<std::string> headers;  // names whose values differ (lower-case)
};

// The latest mismatches of the whole process. Written only on a mismatch, so a mutex is fine.
// Thread: any.
class DiffLog {
 public:
  static constexpr size_t kCapacity = 100;
  void add(ShadowDiff diff);
  std::vector<ShadowDiff> latest() const;  // newest first

 private:
  mutable std::mutex mutex_;  // guards diffs_
  std::deque<ShadowDiff> diffs_;
};

// What the comparison keeps of one response: status, the compared headers (lower-case name,
// value; sorted) and a running XXH3 digest of the body.
class ResponseSummary {
 public:
  ResponseSummary() { XXH3_64bits_reset(&digest_state_); }
  void setHead(const ResponseHead& head, const config::ShadowSettings& settings,
               std::string_view variant_header);
  void addBody(std::string_view data) {
    XXH3_64bits_update(&digest_state_, data.data(), data.size());
  }
  void finish() {
    digest_ = XXH3_64bits_digest(&digest_state_);
    complete_ = true;
  }
  bool complete() const { return complete_; }
  unsigned status() const { return status_; }
  uint64_t digest() const { return digest_; }
  const std::vector<std::pair<std::string, std::string>>& headers() const { return headers_; }

 private:
  unsigned status_ = 0;
  std::vector<std::pair<std::string, std::string>> headers_;
  XXH3_state_t digest_state_;
  uint64_t digest_ = 0;
  bool complete_ = false;
};

// Names of the headers whose values differ between two summaries (sorted, unique).
std::vector<std::string> differingHeaders(const ResponseSummary& a, const ResponseSummary& b);

// One mirrored request. Owned by its worker's Mirror; the primary exchange holds a plain
// pointer until it calls primaryResponseComplete() or primaryAborted(), and the object stays
// alive at least until then.
class ShadowRequest : public Deferrable,
                      private UpstreamConn::Owner,
                      private Http1Client::Callbacks {
 public:
  ~ShadowRequest() override;
  ShadowRequest(const ShadowRequest&) = delete;
  ShadowRequest& operator=(const ShadowRequest&) = delete;

  // Primary-side hooks. Cheap, non-blocking, never report failure to the caller.
  void requestBody(std::string_view data);
  void requestComplete();
  void primaryResponseHead(const ResponseHead& head);
  void primaryResponseBody(std::string_view data) {
    if (compare_) primary_.addBody(data);
  }
  void primaryResponseComplete();
  // The primary exchange ended without a complete response (its error, or the client left):
  // no comparison; an incomplete request copy is abandoned.
  void primaryAborted();

 private:
  friend class Mirror;

  ShadowRequest(Mirror& mirror, config::SnapshotConstSharedPtr snapshot, const config::Route& route,
                RouteMetrics& metrics, std::unique_ptr<UpstreamConn> conn);

  void onUpstreamRead() override;
  void onUpstreamWrite() override {}
  void onUpstreamEvent(short events) override;
  void onResponseHead(const ResponseHead& head, BodyFraming, uint64_t) override;
  void onResponseBody(std::string_view data) override { shadow_.addBody(data); }

  // The shadow side ended with `result` (Completed, Failed, Skipped).
  void finishShadow(ShadowResult result);
  void compareIfReady();
  void maybeDone();

  Mirror& mirror_;
  config::SnapshotConstSharedPtr snapshot_;  // keeps route_ alive
  const config::Route& route_;
  RouteMetrics& metrics_;
  std::unique_ptr<UpstreamConn> conn_;
  ResponseSummary primary_;
  ResponseSummary shadow_;
  std::string method_;
  std::string path_;
  std::string request_id_;
  bool compare_ = false;
  bool request_complete_ = false;
  bool primary_attached_ = true;
  bool shadow_done_ = false;
  bool shadow_ok_ = false;
};

// What the primary knows when it starts a mirror.
struct ShadowStart {
  const config::SnapshotConstSharedPtr& snapshot;
  const config::Route& route;
  RouteMetrics& metrics;
  const RequestHead& head;
  const RequestRewrite& rewrite;  // as for the primary; the copy adds X-Switchyard-Shadow: 1
  std::string_view key;           // the split key ("" = none: sample at random)
  uint64_t random;
};

// The shadow side of one worker.
class Mirror {
 public:
  Mirror(WorkerContext& worker, DiffLog& diffs) : worker_(worker), diffs_(diffs), pools_(worker) {}
  ~Mirror();
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  // Starts a copy when the request is in the route's sample and within its limits; null
  // otherwise (dropped and skipped copies are counted).
  ShadowRequest* start(const ShadowStart& start);
  // Shadow pools for a new snapshot; pools whose servers did not change carry over.
  void setSnapshot(const config::Snapshot& snapshot, const HealthTable& health);

  WorkerContext& worker() { return worker_; }
  DiffLog& diffs() { return diffs_; }
  void finished(ShadowRequest* request);

 private:
  WorkerContext& worker_;
  DiffLog& diffs_;
  PoolSet pools_;  // the shadow pools of the current snapshot
  std::unordered_map<ShadowRequest*, std::unique_ptr<ShadowRequest>> in_flight_;
};

}  // namespace sy::proxy
