#pragma once
// `switchyard-ctl explain`: which variant a request with a given key gets on a route, and why.
//
// It builds the request headers the proxy would see, then calls the proxy's own
// proxy::matchRoute(), proxy::decide(), proxy::variantScore() and proxy::shadowSampled(); it
// never hashes by itself, so it cannot disagree with a running proxy on the same config.
//
// Thread: any (pure over an immutable Snapshot).

#include <array>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "config/snapshot.h"
#include "proxy/http/http_message.h"
#include "proxy/routing/splitter.h"
#include "tools/ctl/error.h"

namespace sy::ctl {

struct ExplainOptions {
  std::string route_name;  // "" = the route proxy::matchRoute() picks for host + path
  std::string host;        // also sent as the Host header when not empty
  std::string path = "/";
  // Placed in the route's first key source (a header, or a Cookie header for a cookie source).
  // Absent: the request carries no key unless --header/--cookie supply one.
  std::optional<std::string> key;
  std::vector<std::string> headers;  // extra "Name: value" headers, after the key's
  std::vector<std::string> cookies;  // extra "name=value" cookies, after the key's
  std::string client_ip;             // "" = 127.0.0.1
  // The client's country (ISO 3166-1 alpha-2); absent: looked up in the config's
  // geoip_database for client_ip, as the proxy does.
  std::optional<std::string> country;
  // Decide as the running proxy does while the route's rollout is at this stage (1-based):
  // the stage's share and the segments of stages 1..N. Absent: the configured weights, and no
  // rollout segment applies (the file alone does not say where a rollout is).
  std::optional<uint32_t> stage;
};

struct ExplainResult {
  const config::Route* route = nullptr;
  size_t route_index = 0;
  bool route_by_match = false;  // picked by host + path, not by name
  std::string host;
  std::string path;
  proxy::Headers headers;  // exactly what decide() was given
  std::string client_ip;
  bool client_ip_default = false;
  std::string salt;  // the effective salt (the route name when salt is unset)
  proxy::SplitDecision decision;
  // With Reason::Override: the decision the same request gets without overrides, i.e. what
  // its key (or fallback) alone would pick.
  std::optional<proxy::SplitDecision> without_overrides;
  // Per weighted variant, the score of the hashed key (decision.key, or without_overrides' key
  // under an override); set when that key is deterministic (a request key or the client IP).
  std::optional<std::array<proxy::VariantScore, config::kWeightedVariants>> scores;
  // The route has a shadow pool: whether the decision's key falls in its sample, as the
  // proxy's mirror samples (nullopt when the decision has no deterministic key, e.g. under an
  // override, and the proxy samples at random per request).
  std::optional<bool> shadow_sampled;
  // SPEC §13: the segments the request is in (bit i = snapshot.segments[i]) and its country.
  uint64_t segments = 0;
  config::CountryCode country = 0;
  bool country_given = false;  // --country, not the database
  const config::Snapshot* snapshot = nullptr;
  std::optional<uint32_t> stage;   // --stage
  config::Route staged_route;      // with --stage: the route as the proxy has it at that stage
  std::vector<std::string> notes;  // where the request differs from what the user typed
};

// Fails with kExitUsage on malformed --header/--cookie/--client-ip/--key values, and with
// kExitFailure when the route does not exist or nothing matches host + path.
std::variant<ExplainResult, CtlError> explain(const config::Snapshot& snapshot,
                                              const ExplainOptions& options);

std::string formatExplain(const ExplainResult& result);

// The salt decide() hashes with: the route's salt, or its name when salt is "" (SPEC §3).
std::string_view effectiveSalt(const config::Route& route);

// "header:X-User-Id" / "cookie:session" as written in the config.
std::string keySourceText(const config::KeySource& source);

}  // namespace sy::ctl
