#pragma once
// How an exchange ended (SPEC §10): one record {source, phase} per request the proxy accepted,
// written with its outcome. The access log shows it as "source/phase" ("-/-" for a normal end),
// switchyard_requests_terminated_total counts the abnormal ones, and the rollout analysis
// reads it (HAProxy's SF_ERR_* x SF_FINST_* termination state).
//
// Thread: any (plain values).

#include <cstddef>
#include <cstdint>

namespace sy::proxy {

enum class TerminationSource : uint8_t {
  None,      // "-": ended normally
  Client,    // the client closed, reset or timed out
  Upstream,  // the upstream refused, reset, timed out or sent an invalid response
  Proxy,     // the proxy decided: a limit, no route, no healthy server, a rule
};
inline constexpr size_t kTerminationSources = 4;

enum class TerminationPhase : uint8_t {
  None,      // "-": ended normally
  Head,      // while receiving the request head
  Body,      // while receiving the request body
  Connect,   // while connecting to the upstream
  Wait,      // waiting for the response head
  Response,  // while sending the response
};
inline constexpr size_t kTerminationPhases = 6;

struct Termination {
  TerminationSource source = TerminationSource::None;
  TerminationPhase phase = TerminationPhase::None;
  bool normal() const { return source == TerminationSource::None; }
};

constexpr const char* terminationSourceName(TerminationSource s) {
  switch (s) {
    case TerminationSource::None: return "-";
    case TerminationSource::Client: return "client";
    case TerminationSource::Upstream: return "upstream";
    case TerminationSource::Proxy: return "proxy";
  }
  return "-";
}

constexpr const char* terminationPhaseName(TerminationPhase p) {
  switch (p) {
    case TerminationPhase::None: return "-";
    case TerminationPhase::Head: return "head";
    case TerminationPhase::Body: return "body";
    case TerminationPhase::Connect: return "connect";
    case TerminationPhase::Wait: return "wait";
    case TerminationPhase::Response: return "response";
  }
  return "-";
}

}  // namespace sy::proxy
