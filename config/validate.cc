#include "config/validate.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <utility>

namespace sy::config {
namespace {

bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isAlnum(char c) { return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool isHostNameChar(char c) { return isAlnum(c) || c == '-' || c == '.' || c == '_'; }

bool isIpv6Literal(std::string_view text) {
  // A zone ("fe80::1%eth0") is accepted: getaddrinfo understands it, inet_pton does not.
  const std::string address(text.substr(0, text.find('%')));
  in6_addr parsed{};
  return inet_pton(AF_INET6, address.c_str(), &parsed) == 1;
}

std::string quoted(std::string_view text) { return "\"" + std::string(text) + "\""; }

// Returns why `pattern` is not a host match pattern (exact name, "*.suffix" or "[v6]"), or "".
std::string hostPatternError(std::string_view pattern) {
  if (pattern.empty()) return "must not be empty";
  if (pattern.front() == '[') {
    if (pattern.back() == ']' && isIpv6Literal(pattern.substr(1, pattern.size() - 2))) return "";
    return "invalid IPv6 address " + quoted(pattern);
  }
  std::string_view name = pattern;
  if (name.substr(0, 2) == "*.") name.remove_prefix(2);
  if (name.find(':') != std::string_view::npos) return "must not include a port";
  if (name.empty() || name.find('*') != std::string_view::npos) {
    return "a wildcard must be a leading \"*.\" followed by a domain, e.g. \"*.example.com\"";
  }
  if (!std::all_of(name.begin(), name.end(), isHostNameChar)) {
    return "invalid host name " + quoted(pattern);
  }
  return "";
}

// Whether `path` names a readable regular file. Only readability is checked here; the PEM
// contents are checked where the certificates are loaded.
std::string unreadableReason(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return std::strerror(errno);
  struct stat info {};
  const bool directory = fstat(fileno(file), &info) == 0 && S_ISDIR(info.st_mode);
  std::fclose(file);
  return directory ? "is a directory" : "";
}

// Numbers in messages as written in a config: 25, 0.5, not 25.000000.
std::string formatNumber(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

constexpr const char* kWeightedChoices = "must be \"blue\", \"green\" or \"canary\"";

std::optional<Variant> parseWeightedVariant(std::string_view name) {
  const std::optional<Variant> variant = parseVariant(name);
  if (variant == Variant::Shadow) return std::nullopt;
  return variant;
}

// Checks one RawConfig; every check appends to `errors_` and goes on, so one run reports all.
class Validator {
 public:
  Validator(const RawConfig& raw, std::vector<ConfigError>& errors) : raw_(raw), errors_(errors) {}

  void run() {
    checkServer(raw_.server.value);
    for (const RawListener& listener : raw_.listeners) checkListener(listener);
    checkListenClashes();
    for (const RawPool& pool : raw_.pools) {
      pool_names_.insert(pool.name);
      checkPool(pool);
    }
    checkSegments();
    std::map<std::string, const Origin*> route_names;
    const RawRoute* first_rollout = nullptr;
    for (const RawRoute& route : raw_.routes) {
      checkRoute(route);
      // A rollout judged through Prometheus keeps no journal (SPEC §14).
      if (route.rollout.ok && first_rollout == nullptr && !judgedByPrometheus(route)) {
        first_rollout = &route;
      }
      if (!route.name.ok || route.name.value.empty()) continue;
      auto [first, inserted] = route_names.emplace(route.name.value, &route.name.origin);
      if (!inserted) {
        error(route.name.origin, "duplicate route name " + quoted(route.name.value) +
                                     " (first defined at line " +
                                     std::to_string(first->second->line) + ")");
      }
    }
    if (first_rollout != nullptr) checkStateDir(*first_rollout);
  }

 private:
  void error(const Origin& origin, std::string message) {
    errors_.push_back(errorAt(raw_.file, origin, std::move(message)));
  }

  template <class T>
  void checkRequired(const Field<T>& field) {
    if (!field.present) error(field.origin, "is required");
  }

  template <class T>
  void checkPositive(const Field<T>& field) {
    if (field.ok && field.value == 0) error(field.origin, "must be > 0");
  }

  void checkAddress(const Field<std::string>& field) {
    std::string why;
    if (field.ok && !parseHostPort(field.value, &why)) error(field.origin, why);
  }

  void checkReadableFile(const Field<std::string>& field) {
    if (!field.ok || field.value.empty()) return;
    const std::string path = resolveFilePath(raw_.file, field.value);
    const std::string why = unreadableReason(path);
    if (!why.empty()) error(field.origin, "cannot read " + quoted(path) + ": " + why);
  }

  void checkRegex(const Field<std::string>& field) {
    if (!field.ok) return;
    const RE2 regex(field.value, regexOptions());
    if (!regex.ok()) error(field.origin, "invalid RE2 pattern: " + regex.error());
  }

  void checkToken(const Field<std::string>& field, const char* what) {
    if (field.ok && !isToken(field.value)) {
      error(field.origin, std::string("must be a valid ") + what + " (an RFC 9110 token)");
    }
  }

  void checkServer(const RawServer& server) {
    if (server.listen.ok) {
      for (const Field<std::string>& address : server.listen.value) checkAddress(address);
      if (server.listen.value.empty() && raw_.listeners.empty()) {
        error(server.listen.origin, "must not be empty when there is no [[listener]]");
      }
    }
    if (server.admin.ok && !server.admin.value.empty()) checkAddress(server.admin);
    if (server.variant_header.ok && !server.variant_header.value.empty()) {
      checkToken(server.variant_header, "header name");
    }
    const RawTimeouts& timeouts = server.timeouts.value;
    // A zero timeout would be ambiguous (never, or at once?); drain_timeout_ms = 0 is the one
    // meaningful zero: exit without waiting.
    checkPositive(timeouts.client_header_ms);
    checkPositive(timeouts.client_idle_ms);
    checkPositive(timeouts.upstream_connect_ms);
    checkPositive(timeouts.upstream_response_ms);
    checkPositive(server.limits.value.max_header_bytes);
    checkPositive(server.limits.value.max_connections);
    const RawHttp2& http2 = server.http2.value;
    checkPositive(http2.max_concurrent_streams);
    // RFC 9113 §6.5.2: SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 is a connection error.
    if (http2.initial_window_bytes.ok &&
        (http2.initial_window_bytes.value == 0 || http2.initial_window_bytes.value > 0x7fffffffu)) {
      error(http2.initial_window_bytes.origin, "must be between 1 and 2147483647");
    }
    if (http2.max_header_list_bytes.ok && http2.max_header_list_bytes.value < 1024) {
      error(http2.max_header_list_bytes.origin, "must be >= 1024");
    }
    for (const Field<std::string>& network : server.trusted_proxies.value) {
      std::string why;
      if (network.ok && !parseCidr(network.value, &why)) error(network.origin, why);
    }
    // Whether it is a valid MaxMind DB is found when it is opened (snapshot.cc).
    checkReadableFile(server.geoip_database);
  }

  // A [[listener]] on the port of another listen address (server.listen as written, or another
  // [[listener]]) where one covers the other: the same host, or a wildcard. Both would bind
  // (SO_REUSEPORT) and the kernel would split the clients between, say, a PROXY-protocol
  // socket and a plain one. server.listen entries among themselves are all plain HTTP and not
  // checked ("0.0.0.0:80" with "[::]:80" is a common pair); the default server.listen gives way
  // instead (snapshot.cc).
  void checkListenClashes() {
    struct Seen {
      const Field<std::string>* field;
      HostPort address;
      bool listener;
    };
    std::vector<Seen> seen;
    const auto add = [&](const Field<std::string>& field, bool listener) {
      std::string ignored;
      if (!field.ok) return;
      std::optional<HostPort> address = parseHostPort(field.value, &ignored);
      if (!address) return;
      for (const Seen& other : seen) {
        if ((listener || other.listener) && other.address.port == address->port &&
            hostsOverlap(other.address, *address)) {
          error(field.origin, "listens on the same port as " + quoted(other.field->value) +
                                  " (line " + std::to_string(other.field->origin.line) + ")");
          return;
        }
      }
      seen.push_back({&field, std::move(*address), listener});
    };
    if (raw_.server.value.listen.ok) {
      for (const Field<std::string>& address : raw_.server.value.listen.value) add(address, false);
    }
    for (const RawListener& listener : raw_.listeners) add(listener.address, true);
  }

  // Literal addresses compare by value ("::0" is "::"); names by text, case-insensitively.
  static bool hostsOverlap(const HostPort& a, const HostPort& b) {
    const auto canonical = [](const std::string& host) {
      std::array<uint8_t, 16> bytes{};
      char text[INET6_ADDRSTRLEN];
      if (inet_pton(AF_INET6, host.c_str(), bytes.data()) == 1 &&
          inet_ntop(AF_INET6, bytes.data(), text, sizeof text) != nullptr) {
        return std::string(text);
      }
      std::string out = host;
      for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      return out;
    };
    const std::string x = canonical(a.host);
    const std::string y = canonical(b.host);
    const auto wildcard = [](const std::string& host) { return host == "0.0.0.0" || host == "::"; };
    return x == y || wildcard(x) || wildcard(y);
  }

  // [segments.NAME] (SPEC §13).
  void checkSegments() {
    if (raw_.segments.size() > kMaxSegments) {
      error(raw_.segments_origin, "at most " + std::to_string(kMaxSegments) +
                                      " segments are allowed, got " +
                                      std::to_string(raw_.segments.size()));
    }
    for (const RawSegment& segment : raw_.segments) {
      segment_names_.insert(segment.name);
      checkSegment(segment);
    }
  }

  void checkSegment(const RawSegment& segment) {
    if (segment.name.empty()) error(segment.origin, "a segment name must not be empty");
    if (!segment.keys_file.present && !segment.header.present && !segment.cookie.present &&
        !segment.country.present && !segment.client_ip.present) {
      error(segment.origin,
            "a segment needs at least one condition: keys_file, header or cookie (with regex), "
            "country or client_ip");
    }
    if (segment.keys_file.ok && segment.keys_file.value.empty()) {
      error(segment.keys_file.origin, "must not be empty");
    }
    checkReadableFile(segment.keys_file);
    if (segment.header.present && segment.cookie.present) {
      error(segment.cookie.origin, "only one of header or cookie is allowed in a segment");
    }
    checkToken(segment.header, "header name");
    checkToken(segment.cookie, "cookie name");
    if (segment.header.present || segment.cookie.present) {
      if (!segment.regex.present) error(segment.regex.origin, "is required with header or cookie");
      checkRegex(segment.regex);
    } else if (segment.regex.present) {
      error(segment.regex.origin, "needs header or cookie (the value the pattern is matched with)");
    }
    if (segment.country.present) {
      if (segment.country.ok && segment.country.value.empty()) {
        error(segment.country.origin, "must list at least one country code");
      }
      for (const Field<std::string>& code : segment.country.value) {
        std::string why;
        if (code.ok && !parseCountryCode(code.value, &why)) error(code.origin, why);
      }
      const Field<std::string>& database = raw_.server.value.geoip_database;
      if (!database.present || (database.ok && database.value.empty())) {
        error(segment.country.origin,
              "needs server.geoip_database (a MaxMind DB the client's country is read from)");
      }
    }
    if (segment.client_ip.present) {
      if (segment.client_ip.ok && segment.client_ip.value.empty()) {
        error(segment.client_ip.origin, "must list at least one network");
      }
      for (const Field<std::string>& network : segment.client_ip.value) {
        std::string why;
        if (network.ok && !parseCidr(network.value, &why)) error(network.origin, why);
      }
    }
  }

  // `field` must name a [segments.NAME].
  void checkSegmentName(const Field<std::string>& field) {
    if (field.ok && segment_names_.count(field.value) == 0) {
      std::string known;
      for (const std::string& name : segment_names_) known += (known.empty() ? "" : ", ") + name;
      error(field.origin, "no segment named " + quoted(field.value) + " in [segments] (" +
                              (known.empty() ? "none is defined" : "defined: " + known) + ")");
    }
  }

  void checkCertificate(const RawCertificate& cert, bool with_names) {
    if (with_names) {
      checkRequired(cert.names);
      if (cert.names.ok && cert.names.value.empty()) {
        error(cert.names.origin, "must list at least one name");
      }
      for (const Field<std::string>& name : cert.names.value) {
        const std::string why = name.ok ? hostPatternError(name.value) : "";
        if (!why.empty()) error(name.origin, why);
      }
    }
    checkRequired(cert.cert);
    checkRequired(cert.key);
    checkReadableFile(cert.cert);
    checkReadableFile(cert.key);
  }

  void checkListener(const RawListener& listener) {
    checkRequired(listener.address);
    checkAddress(listener.address);
    // Without tls, a plain-HTTP listener (SPEC §13's proxy_protocol listener).
    if (listener.tls.ok) checkCertificate(listener.tls.value, false);
    if (!listener.tls.present && !listener.sni.empty()) {
      error(listener.sni.front().origin, "needs listener.tls (SNI certificates are for TLS)");
    }
    for (const RawCertificate& cert : listener.sni) checkCertificate(cert, true);
  }

  void checkPool(const RawPool& pool) {
    if (pool.name.empty()) error(pool.origin, "a pool name must not be empty");
    checkRequired(pool.servers);
    if (pool.servers.ok && pool.servers.value.empty()) {
      error(pool.servers.origin, "must list at least one server");
    }
    for (const Field<std::string>& server : pool.servers.value) checkAddress(server);
    if (pool.balance.ok && pool.balance.value != "round_robin" &&
        pool.balance.value != "least_conn") {
      error(pool.balance.origin, "must be \"round_robin\" or \"least_conn\"");
    }
    checkReadableFile(pool.ca_file);
    if (pool.health.ok) {
      const RawHealth& health = pool.health.value;
      if (health.path.ok && (health.path.value.empty() || health.path.value.front() != '/')) {
        error(health.path.origin, "must start with \"/\"");
      }
      checkPositive(health.interval_ms);
      checkPositive(health.timeout_ms);
      checkPositive(health.unhealthy_after);
      checkPositive(health.healthy_after);
    }
  }

  // A route naming `variant` somewhere (override, failover, fallback) needs a pool for it.
  void checkVariantHasPool(const RawRoute& route, const Origin& origin, Variant variant) {
    const Field<std::string>& pool = route.upstreams.value.pool[static_cast<size_t>(variant)];
    if (!pool.present) {
      error(origin, std::string("needs a pool, but ") + route.origin.key + ".upstreams." +
                        variantName(variant) + " is not set");
    }
  }

  // `field` must name one of blue/green/canary with a pool.
  void checkVariantName(const RawRoute& route, const Field<std::string>& field) {
    if (!field.ok) return;
    const std::optional<Variant> variant = parseWeightedVariant(field.value);
    if (!variant) {
      error(field.origin, kWeightedChoices);
    } else {
      checkVariantHasPool(route, field.origin, *variant);
    }
  }

  void checkMatch(const RawMatch& match) {
    if (match.host.ok && !match.host.value.empty()) {
      const std::string why = hostPatternError(match.host.value);
      if (!why.empty()) error(match.host.origin, why);
    }
    checkRegex(match.path);
  }

  void checkWeights(const RawRoute& route) {
    const RawWeights& weights = route.weights.value;
    double sum = 0;
    bool all_ok = true;
    for (size_t v = 0; v < kWeightedVariants; ++v) {
      const Field<double>& weight = weights.weight[v];
      all_ok = all_ok && (weight.ok || !weight.present);
      if (!weight.ok) continue;
      if (!std::isfinite(weight.value)) {
        error(weight.origin, "must be a finite number");
        all_ok = false;
      } else if (weight.value < 0) {
        error(weight.origin, "must be >= 0");
        all_ok = false;
      } else if (weight.value > 0) {
        sum += weight.value;
        checkVariantHasPool(route, weight.origin, static_cast<Variant>(v));
      }
    }
    // With a weight already reported as wrong, "all zero" would only repeat it.
    if (all_ok && sum <= 0) {
      error(route.weights.origin, "at least one of blue, green, canary must be > 0");
    }
  }

  void checkShadow(const RawRoute& route) {
    if (!route.shadow.ok) return;
    if (!route.upstreams.value.pool[static_cast<size_t>(Variant::Shadow)].present) {
      error(route.shadow.origin, "requires " + route.origin.key + ".upstreams.shadow");
    }
    const RawShadow& shadow = route.shadow.value;
    if (shadow.percent.ok && !(shadow.percent.value >= 0 && shadow.percent.value <= 100)) {
      error(shadow.percent.origin, "must be between 0 and 100");
    }
    checkPositive(shadow.max_in_flight);
    for (const Field<std::string>& header : shadow.ignore_headers.value) {
      checkToken(header, "header name");
    }
  }

  void checkOverride(const RawRoute& route, const RawOverride& override_) {
    const int sources = int{override_.header.present} + int{override_.cookie.present} +
                        int{override_.client_ip.present} + int{override_.segment.present};
    if (sources == 0) error(override_.origin, "needs one of header, cookie, client_ip or segment");
    if (sources > 1) {
      error(override_.origin, "only one of header, cookie, client_ip or segment is allowed");
    }
    if (override_.segment.present) {
      if (override_.regex.present && !override_.header.present && !override_.cookie.present) {
        error(override_.regex.origin, "is not allowed with segment");
      }
      checkSegmentName(override_.segment);
    }
    checkToken(override_.header, "header name");
    checkToken(override_.cookie, "cookie name");
    if (override_.header.present || override_.cookie.present) {
      if (!override_.regex.present) {
        error(override_.regex.origin, "is required with header or cookie");
      }
      checkRegex(override_.regex);
    }
    if (override_.client_ip.present) {
      if (override_.regex.present) error(override_.regex.origin, "is not allowed with client_ip");
      if (override_.client_ip.ok && override_.client_ip.value.empty()) {
        error(override_.client_ip.origin, "must list at least one network");
      }
      for (const Field<std::string>& network : override_.client_ip.value) {
        std::string why;
        if (network.ok && !parseCidr(network.value, &why)) error(network.origin, why);
      }
    }
    checkRequired(override_.variant);
    checkVariantName(route, override_.variant);
  }

  static bool judgedByPrometheus(const RawRoute& route) {
    const Field<std::string>& source = route.rollout.value.analysis.value.source;
    return source.ok && source.value == "prometheus";
  }

  // Rollout journals live under server.state_dir: one error, at the first rollout, when there
  // is none.
  void checkStateDir(const RawRoute& route) {
    const Field<std::string>& state_dir = raw_.server.value.state_dir;
    if (!state_dir.present) {
      error(route.rollout.origin,
            "server.state_dir is required when a route has a rollout (its journal is kept in "
            "state_dir/rollouts/<route>/<id>.jsonl)");
    } else if (state_dir.ok && state_dir.value.empty()) {
      error(state_dir.origin,
            "must not be empty when a route has a rollout (" + route.rollout.origin.key + ")");
    }
  }

  // `field` (a number) must satisfy `in_range`; otherwise `message` at the value.
  template <class InRange>
  void checkRange(const Field<double>& field, InRange&& in_range, const char* message) {
    if (field.ok && !(std::isfinite(field.value) && in_range(field.value))) {
      error(field.origin, message);
    }
  }

  // The rollout's variant: canary or green, with a pool; the configured weight does not matter
  // (the rollout sets it).
  std::optional<Variant> checkRolloutVariant(const RawRoute& route, const RawRollout& rollout) {
    const Field<std::string>& field = rollout.variant;
    if (field.present && !field.ok) return std::nullopt;
    const std::string name = field.present ? field.value : "canary";
    const std::optional<Variant> variant = parseVariant(name);
    if (variant != Variant::Canary && variant != Variant::Green) {
      error(field.origin,
            "must be \"canary\" or \"green\" (the variant whose share the rollout raises)");
      return std::nullopt;
    }
    if (!route.upstreams.value.pool[static_cast<size_t>(*variant)].present) {
      error(field.origin,
            std::string(field.present ? "needs" : "defaults to \"canary\", which needs") +
                " a pool, but " + route.origin.key + ".upstreams." + name + " is not set");
      return std::nullopt;
    }
    return variant;
  }

  // The baseline: blue, green or canary, with a pool and a weight > 0 (the comparison needs
  // its traffic, and the variant's share is computed from the other weights), not the variant.
  void checkRolloutBaseline(const RawRoute& route, const RawRollout& rollout,
                            std::optional<Variant> variant) {
    const Field<std::string>& field = rollout.baseline;
    if (field.present && !field.ok) return;
    const std::string name = field.present ? field.value : "blue";
    const std::optional<Variant> baseline = parseWeightedVariant(name);
    if (!baseline) {
      error(field.origin, kWeightedChoices);
      return;
    }
    if (baseline == variant) {
      error(field.origin, std::string("must differ from the rollout's variant (\"") +
                              variantName(*variant) + "\")");
      return;
    }
    if (!route.upstreams.value.pool[static_cast<size_t>(*baseline)].present) {
      error(field.origin,
            std::string(field.present ? "needs" : "defaults to \"blue\", which needs") +
                " a pool, but " + route.origin.key + ".upstreams." + name + " is not set");
      return;
    }
    const Field<double>& weight = route.weights.value.weight[static_cast<size_t>(*baseline)];
    // A weight that is itself wrong has been reported already.
    if ((!weight.present || weight.ok) && !(weight.value > 0)) {
      error(field.origin, std::string(field.present ? "the baseline" : "the default baseline") +
                              " \"" + name + "\" has weight 0 in " + route.origin.key +
                              ".weights; a rollout needs baseline traffic to compare with");
    }
  }

  void checkRolloutStages(const RawRollout& rollout) {
    checkRequired(rollout.stages);
    if (rollout.stages.ok && rollout.stages.value.empty()) {
      error(rollout.stages.origin, "must list at least one stage");
    }
    std::optional<double> previous;
    for (const RawRolloutStage& stage : rollout.stages.value) {
      checkRequired(stage.percent);
      if (stage.percent.ok) {
        const double percent = stage.percent.value;
        if (!(std::isfinite(percent) && percent > 0 && percent <= 100)) {
          error(stage.percent.origin, "must be > 0 and <= 100");
        } else {
          if (previous && percent <= *previous) {
            error(stage.percent.origin, "stages must be strictly increasing in percent, but " +
                                            formatNumber(percent) + " follows " +
                                            formatNumber(*previous));
          }
          previous = percent;
        }
      }
      if (stage.gate.ok && stage.gate.value != "manual") {
        error(stage.gate.origin, "must be \"manual\" (leave it out for no gate)");
      }
      for (const Field<std::string>& name : stage.segments.value) checkSegmentName(name);
    }
  }

  void checkRolloutAnalysis(const RawRoute& route, const RawRolloutAnalysis& analysis) {
    if (analysis.interval.ok && analysis.interval.value.ms == 0) {
      error(analysis.interval.origin, "must be > 0");
    }
    checkRange(
        analysis.confidence, [](double v) { return v > 0.5 && v < 1; },
        "must be > 0.5 and < 1 (e.g. 0.99)");
    const RawErrorRatio& ratio = analysis.error_ratio.value;
    checkRange(
        ratio.relative, [](double v) { return v >= 1; },
        "must be >= 1 (a multiple of the baseline's error ratio)");
    checkRange(
        ratio.absolute, [](double v) { return v >= 0 && v < 1; }, "must be >= 0 and < 1");
    const RawLatency& latency = analysis.latency.value;
    checkRange(
        latency.quantile, [](double v) { return v > 0 && v < 1; },
        "must be > 0 and < 1 (e.g. 0.95)");
    checkRange(
        latency.relative, [](double v) { return v >= 1; },
        "must be >= 1 (a multiple of the share expected from the quantile)");
    checkRange(
        analysis.shadow_mismatch, [](double v) { return v >= 0 && v < 1; }, "must be >= 0 and < 1");
    checkRange(
        analysis.critical_error_ratio, [](double v) { return v > 0 && v <= 1; },
        "must be > 0 and <= 1");
    if (analysis.shadow_mismatch.ok) checkShadowComparisons(route, analysis.shadow_mismatch);
    checkRolloutSource(route, analysis);
  }

  // SPEC §14: source, prometheus_url and lag.
  void checkRolloutSource(const RawRoute& route, const RawRolloutAnalysis& analysis) {
    const bool prometheus = analysis.source.ok && analysis.source.value == "prometheus";
    if (analysis.source.ok && !prometheus && analysis.source.value != "local") {
      error(analysis.source.origin, "must be \"local\" or \"prometheus\"");
    }
    if (analysis.lag.ok && analysis.lag.value.ms == 0) error(analysis.lag.origin, "must be > 0");
    if (analysis.prometheus_url.ok) {
      std::string why;
      if (analysis.prometheus_url.value.starts_with("https://")) {
        error(analysis.prometheus_url.origin,
              "https is not supported: Prometheus is queried over plain http:// (use a local "
              "relay for TLS)");
      } else if (!parseHttpUrl(analysis.prometheus_url.value, &why)) {
        error(analysis.prometheus_url.origin, why);
      } else if (!prometheus) {
        error(analysis.prometheus_url.origin, "is only used with source = \"prometheus\"");
      }
    } else if (prometheus && !analysis.prometheus_url.present) {
      error(analysis.source.origin, "source = \"prometheus\" needs " + route.origin.key +
                                        ".rollout.analysis.prometheus_url");
    }
  }

  // shadow_mismatch judges the shadow comparisons (§5), so the route must make some.
  void checkShadowComparisons(const RawRoute& route, const Field<double>& field) {
    const std::string& key = route.origin.key;
    if (!route.shadow.present) {
      error(field.origin, "needs shadow comparisons, but " + key +
                              ".shadow is not set (it needs [routes.shadow] with compare = true "
                              "and a shadow pool)");
      return;
    }
    // Without a shadow pool, [routes.shadow] itself is reported (checkShadow).
    if (!route.shadow.ok ||
        !route.upstreams.value.pool[static_cast<size_t>(Variant::Shadow)].present) {
      return;
    }
    const RawShadow& shadow = route.shadow.value;
    if (shadow.compare.ok && !shadow.compare.value) {
      error(field.origin, "needs shadow comparisons, but " + key + ".shadow.compare is false");
    } else if ((!shadow.percent.present || shadow.percent.ok) && !(shadow.percent.value > 0)) {
      error(field.origin,
            "needs shadow comparisons, but " + key + ".shadow.percent is 0 (nothing is mirrored)");
    }
  }

  void checkRollout(const RawRoute& route) {
    const RawRollout& rollout = route.rollout.value;
    // The route name becomes a directory: state_dir/rollouts/<route>/.
    if (route.name.ok && !route.name.value.empty()) {
      const std::string why = fileNameError(route.name.value);
      if (!why.empty()) {
        error(route.name.origin,
              "with a rollout, the route name names its journal directory "
              "(state_dir/rollouts/<route>/), so it " +
                  why);
      }
    }
    checkRequired(rollout.id);
    if (rollout.id.ok) {
      const std::string why = fileNameError(rollout.id.value);
      if (!why.empty()) {
        error(rollout.id.origin,
              "the id names the journal state_dir/rollouts/<route>/<id>.jsonl, so it " + why);
      }
    }
    checkRolloutBaseline(route, rollout, checkRolloutVariant(route, rollout));
    if (rollout.on_failure.ok && rollout.on_failure.value != "rollback" &&
        rollout.on_failure.value != "pause") {
      error(rollout.on_failure.origin, "must be \"rollback\" or \"pause\"");
    }
    checkRolloutStages(rollout);
    if (rollout.notify_url.ok && !rollout.notify_url.value.empty()) {
      std::string why;
      if (!parseHttpUrl(rollout.notify_url.value, &why)) error(rollout.notify_url.origin, why);
    }
    if (rollout.analysis.ok) checkRolloutAnalysis(route, rollout.analysis.value);
  }

  void checkRoute(const RawRoute& route) {
    checkRequired(route.name);
    if (route.name.ok && route.name.value.empty()) error(route.name.origin, "must not be empty");
    if (route.match.ok) checkMatch(route.match.value);
    for (const Field<std::string>& source : route.key.value) {
      std::string why;
      if (source.ok && !parseKeySource(source.value, &why)) error(source.origin, why);
    }
    if (route.fallback.ok && route.fallback.value != "random" &&
        route.fallback.value != "client_ip") {
      if (parseWeightedVariant(route.fallback.value)) {
        checkVariantName(route, route.fallback);
      } else {
        error(route.fallback.origin,
              "must be \"random\", \"client_ip\", \"blue\", \"green\" or \"canary\"");
      }
    }
    if (route.assign_cookie.ok && !route.assign_cookie.value.empty()) {
      checkToken(route.assign_cookie, "cookie name");
    }
    if (route.failover.ok && !route.failover.value.empty()) checkVariantName(route, route.failover);
    for (const Field<std::string>& pool : route.upstreams.value.pool) {
      if (pool.ok && pool_names_.count(pool.value) == 0) {
        error(pool.origin, "no pool named " + quoted(pool.value) + " in [upstreams]");
      }
    }
    checkWeights(route);
    checkShadow(route);
    for (const RawOverride& override_ : route.overrides) checkOverride(route, override_);
    if (route.rollout.ok) checkRollout(route);
  }

  const RawConfig& raw_;
  std::vector<ConfigError>& errors_;
  std::set<std::string> pool_names_;
  std::set<std::string> segment_names_;
};

}  // namespace

ConfigError errorAt(const std::string& file, const Origin& origin, std::string message) {
  return ConfigError{file, origin.line, origin.col, origin.key, std::move(message)};
}

void validate(const RawConfig& raw, std::vector<ConfigError>& errors) {
  Validator(raw, errors).run();
}

std::optional<HostPort> parseHostPort(std::string_view text, std::string* error) {
  const auto fail = [&](const std::string& why) {
    *error = "invalid address " + quoted(text) + ": " + why;
    return std::nullopt;
  };
  HostPort out;
  out.text = text;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return fail("missing \"]\"");
    out.host = text.substr(1, close - 1);
    if (!isIpv6Literal(out.host)) return fail("invalid IPv6 address");
    if (close + 1 >= text.size() || text[close + 1] != ':') return fail("must be [v6]:port");
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("must be host:port");
    out.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (out.host.find(':') != std::string::npos) {
      return fail("an IPv6 address must be in brackets, e.g. [::1]:8080");
    }
    if (out.host.empty()) return fail("missing host");
    if (!std::all_of(out.host.begin(), out.host.end(), isHostNameChar)) {
      return fail("invalid host name");
    }
  }
  uint32_t number = 0;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), isDigit)) {
    return fail("port must be 1..65535");
  }
  for (char c : port) number = number * 10 + static_cast<uint32_t>(c - '0');
  if (number < 1 || number > 65535) return fail("port must be 1..65535");
  out.port = static_cast<uint16_t>(number);
  return out;
}

