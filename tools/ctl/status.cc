#include "tools/ctl/status.h"

#include <nlohmann/json.hpp>

#include "config/snapshot.h"
#include "tools/ctl/format.h"

namespace sy::ctl {
namespace {

using Json = nlohmann::json;

// A scalar as text; "-" when absent or of an unexpected type, so one odd field cannot hide the
// rest of the status.
std::string text(const Json& j, const char* key) {
  if (!j.is_object()) return "-";
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_boolean()) return it->get<bool>() ? "true" : "false";
  if (it->is_number_integer() || it->is_number_unsigned()) return it->dump();
  if (it->is_number()) return weightText(it->get<double>());
  return "-";
}

const Json& member(const Json& j, const char* key) {
  static const Json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// Requests served per variant since the proxy started, with their share of the route, next to
// the configured share: the two columns an operator compares. Blank when not reported.
std::string servedText(const Json& route, const char* variant) {
  const Json& served = member(route, "served");
  if (!served.is_object()) return "";
  const Json& n = member(served, variant);
  if (!n.is_number_unsigned()) return "-";
  uint64_t total = 0;
  for (const auto& [name, c] : served.items()) {
    if (c.is_number_unsigned()) total += c.get<uint64_t>();
  }
  // The proxy's own fraction when it sends one, else ours from the counts.
  const Json& share = member(member(route, "share"), variant);
  const double fraction = share.is_number() ? share.get<double>()
                          : total == 0
                              ? 0.0
                              : static_cast<double>(n.get<uint64_t>()) / static_cast<double>(total);
  return groupDigits(n.get<uint64_t>()) + " (" + percent(fraction) + ")";
}

std::string routesTable(const Json& routes) {
  bool with_served = false;
  for (const Json& r : routes) with_served = with_served || member(r, "served").is_object();
  Table t("lllrrr");
  t.row({"ROUTE", "VARIANT", "POOL", "WEIGHT", "SHARE", with_served ? "SERVED" : ""});
  for (const Json& r : routes) {
    const Json& weights = member(r, "weights");
    const Json& upstreams = member(r, "upstreams");
    double sum = 0;
    if (weights.is_object()) {
      for (const auto& [name, w] : weights.items()) {
        if (w.is_number() && w.get<double>() > 0) sum += w.get<double>();
      }
    }
    std::string route_name = text(r, "name");
    // Fixed variant order (blue, green, canary, shadow) rather than the JSON's: the same
    // reading order on every route.
    for (size_t v = 0; v < config::kVariants; ++v) {
      const char* name = config::kVariantNames[v];
      const std::string pool = text(upstreams, name);
      std::string weight = text(weights, name);
      if (pool == "-" && weight == "-") continue;
      std::string share = "-";
      const Json& w = member(weights, name);
      if (w.is_number() && sum > 0) share = percent(std::max(0.0, w.get<double>()) / sum);
      std::string served;
      if (v == static_cast<size_t>(config::Variant::Shadow)) {
        // The shadow takes no weight; its share is the percent of requests mirrored to it.
        weight = "mirror";
        const Json& pct = member(r, "shadow_percent");
        share = pct.is_number() ? percent(pct.get<double>() / 100.0) : "-";
      } else {
        served = servedText(r, name);
      }
      t.row({route_name, name, pool, weight, share, served});
      route_name.clear();
    }
  }
  return t.render("  ");
}

std::string poolsTable(const Json& pools, size_t& healthy, size_t& total) {
  bool with_active = false;
  for (const Json& p : pools) {
    for (const Json& s : member(p, "servers")) {
      with_active = with_active || member(s, "active").is_number();
    }
  }
  Table t("lllrl");
  t.row({"POOL", "SERVER", "HEALTH", with_active ? "ACTIVE" : "", ""});
  for (const Json& p : pools) {
    std::string pool_name = text(p, "name");
    // Without active checks "healthy" only means "not ejected by failed requests".
    const Json& checked = member(p, "health_check");
    std::string note;
    if (checked.is_boolean()) note = checked.get<bool>() ? "checked" : "no active check";
    const Json& servers = member(p, "servers");
    if (!servers.is_array() || servers.empty()) {
      t.row({pool_name, "-", "no servers", "", note});
      continue;
    }
    for (const Json& s : servers) {
      const Json& h = member(s, "healthy");
      std::string health = "unknown";
      if (h.is_boolean()) {
        ++total;
        if (h.get<bool>()) ++healthy;
        health = h.get<bool>() ? "healthy" : "UNHEALTHY";
      }
      t.row({pool_name, text(s, "address"), health, with_active ? text(s, "active") : "", note});
      pool_name.clear();
      note.clear();
    }
  }
  return t.render("  ");
}

}  // namespace

std::variant<std::string, CtlError> formatStatus(std::string_view json_text) {
  const Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return failure("the admin endpoint's /status answer is not a JSON object:\n" +
                   std::string(json_text.substr(0, 2000)));
  }
  std::string out;
  out += "switchyard " + text(j, "version") + "\n";
  out += "config      " + text(j, "config") + "\n";
  out += "generation  " + text(j, "generation") + " (loaded " + text(j, "loaded_at") + ")\n";
  if (member(j, "draining").is_boolean() && member(j, "draining").get<bool>()) {
    out += "state       DRAINING\n";
  }

  const Json& routes = member(j, "routes");
  out += "\nroutes\n";
  out += routes.is_array() && !routes.empty() ? routesTable(routes) : "  (none)\n";

  const Json& pools = member(j, "pools");
  out += "\npools\n";
  if (pools.is_array() && !pools.empty()) {
    size_t healthy = 0;
    size_t total = 0;
    out += poolsTable(pools, healthy, total);
    out += strFormat("  %zu of %zu servers healthy\n", healthy, total);
  } else {
    out += "  (none)\n";
  }
  return out;
}

}  // namespace sy::ctl
