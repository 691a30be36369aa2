#pragma once
// `switchyard-ctl simulate`: the shares a route's weights give over N random keys, and with a
// proposed set of weights, which keys would move where. Keys are drawn from a seeded
// std::mt19937_64 (its output is fixed by the C++ standard), so a given seed prints the same
// numbers on every machine. Each key goes through proxy::pickWeighted(), the proxy's own code.
//
// Thread: any (pure).

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <variant>

#include "config/snapshot.h"
#include "tools/ctl/error.h"

namespace sy::ctl {

using Weights = std::array<double, config::kWeightedVariants>;

struct SimulateOptions {
  uint64_t keys = 100000;
  uint64_t seed = 1;
  std::optional<Weights> new_weights;  // --weights
};

struct SimulateResult {
  std::string route;
  std::string salt;
  uint64_t keys = 0;
  uint64_t seed = 0;
  Weights weights{};
  std::array<uint64_t, config::kWeightedVariants> counts{};
  std::optional<Weights> new_weights;
  std::array<uint64_t, config::kWeightedVariants> new_counts{};
  // moves[from][to]: keys whose variant changes from `from` to `to` under new_weights.
  std::array<std::array<uint64_t, config::kWeightedVariants>, config::kWeightedVariants> moves{};
  uint64_t moved = 0;
};

// Requires options.keys > 0 and weights with a positive sum (as validation guarantees).
SimulateResult simulate(const config::Route& route, const SimulateOptions& options);

std::string formatSimulate(const SimulateResult& result);

// The k-th key simulate() draws is simulationKey(rng()) for the k-th output of
// std::mt19937_64(seed): 16 lower-case hex digits.
std::string simulationKey(uint64_t random);

// The keys simulate() draws, in order: `rollout preview` walks the same keys for the same seed.
class SimulationKeys {
 public:
  explicit SimulationKeys(uint64_t seed) : rng_(seed) {}
  std::string next() { return simulationKey(rng_()); }

 private:
  std::mt19937_64 rng_;
};

// Parses "blue=90,canary=10"; variants not named get 0. Rejects unknown or repeated names,
// "shadow" (it takes no weight), values that are not finite numbers >= 0, an all-zero set, and
// a positive weight for a variant the route has no upstream pool for (validation would reject
// that config). Errors are usage errors.
std::variant<Weights, CtlError> parseWeights(std::string_view text, const config::Route& route);

// Whether weighted rendezvous hashing can move any key from variant `from` to `to` when the
// weights change from `before` to `after`: only when `to` gained on `from`, i.e.
// after[to] / after[from] > before[to] / before[from] (SPEC §4.3, proof in proxy/splitter.cc).
bool moveAllowed(const Weights& before, const Weights& after, size_t from, size_t to);

// The share of keys that must move whatever the scheme: the total of the share increases.
double minimumMoveShare(const Weights& before, const Weights& after);

}  // namespace sy::ctl