std::optional<Cidr> parseCidr(std::string_view text, std::string* error) {
  const auto fail = [&](const std::string& why) {
    *error = "invalid CIDR " + quoted(text) + ": " + why;
    return std::nullopt;
  };
  const size_t slash = text.find('/');
  const std::string address(text.substr(0, slash));
  Cidr out;
  uint32_t max_prefix = 128;
  uint32_t offset = 0;  // prefix bits added by the IPv4-mapped form
  in_addr v4{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    out.addr[10] = 0xff;
    out.addr[11] = 0xff;
    std::memcpy(&out.addr[12], &v4, 4);
    max_prefix = 32;
    offset = 96;
  } else if (inet_pton(AF_INET6, address.c_str(), out.addr.data()) != 1) {
    return fail("not an IPv4 or IPv6 address");
  }
  uint32_t prefix = max_prefix;  // a bare address is a single host
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        !std::all_of(digits.begin(), digits.end(), isDigit)) {
      return fail("prefix length must be 0.." + std::to_string(max_prefix));
    }
    prefix = 0;
    for (char c : digits) prefix = prefix * 10 + static_cast<uint32_t>(c - '0');
    if (prefix > max_prefix) return fail("prefix length must be 0.." + std::to_string(max_prefix));
  }
  out.prefix_len = static_cast<uint8_t>(prefix + offset);
  // Host bits are cleared rather than rejected ("10.1.2.3/8" means 10.0.0.0/8), as ip(8) and
  // most proxies do; the matcher can then compare masked bytes directly.
  for (size_t bit = out.prefix_len; bit < 128; ++bit) {
    out.addr[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  return out;
}

std::optional<KeySource> parseKeySource(std::string_view text, std::string* error) {
  KeySource out;
  std::string_view name;
  if (text.substr(0, 7) == "header:") {
    out.kind = KeySource::Kind::Header;
    name = text.substr(7);
  } else if (text.substr(0, 7) == "cookie:") {
    out.kind = KeySource::Kind::Cookie;
    name = text.substr(7);
  } else {
    *error = "must be \"header:NAME\" or \"cookie:NAME\", got " + quoted(text);
    return std::nullopt;
  }
  if (name.empty()) {
    *error = "missing the name after " + quoted(text);
    return std::nullopt;
  }
  if (!isToken(name)) {
    *error = "invalid name " + quoted(name) + " (must be an RFC 9110 token)";
    return std::nullopt;
  }
  out.name = name;
  return out;
}

bool isToken(std::string_view text) {
  static constexpr std::string_view kSymbols = "!#$%&'*+-.^_`|~";
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return isAlnum(c) || kSymbols.find(c) != std::string_view::npos;
  });
}

