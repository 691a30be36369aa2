#include "config/snapshot.h"

#include "config/tls_context.h"

#include <netdb.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "config/validate.h"

namespace sy::config {
namespace {

struct AddrInfoDeleter {
  void operator()(addrinfo* list) const { freeaddrinfo(list); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

std::string toLower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  return out;
}

// Copies a configured value over the default from snapshot.h; absent or rejected values keep
// the default.
template <class T, class U>
void assign(T& out, const Field<U>& field) {
  if (field.ok) out = field.value;
}

// Builds the Snapshot from a RawConfig. Every step skips what validate() rejects, so it can run
// on an invalid config too and still report every address that does not resolve.
class Compiler {
 public:
  Compiler(const RawConfig& raw, const Resolver& resolver, std::vector<ConfigError>& errors)
      : raw_(raw), resolver_(resolver), errors_(errors) {}

  std::shared_ptr<Snapshot> run() {
    auto snapshot = std::make_shared<Snapshot>();
    snapshot->path = raw_.file;
    compileServer(snapshot->server);
    for (const RawListener& listener : raw_.listeners) {
      compileListener(listener, snapshot->listeners);
    }
    compileGeoIp(*snapshot);
    // Segments before routes: overrides and rollout stages refer to them by index.
    for (const RawSegment& segment : raw_.segments) {
      segment_index_.emplace(segment.name, static_cast<uint32_t>(snapshot->segments.size()));
      compileSegment(segment, snapshot->segments.emplace_back());
    }
    // Pools first: routes point into this map, whose nodes never move.
    for (const RawPool& pool : raw_.pools) compilePool(pool, snapshot->pools[pool.name]);
    for (const RawRoute& route : raw_.routes) {
      compileRoute(route, snapshot->pools, snapshot->routes.emplace_back());
    }
    if (!errors_.empty()) return nullptr;
    return snapshot;
  }

 private:
  std::vector<SocketAddress> resolve(const Field<std::string>& field) {
    std::string ignored;
    const std::optional<HostPort> address =
        field.ok ? parseHostPort(field.value, &ignored) : std::nullopt;
    if (!address) return {};  // validate() has reported it
    std::vector<SocketAddress> out;
    if (const std::optional<std::string> failure = resolver_(*address, out)) {
      errors_.push_back(errorAt(raw_.file, field.origin, "does not resolve: " + *failure));
      out.clear();
    }
    return out;
  }

  void resolveInto(const Field<std::string>& field, std::vector<SocketAddress>& out) {
    for (SocketAddress& address : resolve(field)) out.push_back(std::move(address));
  }

  static constexpr uint16_t kDefaultListenPort = 8080;

  bool listenerOnPort(uint16_t port) const {
    std::string ignored;
    for (const RawListener& listener : raw_.listeners) {
      if (!listener.address.ok) continue;
      const std::optional<HostPort> address = parseHostPort(listener.address.value, &ignored);
      if (address && address->port == port) return true;
    }
    return false;
  }

  // server.geoip_database: opened at every (re)load, so a replaced file takes effect with it.
  void compileGeoIp(Snapshot& out) {
    const Field<std::string>& field = raw_.server.value.geoip_database;
    if (!field.ok || field.value.empty()) return;
    out.server.geoip_database = resolveFilePath(raw_.file, field.value);
    if (!errors_.empty()) return;  // already invalid: skip the work
    std::string why;
    out.geoip = GeoIpDatabase::open(out.server.geoip_database, &why);
    if (!out.geoip) errors_.push_back(errorAt(raw_.file, field.origin, why));
  }

