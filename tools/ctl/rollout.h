#pragma once
// `switchyard-ctl rollout` (SPEC §11 "Operator tool"): the admin endpoint's /rollouts JSON as
// tables, the answer to an action (pause, resume, promote, abort, retry) in a line or two, and
// `preview`: offline, from a config file, what each stage of a route's rollout does to the
// keys, counted over the same seeded random keys `simulate` draws and split by the proxy's own
// proxy::weightsWithShare() and proxy::pickWeighted().
//
// Thread: any (pure).

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/snapshot.h"
#include "tools/ctl/error.h"
#include "tools/ctl/simulate.h"

namespace sy::ctl {

// The actions POST /rollouts/{route}/{action} accepts.
inline constexpr std::array<const char*, 5> kRolloutActions = {"pause", "resume", "promote",
                                                               "abort", "retry"};
bool isRolloutAction(std::string_view word);

// "/rollouts", "/rollouts/{route}" or "/rollouts/{route}/{action}", the route name
// percent-encoded (RFC 3986: everything but unreserved characters).
std::string rolloutPath(std::string_view route, std::string_view action = {});

// {"reason": TEXT} as JSON (escaped).
std::string reasonBody(std::string_view reason);

// GET /rollouts (an array) or GET /rollouts/{route} (one object) as text: one table of the
// rollouts (route, id, variant vs baseline, state, stage i/n, percent, since, next transition or
// what it waits for, seen/needed), then per rollout a table of its checks and its verdict.
// Missing fields print as "-"; fails only on text that is neither a JSON array nor an object.
std::variant<std::string, CtlError> formatRolloutStatus(std::string_view json_text);

// The rollout object an action answers with, in one or two lines: "ROUTE (ID): STATE, stage
// i/n, P% of traffic to VARIANT" and, when there is one, "verdict: ...".
std::variant<std::string, CtlError> formatRolloutAction(std::string_view json_text);

// The "error" of a 409 answer ({"error": "..."}), else the body as it is (trimmed).
std::string rolloutErrorText(std::string_view body);

// "500ms", "30s", "10m", "1h", "1h30m", "2h0m5s" (as written in a config; 0 -> "0s").
std::string durationText(uint64_t ms);

struct PreviewOptions {
  uint64_t keys = 100000;
  uint64_t seed = 1;
};

using VariantCounts = std::array<uint64_t, config::kWeightedVariants>;
using MoveMatrix = std::array<VariantCounts, config::kWeightedVariants>;  // [from][to]

// One row of the preview: before the rollout (share 0), a stage, or the rollback.
struct PreviewRow {
  enum class Kind : uint8_t { Before, Stage, Rollback };
  Kind kind = Kind::Stage;
  size_t stage = 0;  // 1-based for Kind::Stage
  double percent = 0.0;
  uint64_t hold_ms = 0;
  bool manual_gate = false;
  Weights weights{};
  VariantCounts counts{};
  // Keys whose variant differs from the previous row's (for Rollback: from the last stage's).
  MoveMatrix moves{};
  uint64_t moved = 0;
};

struct PreviewResult {
  std::string route;
  std::string salt;
  std::string id;
  config::Variant variant = config::Variant::Canary;
  config::Variant baseline = config::Variant::Blue;
  uint64_t keys = 0;
  uint64_t seed = 0;
  std::array<bool, config::kWeightedVariants> used{};  // variants with a pool on the route
  std::vector<PreviewRow> rows;                        // before, stage 1..n, rollback
  // Keys that moved between stages other than into the variant (never, unless the splitter
  // is broken), and keys whose variant after the rollback differs from the one before.
  uint64_t moved_elsewhere = 0;
  uint64_t not_returned = 0;
};

// Fails (exit 1) when the route has no rollout. Requires options.keys > 0.
std::variant<PreviewResult, CtlError> previewRollout(const config::Route& route,
                                                     const PreviewOptions& options);

std::string formatPreview(const PreviewResult& result);

}  // namespace sy::ctl
