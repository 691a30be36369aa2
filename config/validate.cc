#include "config/validate.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
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
    for (const RawPool& pool : raw_.pools) {
      pool_names_.insert(pool.name);
      checkPool(pool);
    }
    std::map<std::string, const Origin*> route_names;
    for (const RawRoute& route : raw_.routes) {
      checkRoute(route);
      if (!route.name.ok || route.name.value.empty()) continue;
      auto [first, inserted] = route_names.emplace(route.name.value, &route.name.origin);
      if (!inserted) {
        error(route.name.origin, "duplicate route name " + quoted(route.name.value) +
                                     " (first defined at line " +
                                     std::to_string(first->second->line) + ")");
      }
    }
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
    if (!listener.tls.present) {
      error(listener.tls.origin,
            "is required: a [[listener]] serves TLS (plain HTTP: server.listen)");
    } else if (listener.tls.ok) {
      checkCertificate(listener.tls.value, false);
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
                        int{override_.client_ip.present};
    if (sources == 0) error(override_.origin, "needs one of header, cookie or client_ip");
    if (sources > 1) {
      error(override_.origin, "only one of header, cookie or client_ip is allowed");
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
  }

  const RawConfig& raw_;
  std::vector<ConfigError>& errors_;
  std::set<std::string> pool_names_;
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
