// `switchyard-ctl simulate`: counts, not formulas, so what it prints is what the proxy's code
// does with these weights; the formulas (expected share, minimum move, which moves are
// possible) are printed next to the counts so an operator can see that they agree.

#include "tools/ctl/simulate.h"

#include <cmath>
#include <cstdlib>
#include <vector>

#include "proxy/routing/splitter.h"
#include "tools/ctl/explain.h"
#include "tools/ctl/format.h"

namespace sy::ctl {
namespace {

constexpr size_t kN = config::kWeightedVariants;

double positive(double w) { return w > 0 ? w : 0.0; }

double sumOf(const Weights& w) {
  double s = 0;
  for (double x : w) s += positive(x);
  return s;
}

std::string weightsLine(const Weights& w) {
  std::string out;
  for (size_t i = 0; i < kN; ++i) {
    if (!out.empty()) out += " ";
    out += std::string(config::kVariantNames[i]) + "=" + weightText(w[i]);
  }
  return out;
}

double fraction(uint64_t n, uint64_t total) {
  return total == 0 ? 0.0 : static_cast<double>(n) / static_cast<double>(total);
}

}  // namespace

std::string simulationKey(uint64_t random) {
  return strFormat("%016llx", static_cast<unsigned long long>(random));
}

SimulateResult simulate(const config::Route& route, const SimulateOptions& options) {
  SimulateResult r;
  r.route = route.name;
  r.salt = std::string(effectiveSalt(route));
  r.keys = options.keys;
  r.seed = options.seed;
  r.weights = route.weights;
  r.new_weights = options.new_weights;

  SimulationKeys keys(options.seed);
  for (uint64_t k = 0; k < options.keys; ++k) {
    const std::string key = keys.next();
    const auto before = static_cast<size_t>(proxy::pickWeighted(r.salt, r.weights, key));
    ++r.counts[before];
    if (r.new_weights) {
      const auto after = static_cast<size_t>(proxy::pickWeighted(r.salt, *r.new_weights, key));
      ++r.new_counts[after];
      if (after != before) {
        ++r.moves[before][after];
        ++r.moved;
      }
    }
  }
  return r;
}

bool moveAllowed(const Weights& before, const Weights& after, size_t from, size_t to) {
  // Cross-multiplied so that zero weights need no special case: a variant with no keys
  // before has none to lose, and one with weight 0 after takes none.
  return positive(after[to]) * positive(before[from]) >
         positive(before[to]) * positive(after[from]);
}

double minimumMoveShare(const Weights& before, const Weights& after) {
  const double sb = sumOf(before);
  const double sa = sumOf(after);
  double total = 0;
  for (size_t i = 0; i < kN; ++i) {
    const double gain = positive(after[i]) / sa - positive(before[i]) / sb;
    if (gain > 0) total += gain;
  }
  return total;
}

std::variant<Weights, CtlError> parseWeights(std::string_view text, const config::Route& route) {
  Weights w{};
  std::array<bool, kN> seen{};
  const std::string_view all = text;
  // Every comma separates two items, so "blue=1," has an empty (malformed) last item.
  for (bool more = true; more;) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    more = comma != std::string_view::npos;
    if (more) text.remove_prefix(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return usageError("--weights: expected variant=weight[,...], got \"" + std::string(item) +
                        "\"");
    }
    const std::string name(item.substr(0, eq));
    const std::string value(item.substr(eq + 1));
    const std::optional<config::Variant> v = config::parseVariant(name);
    if (!v || *v == config::Variant::Shadow) {
      return usageError("--weights: \"" + name + "\" is not blue, green or canary");
    }
    const size_t i = static_cast<size_t>(*v);
    if (seen[i]) return usageError("--weights: " + name + " is given twice");
    seen[i] = true;
    char* end = nullptr;
    const double x = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !std::isfinite(x) || x < 0) {
      return usageError("--weights: " + name + ": not a number >= 0: \"" + value + "\"");
    }
    w[i] = x;
  }
  if (!(sumOf(w) > 0)) {
    return usageError("--weights: \"" + std::string(all) + "\": at least one weight must be > 0");
  }
  for (size_t i = 0; i < kN; ++i) {
    if (w[i] > 0 && route.pools[i] == nullptr) {
      return usageError(std::string("--weights: ") + config::kVariantNames[i] +
                        " has no upstream " + "pool in route \"" + route.name +
                        "\"; the config would be rejected");
    }
  }
  return w;
}

