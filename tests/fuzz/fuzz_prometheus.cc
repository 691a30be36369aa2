// libFuzzer target: answers of Prometheus's HTTP API as the rollouts judged through Prometheus
// read them (SPEC §14, proxy/rollout/prometheus_api.h): network input on the main thread.
//
//   bytes -> parsePromAnswer (any status) -> evidenceByTime (the evidence query's answer) and
//   eventsFromAnswer (the operator events' answer).
//
// Beyond "no crash, no sanitizer report, no exception escapes", every input is checked for:
//   - an answer is either ok or carries an error, never both or neither;
//   - evidence never has more errors than requests, or mismatches than comparisons;
//   - events come out in the fleet's order.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/rollout/prometheus_api.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using namespace sy;
using fuzz::printable;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const int status = size > 0 && data[0] == 'E' ? 400 : 200;
  const proxy::PromAnswer a = proxy::parsePromAnswer(status, body);
  FUZZ_CHECK(a.ok == a.error.empty(), "an answer is ok with an error, or neither",
             a.error + "\ninput:\n" + printable(body));
  if (!a.ok) return 0;
  for (const auto& [t, e] :
       proxy::evidenceByTime(a, config::Variant::Canary, config::Variant::Blue)) {
    FUZZ_CHECK(e.variant.errors <= e.variant.requests && e.baseline.errors <= e.baseline.requests,
               "more errors than requests", printable(body));
    FUZZ_CHECK(e.shadow_mismatched <= e.shadow_compared, "more mismatches than comparisons",
               printable(body));
  }
  const std::vector<proxy::FleetEvent> events = proxy::eventsFromAnswer(a);
  for (size_t i = 1; i < events.size(); ++i) {
    FUZZ_CHECK(!proxy::fleetEventBefore(events[i], events[i - 1]), "events out of order",
               printable(body));
  }
  return 0;
}