  void compileSegment(const RawSegment& segment, Segment& out) {
    out.name = segment.name;
    if (segment.keys_file.ok && !segment.keys_file.value.empty()) {
      out.keys_file = resolveFilePath(raw_.file, segment.keys_file.value);
      // Re-read at every (re)load; skipped when the config is already invalid (it can be big).
      if (errors_.empty()) {
        std::string why;
        out.keys = KeySet::load(out.keys_file, &why);
        if (!out.keys) errors_.push_back(errorAt(raw_.file, segment.keys_file.origin, why));
      }
    }
    if (segment.header.present || segment.cookie.present) {
      const bool cookie = segment.cookie.present;
      out.source = cookie ? Segment::Source::Cookie : Segment::Source::Header;
      assign(out.source_name, cookie ? segment.cookie : segment.header);
      if (segment.regex.ok) out.regex = std::make_shared<RE2>(segment.regex.value, regexOptions());
    }
    std::string ignored;
    for (const Field<std::string>& code : segment.country.value) {
      if (auto parsed = code.ok ? parseCountryCode(code.value, &ignored) : std::nullopt) {
        out.countries.push_back(*parsed);
      }
    }
    for (const Field<std::string>& network : segment.client_ip.value) {
      if (auto cidr = network.ok ? parseCidr(network.value, &ignored) : std::nullopt) {
        out.networks.push_back(*cidr);
      }
    }
  }

  // The index of a segment named by an override or a stage (validate() reported unknown ones).
  std::optional<uint32_t> segmentIndex(const Field<std::string>& field) const {
    const auto it = field.ok ? segment_index_.find(field.value) : segment_index_.end();
    if (it == segment_index_.end()) return std::nullopt;
    return it->second;
  }

  void compileServer(ServerSettings& out) {
    const RawServer& server = raw_.server.value;
    if (server.listen.ok) {
      for (const Field<std::string>& address : server.listen.value)
        resolveInto(address, out.listen);
    } else if (!listenerOnPort(kDefaultListenPort)) {
      // The default gives way to a [[listener]] on its port (SPEC §13's example listens on
      // 0.0.0.0:8080 with proxy_protocol): two sockets on one port would split the clients
      // between them. An explicit server.listen on a [[listener]]'s port is an error
      // (validate.cc).
      Field<std::string> fallback;
      fallback.value = "127.0.0.1:8080";
      fallback.origin = server.listen.origin;
      fallback.present = fallback.ok = true;
      resolveInto(fallback, out.listen);
    }
    assign(out.workers, server.workers);
    // The admin endpoint binds one socket: a name resolving to several addresses uses the first.
    if (server.admin.ok && !server.admin.value.empty()) {
      std::vector<SocketAddress> admin = resolve(server.admin);
      if (!admin.empty()) out.admin = std::move(admin.front());
    }
    assign(out.admin_token, server.admin_token);
    assign(out.variant_header, server.variant_header);
    assign(out.access_log, server.access_log);
    assign(out.watch_config, server.watch_config);
    // Relative to the config file's directory, as TLS files are.
    if (server.state_dir.ok) out.state_dir = resolveFilePath(raw_.file, server.state_dir.value);

    const RawTimeouts& timeouts = server.timeouts.value;
    assign(out.timeouts.client_header_ms, timeouts.client_header_ms);
    assign(out.timeouts.client_idle_ms, timeouts.client_idle_ms);
    assign(out.timeouts.upstream_connect_ms, timeouts.upstream_connect_ms);
    assign(out.timeouts.upstream_response_ms, timeouts.upstream_response_ms);
    assign(out.timeouts.drain_timeout_ms, timeouts.drain_timeout_ms);

    const RawLimits& limits = server.limits.value;
    assign(out.limits.max_header_bytes, limits.max_header_bytes);
    assign(out.limits.max_body_bytes, limits.max_body_bytes);
    assign(out.limits.max_connections, limits.max_connections);

    const RawHttp2& http2 = server.http2.value;
    assign(out.http2.max_concurrent_streams, http2.max_concurrent_streams);
    assign(out.http2.initial_window_bytes, http2.initial_window_bytes);
    assign(out.http2.max_header_list_bytes, http2.max_header_list_bytes);
    assign(out.http2_cleartext, server.http2_cleartext);
    std::string ignored;
    for (const Field<std::string>& network : server.trusted_proxies.value) {
      if (!network.ok) continue;
      if (std::optional<Cidr> cidr = parseCidr(network.value, &ignored)) {
        out.trusted_proxies.push_back(*cidr);  // (validate() has reported the others)
      }
    }
  }