std::optional<uint64_t> parseDuration(std::string_view text, std::string* error) {
  const auto fail = [&](std::string why) {
    *error = std::move(why);
    return std::nullopt;
  };
  const std::string malformed =
      "expected a duration like \"30s\", \"10m\", \"500ms\" or \"2h\", got " + quoted(text);
  size_t digits_end = 0;
  while (digits_end < text.size() && (isDigit(text[digits_end]) || text[digits_end] == '.')) {
    ++digits_end;
  }
  const std::string_view number = text.substr(0, digits_end);
  const std::string_view unit = text.substr(digits_end);
  const size_t dot = number.find('.');
  const std::string_view whole = number.substr(0, dot);
  const std::string_view fraction =
      dot == std::string_view::npos ? std::string_view() : number.substr(dot + 1);
  // "1.", ".5" and "1.2.3" are not numbers.
  if (whole.empty() || (dot != std::string_view::npos && fraction.empty()) ||
      fraction.find('.') != std::string_view::npos) {
    return fail(malformed);
  }
  uint64_t unit_ms = 0;
  if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m") {
    unit_ms = 60 * 1000;
  } else if (unit == "h") {
    unit_ms = 60 * 60 * 1000;
  } else {
    return fail(malformed);
  }
  // Exact integer arithmetic: whole x unit + fraction x unit / 10^digits. A fraction longer
  // than 9 digits cannot be a whole number of milliseconds unless its tail is zeros.
  const std::string_view significant = fraction.substr(0, fraction.find_last_not_of('0') + 1);
  if (significant.size() > 9) return fail("must be a whole number of milliseconds");
  uint64_t ms = 0;
  for (char c : whole) {
    if (__builtin_mul_overflow(ms, uint64_t{10}, &ms) ||
        __builtin_add_overflow(ms, static_cast<uint64_t>(c - '0'), &ms)) {
      return fail("duration is too long");
    }
  }
  if (__builtin_mul_overflow(ms, unit_ms, &ms)) return fail("duration is too long");
  uint64_t numerator = 0;
  uint64_t denominator = 1;
  for (char c : significant) {
    numerator = numerator * 10 + static_cast<uint64_t>(c - '0');
    denominator *= 10;
  }
  // numerator < 10^9 and unit_ms <= 3.6e6: the product fits in 64 bits.
  if (numerator * unit_ms % denominator != 0) {
    return fail("must be a whole number of milliseconds");
  }
  if (__builtin_add_overflow(ms, numerator * unit_ms / denominator, &ms)) {
    return fail("duration is too long");
  }
  return ms;
}

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t daysFromCivil(int64_t year, unsigned month, unsigned day) {
  year -= month <= 2 ? 1 : 0;
  const int64_t era = (year >= 0 ? year : year - 399) / 400;
  const auto year_of_era = static_cast<unsigned>(year - era * 400);
  const unsigned day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const unsigned day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + static_cast<int64_t>(day_of_era) - 719468;
}