std::string formatSimulate(const SimulateResult& r) {
  std::string out = strFormat("route %s: %s random keys (seed %llu), salt \"%s\"\n",
                              r.route.c_str(), groupDigits(r.keys).c_str(),
                              static_cast<unsigned long long>(r.seed), r.salt.c_str());
  const double sum = sumOf(r.weights);
  Table t("lrrrrlrrrr");
  if (!r.new_weights) {
    t.row({"variant", "weight", "expected", "keys", "share"});
    for (size_t i = 0; i < kN; ++i) {
      t.row({config::kVariantNames[i], weightText(r.weights[i]),
             percent(positive(r.weights[i]) / sum), groupDigits(r.counts[i]),
             percent(fraction(r.counts[i], r.keys))});
    }
    out += "\n" + t.render("  ");
    return out;
  }

  const Weights& nw = *r.new_weights;
  const double new_sum = sumOf(nw);
  t.row({"variant", "weight", "expected", "keys", "share", "", "weight", "expected", "keys",
         "share"});
  for (size_t i = 0; i < kN; ++i) {
    t.row({config::kVariantNames[i], weightText(r.weights[i]),
           percent(positive(r.weights[i]) / sum), groupDigits(r.counts[i]),
           percent(fraction(r.counts[i], r.keys)), "->", weightText(nw[i]),
           percent(positive(nw[i]) / new_sum), groupDigits(r.new_counts[i]),
           percent(fraction(r.new_counts[i], r.keys))});
  }
  out += "weights now " + weightsLine(r.weights) + " -> proposed " + weightsLine(nw) + "\n\n";
  out += t.render("  ");

  out += strFormat(
      "\nkeys that would move: %s of %s (%s); the change of shares forces at least %s\n",
      groupDigits(r.moved).c_str(), groupDigits(r.keys).c_str(),
      percent(fraction(r.moved, r.keys)).c_str(), percent(minimumMoveShare(r.weights, nw)).c_str());

  // Every pair a key can move along (SPEC §4.3) with its count, "of its variant" being the
  // part of that variant's users who would switch; then any pair that moved although it
  // cannot, which never prints unless the splitter is broken.
  std::string possible;
  std::string impossible;
  size_t impossible_pairs = 0;
  for (size_t from = 0; from < kN; ++from) {
    for (size_t to = 0; to < kN; ++to) {
      if (from == to) continue;
      const uint64_t n = r.moves[from][to];
      const std::string entry = strFormat(
          "  %s -> %s: %s (%s of keys, %s of %s's)\n", config::kVariantNames[from],
          config::kVariantNames[to], groupDigits(n).c_str(), percent(fraction(n, r.keys)).c_str(),
          percent(fraction(n, r.counts[from])).c_str(), config::kVariantNames[from]);
      if (moveAllowed(r.weights, nw, from, to)) {
        possible += entry;
      } else {
        ++impossible_pairs;
        if (n > 0) impossible += entry;
      }
    }
  }
  out += possible;
  if (impossible_pairs > 0) {
    out += wrapText(possible.empty()
                        ? "no key can move: every ratio between two weights stays the same"
                        : "no other pair can move a key (a key moves only to a variant whose "
                          "weight grew relative to its own variant's)",
                    "", 2);
  }
  if (!impossible.empty()) out += "UNEXPECTED moves (the splitter is broken):\n" + impossible;

  // What SPEC §4.3 promises for this change, in words. The promises are about one weight at
  // a time; with several changes only the pair rule above holds.
  std::vector<size_t> changed;
  for (size_t i = 0; i < kN; ++i) {
    if (positive(r.weights[i]) != positive(nw[i])) changed.push_back(i);
  }
  if (changed.size() == 1) {
    const size_t i = changed[0];
    const char* name = config::kVariantNames[i];
    const std::string a = weightText(positive(r.weights[i]));
    const std::string b = weightText(positive(nw[i]));
    if (positive(nw[i]) == 0) {
      out += wrapText(strFormat("only %s changed (%s -> 0): all its keys leave, spread over the "
                                "others by weight; set back to %s, it gets exactly these keys "
                                "back",
                                name, a.c_str(), a.c_str()),
                      "", 2);
    } else if (positive(r.weights[i]) == 0) {
      out += wrapText(strFormat("only %s changed (0 -> %s): keys only join it, taken from the "
                                "others by weight; they are exactly the keys it had whenever it "
                                "was at %s before",
                                name, b.c_str(), b.c_str()),
                      "", 2);
    } else {
      const bool grows = positive(nw[i]) > positive(r.weights[i]);
      out += wrapText(strFormat("only %s changed (%s -> %s): keys only %s it, never between the "
                                "others",
                                name, a.c_str(), b.c_str(), grows ? "join" : "leave"),
                      "", 2);
    }
  } else if (changed.size() > 1 && !possible.empty()) {
    std::string list;
    for (size_t i : changed) {
      if (!list.empty()) list += ", ";
      list += strFormat("%s %s -> %s", config::kVariantNames[i],
                        weightText(positive(r.weights[i])).c_str(),
                        weightText(positive(nw[i])).c_str());
    }
    out += wrapText("several weights changed (" + list +
                        "): keys move only along the pairs "
                        "above; changed one at a time, each step would move no more keys than its "
                        "change of shares forces",
                    "", 2);
  }
  return out;
}

}  // namespace sy::ctl