  TlsCertificate compileCertificate(const RawCertificate& cert) const {
    TlsCertificate out;
    for (const Field<std::string>& name : cert.names.value) {
      if (name.ok) out.names.push_back(toLower(name.value));  // SNI is case-insensitive
    }
    if (cert.cert.ok) out.cert_file = resolveFilePath(raw_.file, cert.cert.value);
    if (cert.key.ok) out.key_file = resolveFilePath(raw_.file, cert.key.value);
    return out;
  }

  // One Listener per resolved address, as for server.listen.
  void compileListener(const RawListener& listener, std::vector<Listener>& out) {
    Listener compiled;
    assign(compiled.http2, listener.http2);
    assign(compiled.proxy_protocol, listener.proxy_protocol);
    if (listener.tls.present) compiled.default_cert = compileCertificate(listener.tls.value);
    for (const RawCertificate& cert : listener.sni) {
      compiled.sni.push_back(compileCertificate(cert));
    }
    // Certificates are read at every (re)load: a bad one fails the load, naming the file.
    if (errors_.empty() && listener.tls.ok) {
      size_t failed = 0;
      if (auto error = buildServerTls(compiled.default_cert, compiled.sni, compiled.http2,
                                      compiled.tls, &failed)) {
        const RawCertificate& cert =
            failed < listener.sni.size() ? listener.sni[failed] : listener.tls.value;
        const TlsCertificate& files =
            failed < compiled.sni.size() ? compiled.sni[failed] : compiled.default_cert;
        // Point at the key when it is the key that failed (messages start with the file).
        const bool key_failed = error->rfind(files.key_file + ":", 0) == 0;
        const Field<std::string>& where = key_failed ? cert.key : cert.cert;
        errors_.push_back(errorAt(raw_.file, where.origin, *error));
        return;
      }
    }
    for (SocketAddress& address : resolve(listener.address)) {
      compiled.address = std::move(address);
      out.push_back(compiled);
    }
  }

  void compilePool(const RawPool& pool, Pool& out) {
    out.name = pool.name;
    for (const Field<std::string>& server : pool.servers.value) resolveInto(server, out.servers);
    if (pool.balance.ok && pool.balance.value == "least_conn") out.balance = Balance::LeastConn;
    assign(out.tls, pool.tls);
    assign(out.tls_verify, pool.tls_verify);
    if (pool.ca_file.ok) out.ca_file = resolveFilePath(raw_.file, pool.ca_file.value);
    assign(out.sni, pool.sni);
    if (out.tls && errors_.empty()) {
      if (auto error = buildClientTls(out.tls_verify, out.ca_file, out.tls_ctx)) {
        errors_.push_back(errorAt(raw_.file, pool.tls.origin, *error));
      }
    }
    if (pool.health.ok) {
      const RawHealth& health = pool.health.value;
      HealthCheck& check = out.health.emplace();
      assign(check.path, health.path);
      assign(check.interval_ms, health.interval_ms);
      assign(check.timeout_ms, health.timeout_ms);
      assign(check.unhealthy_after, health.unhealthy_after);
      assign(check.healthy_after, health.healthy_after);
    }
  }

  static std::optional<Variant> variantOf(const Field<std::string>& field) {
    return field.ok ? parseVariant(field.value) : std::nullopt;
  }

  static void compileMatch(const RawMatch& match, Route& out) {
    if (match.host.ok) {
      out.host = toLower(match.host.value);
      // "example.com." is the absolute form of "example.com"; the router strips the dot from the
      // request's Host, so the configured name must not keep one either.
      if (out.host.size() > 1 && out.host.back() == '.') out.host.pop_back();
      // "*.example.com" matches any name ending in ".example.com" (not "example.com" itself,
      // as with TLS wildcards); keeping the dot makes the router's suffix test exact.
      if (out.host.rfind("*.", 0) == 0) {
        out.host.erase(0, 1);
        out.host_wildcard = true;
      }
    }
    if (match.path.ok) out.path = std::make_shared<RE2>(match.path.value, regexOptions());
  }