unsigned daysInMonth(int64_t year, unsigned month) {
  static constexpr std::array<unsigned, 12> kDays = {31, 28, 31, 30, 31, 30,
                                                     31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// Reads exactly `count` digits at `at` into `out`.
bool readDigits(std::string_view text, size_t& at, size_t count, unsigned& out) {
  if (at + count > text.size()) return false;
  out = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!isDigit(text[at + i])) return false;
    out = out * 10 + static_cast<unsigned>(text[at + i] - '0');
  }
  at += count;
  return true;
}

bool expectChar(std::string_view text, size_t& at, std::string_view choices) {
  if (at >= text.size() || choices.find(text[at]) == std::string_view::npos) return false;
  ++at;
  return true;
}

}  // namespace

std::optional<int64_t> parseRfc3339(std::string_view text, std::string* error) {
  const auto fail = [&](const std::string& why) {
    *error = why;
    return std::nullopt;
  };
  const std::string malformed =
      quoted(text) + " is not like \"2025-03-01T09:00:00Z\" or \"2025-03-01T10:00:00+01:00\"";
  size_t at = 0;
  unsigned year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!readDigits(text, at, 4, year) || !expectChar(text, at, "-") ||
      !readDigits(text, at, 2, month) || !expectChar(text, at, "-") ||
      !readDigits(text, at, 2, day) || !expectChar(text, at, "Tt ") ||
      !readDigits(text, at, 2, hour) || !expectChar(text, at, ":") ||
      !readDigits(text, at, 2, minute) || !expectChar(text, at, ":") ||
      !readDigits(text, at, 2, second)) {
    return fail(malformed);
  }
  int64_t fraction_ms = 0;
  if (at < text.size() && text[at] == '.') {
    ++at;
    const size_t start = at;
    int64_t scale = 100;
    while (at < text.size() && isDigit(text[at])) {
      fraction_ms += (text[at] - '0') * scale;
      scale /= 10;
      ++at;
    }
    if (at == start) return fail(malformed);
  }
  int64_t offset_minutes = 0;
  if (at == text.size()) {
    return fail(quoted(text) +
                " has no UTC offset, so its moment would depend on the host's time zone: add "
                "\"Z\" or an offset such as \"+01:00\"");
  }
  if (text[at] == 'Z' || text[at] == 'z') {
    ++at;
  } else if (text[at] == '+' || text[at] == '-') {
    const bool negative = text[at] == '-';
    ++at;
    unsigned offset_hours = 0, offset_mins = 0;
    if (!readDigits(text, at, 2, offset_hours) || !expectChar(text, at, ":") ||
        !readDigits(text, at, 2, offset_mins) || offset_hours > 23 || offset_mins > 59) {
      return fail(malformed);
    }
    offset_minutes = (negative ? -1 : 1) * static_cast<int64_t>(offset_hours * 60 + offset_mins);
  } else {
    return fail(malformed);
  }
  if (at != text.size()) return fail(malformed);
  // Seconds may be 60 (a leap second, RFC 3339 §5.6); it counts as the next minute's first.
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) || hour > 23 ||
      minute > 59 || second > 60) {
    return fail(quoted(text) + " is not a valid date and time");
  }
  const int64_t seconds = daysFromCivil(year, month, day) * 86400 + int64_t{hour} * 3600 +
                          int64_t{minute} * 60 + second - offset_minutes * 60;
  return seconds * 1000 + fraction_ms;
}

