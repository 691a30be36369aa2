#pragma once
// GET requests to Prometheus's HTTP API for the rollouts judged through it (SPEC §14), with
// libevent's HTTP client on the main thread's event base, never on a worker. One connection
// per request (a query every second or so does not need keep-alive), a timeout on the connect
// and on every read and write, no retry: the caller asks again at its next poll.
//
// Thread: main.

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_set>

#include <event2/event.h>

#include "proxy/rollout/prometheus_api.h"

namespace sy::proxy {

class PrometheusClient {
 public:
  using Done = std::function<void(PromAnswer)>;

  explicit PrometheusClient(event_base* base) : base_(base) {}
  ~PrometheusClient();  // abandons requests under way: their `done` never runs
  PrometheusClient(const PrometheusClient&) = delete;
  PrometheusClient& operator=(const PrometheusClient&) = delete;

  // GETs `base_url` ("http://host[:port][/prefix]") + `target` ("/api/v1/..."). `done` runs
  // later on this thread, exactly once, with the parsed answer: not ok (and why) when the
  // connection failed or timed out, the status was not 200, or the body is not a successful
  // query answer. When the request cannot even be sent, `done` runs before get() returns.
  void get(const std::string& base_url, const std::string& target, uint64_t timeout_ms, Done done);

  struct Request;

 private:
  friend struct Request;
  event_base* base_;
  std::unordered_set<Request*> requests_;
};

}  // namespace sy::proxy