  static void compileShadow(const RawShadow& shadow, ShadowSettings& out) {
    assign(out.percent, shadow.percent);
    assign(out.max_body_bytes, shadow.max_body_bytes);
    assign(out.max_in_flight, shadow.max_in_flight);
    assign(out.compare, shadow.compare);
    if (shadow.ignore_headers.ok) {
      out.ignore_headers.clear();
      // Header names compare case-insensitively; lower-case once here, not per response.
      for (const Field<std::string>& header : shadow.ignore_headers.value) {
        out.ignore_headers.push_back(toLower(header.value));
      }
    }
  }

  Override compileOverride(const RawOverride& override_) const {
    Override out;
    if (override_.segment.present) {
      out.kind = Override::Kind::Segment;
      out.segment = segmentIndex(override_.segment).value_or(0);
    } else if (override_.client_ip.present) {
      out.kind = Override::Kind::ClientIp;
      std::string ignored;
      for (const Field<std::string>& network : override_.client_ip.value) {
        if (std::optional<Cidr> cidr =
                network.ok ? parseCidr(network.value, &ignored) : std::nullopt) {
          out.networks.push_back(*cidr);
        }
      }
    } else {
      const bool cookie = override_.cookie.present;
      out.kind = cookie ? Override::Kind::Cookie : Override::Kind::Header;
      assign(out.name, cookie ? override_.cookie : override_.header);
      // Compiled as written: the proxy calls RE2::FullMatch, which anchors it.
      if (override_.regex.ok) {
        out.regex = std::make_shared<RE2>(override_.regex.value, regexOptions());
      }
    }
    out.variant = variantOf(override_.variant).value_or(Variant::Blue);
    return out;
  }

  static void compileRolloutAnalysis(const RawRolloutAnalysis& analysis, RolloutAnalysis& out) {
    if (analysis.interval.ok) out.interval_ms = analysis.interval.value.ms;
    if (analysis.warmup.ok) out.warmup_ms = analysis.warmup.value.ms;
    assign(out.confidence, analysis.confidence);
    assign(out.min_requests, analysis.min_requests);
    assign(out.error_relative, analysis.error_ratio.value.relative);
    assign(out.error_absolute, analysis.error_ratio.value.absolute);
    assign(out.latency_quantile, analysis.latency.value.quantile);
    assign(out.latency_relative, analysis.latency.value.relative);
    if (analysis.latency.value.absolute.ok) {
      out.latency_absolute_ms = analysis.latency.value.absolute.value.ms;
    }
    if (analysis.shadow_mismatch.ok) out.shadow_mismatch = analysis.shadow_mismatch.value;
    assign(out.critical_error_ratio, analysis.critical_error_ratio);
    out.prometheus = analysis.source.ok && analysis.source.value == "prometheus";
    assign(out.prometheus_url, analysis.prometheus_url);
    if (analysis.lag.ok) out.lag_ms = analysis.lag.value.ms;
  }

  void compileRollout(const RawRollout& rollout, Rollout& out) const {
    assign(out.id, rollout.id);
    out.variant = variantOf(rollout.variant).value_or(Variant::Canary);
    out.baseline = variantOf(rollout.baseline).value_or(Variant::Blue);
    if (rollout.start.ok) out.start_unix_ms = rollout.start.value.unix_ms;
    if (rollout.on_failure.ok && rollout.on_failure.value == "pause") {
      out.on_failure = RolloutFailure::Pause;
    }
    for (const RawRolloutStage& stage : rollout.stages.value) {
      RolloutStage& compiled = out.stages.emplace_back();
      assign(compiled.percent, stage.percent);
      if (stage.hold.ok) compiled.hold_ms = stage.hold.value.ms;
      compiled.manual_gate = stage.gate.ok && stage.gate.value == "manual";
      for (const Field<std::string>& name : stage.segments.value) {
        if (auto index = segmentIndex(name)) compiled.segments.push_back(*index);
      }
    }
    assign(out.notify_url, rollout.notify_url);
    compileRolloutAnalysis(rollout.analysis.value, out.analysis);
  }

