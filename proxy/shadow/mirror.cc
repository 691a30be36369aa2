#include "proxy/shadow/mirror.h"

#include <algorithm>

#include "common/log.h"
#include "proxy/routing/splitter.h"

namespace sy::proxy {
namespace {}  // namespace

// ---- DiffLog -------------------------------------------------------------------------------

void DiffLog::add(ShadowDiff diff) {
  std::lock_guard<std::mutex> lock(mutex_);
  diffs_.push_front(std::move(diff));
  if (diffs_.size() > kCapacity) diffs_.pop_back();
}

std::vector<ShadowDiff> DiffLog::latest() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {diffs_.begin(), diffs_.end()};
}

// ---- comparison ----------------------------------------------------------------------------

void ResponseSummary::setHead(const ResponseHead& head, const config::ShadowSettings& settings,
                              std::string_view variant_header) {
  status_ = head.status;
  headers_.clear();
  for (const Header& h : head.headers) {
    // Framing and hop-by-hop fields describe the connection, not the answer; the variant
    // header differs by construction; the rest is compared unless the route ignores it.
    if (isHopByHop(h.name, head.headers) || equalsIgnoreCase(h.name, "content-length") ||
        (!variant_header.empty() && equalsIgnoreCase(h.name, variant_header))) {
      continue;
    }
    std::string name = asciiLowered(h.name);
    if (std::find(settings.ignore_headers.begin(), settings.ignore_headers.end(), name) !=
        settings.ignore_headers.end()) {
      continue;
    }
    headers_.emplace_back(std::move(name), h.value);
  }
  std::sort(headers_.begin(), headers_.end());
}