std::string fileNameError(std::string_view name) {
  if (name.empty()) return "must not be empty";
  if (name.size() > 128) return "must be at most 128 characters long";
  if (!std::all_of(name.begin(), name.end(),
                   [](char c) { return isAlnum(c) || c == '.' || c == '_' || c == '-'; })) {
    return "may only contain letters, digits, \".\", \"_\" and \"-\"";
  }
  if (name.front() == '.') return "must not start with \".\"";
  return "";
}

std::optional<HttpUrl> parseHttpUrl(std::string_view text, std::string* error) {
  const auto fail = [&](const std::string& why) {
    *error = why;
    return std::nullopt;
  };
  const auto hasScheme = [&](std::string_view scheme) {
    if (text.size() < scheme.size()) return false;
    for (size_t i = 0; i < scheme.size(); ++i) {
      const char c = text[i];
      if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != scheme[i]) {
        return false;
      }
    }
    return true;
  };
  if (hasScheme("https://")) {
    return fail(
        "https is not supported: notifications are sent over plain http:// (use a "
        "local relay for TLS)");
  }
  if (!hasScheme("http://")) return fail("must be \"http://host[:port]/path\"");
  if (std::any_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    return fail("must not contain spaces or control characters");
  }
  const std::string_view rest = text.substr(7);
  const size_t authority_end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, authority_end);
  const std::string_view target =
      authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  if (authority.empty()) return fail("missing host in " + quoted(text));
  if (authority.find('@') != std::string_view::npos) {
    return fail("user information (\"user@\") is not supported in " + quoted(text));
  }
  if (target.find('#') != std::string_view::npos) {
    return fail("must not have a fragment (\"#...\")");
  }
  // A port is optional: "host" and "[v6]" mean port 80.
  std::string host_port(authority);
  const size_t close = host_port.rfind(']');
  const size_t colon = host_port.rfind(':');
  const bool has_port = host_port.front() == '[' ? close != std::string::npos &&
                                                       colon != std::string::npos && colon > close
                                                 : colon != std::string::npos;
  if (!has_port) host_port += ":80";
  std::string why;
  std::optional<HostPort> address = parseHostPort(host_port, &why);
  if (!address) return fail(why);
  address->text = authority;
  HttpUrl out;
  out.address = std::move(*address);
  out.target = target.empty()          ? "/"
               : target.front() == '?' ? "/" + std::string(target)
                                       : std::string(target);
  return out;
}

RE2::Options regexOptions() {
  RE2::Options options;
  // Errors are reported as ConfigErrors; RE2 would otherwise also print them to stderr.
  options.set_log_errors(false);
  return options;
}

std::string resolveFilePath(const std::string& config_file, const std::string& path) {
  if (path.empty() || path.front() == '/') return path;
  const size_t slash = config_file.rfind('/');
  if (slash == std::string::npos) return path;
  return config_file.substr(0, slash + 1) + path;
}

}  // namespace sy::config