  void compileRoute(const RawRoute& route, const std::map<std::string, Pool>& pools, Route& out) {
    assign(out.name, route.name);
    if (route.match.ok) compileMatch(route.match.value, out);
    std::string ignored;
    for (const Field<std::string>& source : route.key.value) {
      if (std::optional<KeySource> key =
              source.ok ? parseKeySource(source.value, &ignored) : std::nullopt) {
        out.keys.push_back(std::move(*key));
      }
    }
    if (route.fallback.ok) {
      if (route.fallback.value == "client_ip") {
        out.fallback.kind = Fallback::Kind::ClientIp;
      } else if (std::optional<Variant> variant = variantOf(route.fallback)) {
        out.fallback.kind = Fallback::Kind::Variant;
        out.fallback.variant = *variant;
      }
    }
    assign(out.assign_cookie, route.assign_cookie);
    // SPEC: salt = "" means the default, the route name.
    out.salt = route.salt.ok && !route.salt.value.empty() ? route.salt.value : out.name;
    out.failover = variantOf(route.failover);
    for (size_t v = 0; v < kVariants; ++v) {
      const Field<std::string>& pool = route.upstreams.value.pool[v];
      const auto found = pool.ok ? pools.find(pool.value) : pools.end();
      if (found != pools.end()) out.pools[v] = &found->second;
    }
    for (size_t v = 0; v < kWeightedVariants; ++v) {
      assign(out.weights[v], route.weights.value.weight[v]);
    }
    if (route.shadow.ok) compileShadow(route.shadow.value, out.shadow.emplace());
    for (const RawOverride& override_ : route.overrides) {
      out.overrides.push_back(compileOverride(override_));
    }
    if (route.rollout.ok) compileRollout(route.rollout.value, out.rollout.emplace());
  }

  const RawConfig& raw_;
  const Resolver& resolver_;
  std::vector<ConfigError>& errors_;
  std::map<std::string, uint32_t> segment_index_;
};

std::optional<std::string> resolveWithGetaddrinfo(const HostPort& address,
                                                  std::vector<SocketAddress>& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  // Numeric first, so an IP address never waits on DNS; only a name falls through to a lookup.
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  const std::string port = std::to_string(address.port);
  addrinfo* list = nullptr;
  int rc = getaddrinfo(address.host.c_str(), port.c_str(), &hints, &list);
  if (rc == EAI_NONAME) {
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(address.host.c_str(), port.c_str(), &hints, &list);
  }
  if (rc != 0) return std::string(rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc));
  const AddrInfoPtr owned(list);
  for (const addrinfo* entry = list; entry != nullptr; entry = entry->ai_next) {
    if (entry->ai_addrlen > sizeof(sockaddr_storage)) continue;
    SocketAddress resolved;
    resolved.text = address.text;
    std::memcpy(&resolved.addr, entry->ai_addr, entry->ai_addrlen);
    resolved.len = entry->ai_addrlen;
    const bool duplicate = std::any_of(out.begin(), out.end(), [&](const SocketAddress& seen) {
      return seen.len == resolved.len && std::memcmp(&seen.addr, &resolved.addr, seen.len) == 0;
    });
    if (!duplicate) out.push_back(std::move(resolved));
  }
  if (out.empty()) return std::string("no usable address");
  return std::nullopt;
}

}  // namespace

std::optional<Variant> parseVariant(std::string_view name) {
  for (size_t v = 0; v < kVariants; ++v) {
    if (name == kVariantNames[v]) return static_cast<Variant>(v);
  }
  return std::nullopt;
}

Resolver systemResolver() { return resolveWithGetaddrinfo; }

std::shared_ptr<Snapshot> compileSnapshot(const RawConfig& raw, const Resolver& resolver,
                                          std::vector<ConfigError>& errors) {
  return Compiler(raw, resolver, errors).run();
}

std::shared_ptr<Snapshot> cloneSnapshot(const Snapshot& snapshot) {
  auto copy = std::make_shared<Snapshot>();
  copy->path = snapshot.path;
  copy->generation = snapshot.generation;
  copy->server = snapshot.server;
  copy->listeners = snapshot.listeners;
  copy->pools = snapshot.pools;
  copy->routes = snapshot.routes;
  copy->segments = snapshot.segments;
  copy->geoip = snapshot.geoip;
  for (Route& route : copy->routes) {
    for (const Pool*& pool : route.pools) {
      if (pool != nullptr) pool = &copy->pools.at(pool->name);
    }
  }
  return copy;
}

}  // namespace sy::config