std::vector<std::string> differingHeaders(const ResponseSummary& a, const ResponseSummary& b) {
  std::vector<std::pair<std::string, std::string>> only;
  std::set_symmetric_difference(a.headers().begin(), a.headers().end(), b.headers().begin(),
                                b.headers().end(), std::back_inserter(only));
  std::vector<std::string> names;
  for (auto& [name, value] : only) names.push_back(name);
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

// ---- ShadowRequest -------------------------------------------------------------------------

ShadowRequest::ShadowRequest(Mirror& mirror, config::SnapshotConstSharedPtr snapshot,
                             const config::Route& route, RouteMetrics& metrics,
                             std::unique_ptr<UpstreamConn> conn)
    : mirror_(mirror),
      snapshot_(std::move(snapshot)),
      route_(route),
      metrics_(metrics),
      conn_(std::move(conn)),
      compare_(route.shadow->compare) {
  conn_->attach(this);
}

ShadowRequest::~ShadowRequest() {
  if (conn_) {
    conn_->attach(nullptr);
    UpstreamPool& pool = conn_->pool();
    pool.release(std::move(conn_), false);
  }
}

void ShadowRequest::requestBody(std::string_view data) {
  if (shadow_done_ || !conn_) return;
  if (conn_->client().bodyBytesSent() + data.size() > route_.shadow->max_body_bytes) {
    finishShadow(ShadowResult::Skipped);  // too big to copy: the primary goes on alone
    return;
  }
  conn_->client().sendBody(data);
  conn_->transport().flush();
}

void ShadowRequest::requestComplete() {
  request_complete_ = true;
  if (shadow_done_ || !conn_) return;
  // The copy goes without the request's trailers, and the shadow's response trailers are not
  // compared: a comparison is of status, headers and body digest (ResponseSummary).
  conn_->client().endRequest({});
  conn_->transport().flush();
  conn_->armResponseTimeouts(snapshot_->server.timeouts.upstream_response_ms, true);
}

void ShadowRequest::primaryResponseHead(const ResponseHead& head) {
  if (compare_) primary_.setHead(head, *route_.shadow, snapshot_->server.variant_header);
}

void ShadowRequest::primaryResponseComplete() {
  primary_attached_ = false;
  if (compare_) primary_.finish();
  compareIfReady();
  maybeDone();
}

void ShadowRequest::primaryAborted() {
  primary_attached_ = false;
  compare_ = false;
  if (!request_complete_ && !shadow_done_) {
    finishShadow(ShadowResult::Skipped);  // the copy would be a truncated request
  }
  maybeDone();
}

void ShadowRequest::onUpstreamEvent(short events) {
  if (events & BEV_EVENT_CONNECTED) {
    conn_->setConnected();
    conn_->armResponseTimeouts(snapshot_->server.timeouts.upstream_response_ms, request_complete_);
    return;
  }
  if (!conn_->connected()) {
    SY_LOG(Debug, "shadow %s: connect failed", conn_->address().text.c_str());
  }
  if (events & BEV_EVENT_EOF) {
    onUpstreamRead();  // what arrived before the EOF
    if (shadow_done_) return;
    if (conn_->client().readEof() == Http1Client::Result::Complete) {
      shadow_.finish();
      finishShadow(ShadowResult::Completed);
      return;
    }
  }
  finishShadow(ShadowResult::Failed);
}

void ShadowRequest::onUpstreamRead() {
  if (shadow_done_) return;
  switch (conn_->client().readResponse([] { return false; })) {
    case Http1Client::Result::Complete:
      shadow_.finish();
      finishShadow(ShadowResult::Completed);
      return;
    case Http1Client::Result::Error: finishShadow(ShadowResult::Failed); return;
    case Http1Client::Result::NeedMore:
    case Http1Client::Result::Paused: return;
  }
}

void ShadowRequest::onResponseHead(const ResponseHead& head, BodyFraming, uint64_t) {
  shadow_.setHead(head, *route_.shadow, snapshot_->server.variant_header);
}

void ShadowRequest::finishShadow(ShadowResult result) {
  if (shadow_done_) return;
  shadow_done_ = true;
  shadow_ok_ = result == ShadowResult::Completed;
  ShadowCounters& counters = metrics_.shadow(mirror_.worker().index());
  counters.record(result);
  if (counters.in_flight > 0) --counters.in_flight;
  if (conn_) {
    conn_->attach(nullptr);
    const bool reusable = shadow_ok_ && conn_->client().reusable();
    UpstreamPool& pool = conn_->pool();
    pool.release(std::move(conn_), reusable);
  }
  compareIfReady();
  maybeDone();
}

void ShadowRequest::compareIfReady() {
  if (!compare_ || !shadow_ok_ || !primary_.complete() || !shadow_.complete()) return;
  compare_ = false;  // once
  ShadowDiff diff;
  if (primary_.status() != shadow_.status()) diff.kinds.push_back(MismatchKind::Status);
  if (primary_.digest() != shadow_.digest()) diff.kinds.push_back(MismatchKind::Body);
  diff.headers = differingHeaders(primary_, shadow_);
  if (!diff.headers.empty()) diff.kinds.push_back(MismatchKind::Headers);
  ShadowCounters& counters = metrics_.shadow(mirror_.worker().index());
  bump(counters.compared);
  if (diff.kinds.empty()) return;
  bump(counters.mismatched);
  for (MismatchKind k : diff.kinds) counters.record(k);
  diff.ts = time(nullptr);
  diff.route = route_.name;
  diff.method = method_;
  diff.path = path_;
  diff.request_id = request_id_;
  diff.primary_status = primary_.status();
  diff.shadow_status = shadow_.status();
  diff.primary_digest = primary_.digest();
  diff.shadow_digest = shadow_.digest();
  mirror_.diffs().add(std::move(diff));
}

void ShadowRequest::maybeDone() {
  if (!primary_attached_ && shadow_done_) mirror_.finished(this);
}

// ---- Mirror --------------------------------------------------------------------------------

Mirror::~Mirror() {
  // Drop copies still in flight before the pools they point into.
  in_flight_.clear();
  pools_.retireAll();
}

void Mirror::setSnapshot(const config::Snapshot& snapshot, const HealthTable& health) {
  std::vector<const config::Pool*> shadow_pools;
  for (const config::Route& r : snapshot.routes) {
    const config::Pool* cfg = r.pools[static_cast<size_t>(config::Variant::Shadow)];
    if (cfg != nullptr) shadow_pools.push_back(cfg);
  }
  pools_.update(shadow_pools, health);
}

ShadowRequest* Mirror::start(const ShadowStart& s) {
  const config::Route& route = s.route;
  const config::Pool* cfg = route.pools[static_cast<size_t>(config::Variant::Shadow)];
  if (!route.shadow || cfg == nullptr) return nullptr;
  const config::ShadowSettings& settings = *route.shadow;
  const std::string_view salt = route.salt.empty() ? std::string_view(route.name) : route.salt;
  // On the split key, so a user's whole session is mirrored or none of it; at random (in
  // millionths) when there is no key.
  const bool sampled = s.key.empty()
                           ? static_cast<double>(s.random % 1000000) < settings.percent * 10000.0
                           : shadowSampled(salt, s.key, settings.percent);
  if (!sampled) return nullptr;
  ShadowCounters& counters = s.metrics.shadow(worker_.index());
  if (s.rewrite.framing == BodyFraming::ContentLength &&
      s.rewrite.content_length > settings.max_body_bytes) {
    counters.record(ShadowResult::Skipped);
    return nullptr;
  }
  if (counters.in_flight >= settings.max_in_flight) {
    counters.record(ShadowResult::Dropped);
    return nullptr;
  }
  UpstreamPool* pool = pools_.find(cfg);
  if (pool == nullptr) return nullptr;
  std::unique_ptr<UpstreamConn> conn =
      pool->acquire(-1, s.snapshot->server.timeouts.upstream_connect_ms);
  if (!conn) {
    // Every shadow server is down: a copy that was due, and failed at once.
    counters.record(ShadowResult::Sent);
    counters.record(ShadowResult::Failed);
    return nullptr;
  }
  std::unique_ptr<ShadowRequest> req(
      new ShadowRequest(*this, s.snapshot, route, s.metrics, std::move(conn)));
  req->method_ = s.head.method;
  req->path_ = s.head.target;
  req->request_id_ = s.rewrite.request_id.empty()
                         ? std::string(findHeader(s.head.headers, "x-request-id").value_or(""))
                         : std::string(s.rewrite.request_id);
  RequestRewrite rw = s.rewrite;
  rw.shadow = true;
  UpstreamConn& c = *req->conn_;
  c.client().begin(*req, s.head, rw, s.snapshot->server.limits.max_header_bytes);
  c.transport().enableRead();
  c.transport().flush();  // a connect in progress sends it once connected
  req->request_complete_ = s.rewrite.framing == BodyFraming::None;
  c.armResponseTimeouts(s.snapshot->server.timeouts.upstream_response_ms,
                        req->request_complete_);  // a reused keep-alive connection
  ++counters.in_flight;
  counters.record(ShadowResult::Sent);
  ShadowRequest* raw = req.get();
  in_flight_.emplace(raw, std::move(req));
  return raw;
}

void Mirror::finished(ShadowRequest* request) {
  auto it = in_flight_.find(request);
  if (it == in_flight_.end()) return;
  worker_.deferDelete(std::move(it->second));
  in_flight_.erase(it);
}

}  // namespace sy::proxy
