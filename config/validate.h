#pragma once
// The internal stages of config::loadSnapshot() (config/loader.h is the public entry point):
//
//   1. loader.cc    TOML text -> RawConfig: keys and value types checked, every value kept with
//                   its origin (line, column, key path) so later stages can point at it.
//   2. validate.cc  RawConfig -> ConfigErrors: every semantic rule of SPEC §3 and §11.
//   3. snapshot.cc  RawConfig -> Snapshot: addresses resolved, RE2 compiled, pools linked.
//
// The raw types live here rather than in loader.h because loader.h is the public interface and
// nothing outside config/ should see them. Only config/ and its unit tests include this file.
//
// Thread: main thread (resolution may block).

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/error.h"
#include "config/loader.h"
#include "config/snapshot.h"

namespace sy::config {

// Where a value was written. For an absent key, line/col are those of the enclosing table, so
// "is required" errors still point somewhere useful.
struct Origin {
  uint32_t line = 0;
  uint32_t col = 0;
  std::string key;  // e.g. "routes[0].weights.canary"
};

// One configuration value (or sub-table) as written. `present`: the key exists in the file.
// `ok`: it also had the right type and range (otherwise the loader has already reported it, and
// later stages skip it rather than report a second, confusing error). Defaults are not stored
// here: they live in snapshot.h and are kept whenever a field is not `ok`.
template <class T>
struct Field {
  T value{};
  Origin origin;
  bool present = false;
  bool ok = false;
};

using StringList = std::vector<Field<std::string>>;

// A duration as written ("30s", "10m", "500ms", "2h"), already parsed by the loader
// (parseDuration).
struct RawDuration {
  uint64_t ms = 0;
};

// [routes.rollout] start, already parsed by the loader: "on_load" (no time) or an RFC 3339 time
// with an offset, written as a string or as a TOML offset date-time.
struct RawStart {
  std::optional<int64_t> unix_ms;
};

struct RawTimeouts {
  Field<uint32_t> client_header_ms, client_idle_ms, upstream_connect_ms, upstream_response_ms,
      drain_timeout_ms;
};

struct RawLimits {
  Field<uint64_t> max_header_bytes, max_body_bytes;
  Field<uint32_t> max_connections;
};

struct RawHttp2 {
  Field<uint32_t> max_concurrent_streams, initial_window_bytes;
  Field<uint64_t> max_header_list_bytes;
};

struct RawServer {
  Field<StringList> listen;
  Field<uint32_t> workers;
  Field<std::string> admin, admin_token, variant_header, access_log;
  Field<bool> watch_config;
  Field<std::string> state_dir;
  Field<RawTimeouts> timeouts;
  Field<RawLimits> limits;
  Field<RawHttp2> http2;
  Field<bool> http2_cleartext;
  Field<StringList> trusted_proxies;
  Field<std::string> geoip_database;
};

// listener.tls (without names) or one [[listener.sni]].
struct RawCertificate {
  Origin origin;
  Field<StringList> names;
  Field<std::string> cert, key;
};

struct RawListener {
  Origin origin;
  Field<std::string> address;
  Field<RawCertificate> tls;
  std::vector<RawCertificate> sni;
  Field<bool> http2, proxy_protocol;
};

struct RawHealth {
  Field<std::string> path;
  Field<uint32_t> interval_ms, timeout_ms, unhealthy_after, healthy_after;
};

struct RawPool {
  Origin origin;
  std::string name;
  Field<StringList> servers;
  Field<std::string> balance;
  Field<bool> tls, tls_verify;
  Field<std::string> ca_file, sni;
  Field<RawHealth> health;
};

struct RawMatch {
  Field<std::string> host, path;
};

struct RawVariantPools {
  std::array<Field<std::string>, kVariants> pool;  // index = Variant
};

struct RawWeights {
  std::array<Field<double>, kWeightedVariants> weight;  // index = Variant
};

struct RawShadow {
  Field<double> percent;
  Field<uint64_t> max_body_bytes;
  Field<uint32_t> max_in_flight;
  Field<bool> compare;
  Field<StringList> ignore_headers;
};

struct RawOverride {
  Origin origin;
  Field<std::string> header, cookie;
  Field<StringList> client_ip;
  Field<std::string> regex, variant, segment;
};

// [segments.NAME] (SPEC §13).
struct RawSegment {
  Origin origin;
  std::string name;
  Field<std::string> keys_file, header, cookie, regex;
  Field<StringList> country, client_ip;
};

// One element of [routes.rollout] stages.
struct RawRolloutStage {
  Origin origin;
  Field<double> percent;
  Field<RawDuration> hold;
  Field<std::string> gate;
  Field<StringList> segments;
};

struct RawErrorRatio {
  Field<double> relative, absolute;
};

struct RawLatency {
  Field<double> quantile, relative;
  Field<RawDuration> absolute;
};

struct RawRolloutAnalysis {
  Field<RawDuration> interval, warmup;
  Field<double> confidence;
  Field<uint64_t> min_requests;
  Field<RawErrorRatio> error_ratio;
  Field<RawLatency> latency;
  Field<double> shadow_mismatch, critical_error_ratio;
  // SPEC §14: where the evidence comes from.
  Field<std::string> source, prometheus_url;
  Field<RawDuration> lag;
};

struct RawRollout {
  Field<std::string> id, variant, baseline;
  Field<RawStart> start;
  Field<std::string> on_failure;
  Field<std::vector<RawRolloutStage>> stages;  // ok: an array whose elements are all tables
  Field<std::string> notify_url;
  Field<RawRolloutAnalysis> analysis;
};

struct RawRoute {
  Origin origin;
  Field<std::string> name;
  Field<RawMatch> match;
  Field<StringList> key;
  Field<std::string> fallback, assign_cookie, salt, failover;
  Field<RawVariantPools> upstreams;
  Field<RawWeights> weights;
  Field<RawShadow> shadow;
  std::vector<RawOverride> overrides;
  Field<RawRollout> rollout;
};

struct RawConfig {
  std::string file;  // as given by the caller; used in every error and as Snapshot::path
  Field<RawServer> server;
  std::vector<RawListener> listeners;
  std::vector<RawPool> pools;  // in key order, as toml++ iterates them
  std::vector<RawRoute> routes;
  std::vector<RawSegment> segments;  // in key order, as toml++ iterates them
  Origin segments_origin;            // of the [segments] table
};

ConfigError errorAt(const std::string& file, const Origin& origin, std::string message);

// ---- Stage 1 (loader.cc) ------------------------------------------------------------------------

// Parses TOML text. Returns nullopt when the text is not TOML at all (one error with toml++'s
// position and description); otherwise the RawConfig, with `errors` holding every unknown key and
// every value of the wrong type or range.
std::optional<RawConfig> parseRaw(std::string_view toml_text, const std::string& file,
                                  std::vector<ConfigError>& errors);

// ---- Stage 2 (validate.cc) ----------------------------------------------------------------------

// Appends one error per semantic rule broken (SPEC §3, §11), in file order where possible. Does not
// resolve host names (compileSnapshot() does, once).
void validate(const RawConfig& raw, std::vector<ConfigError>& errors);

// "host:port" or "[v6]:port" with port 1..65535. `host` is without brackets.
struct HostPort {
  std::string text;  // as written
  std::string host;
  uint16_t port = 0;
};
// Returns the parsed address, or nullopt with `*error` saying why.
std::optional<HostPort> parseHostPort(std::string_view text, std::string* error);

// "10.0.0.0/8", "::1/128", or a bare address (a single host). Host bits beyond the prefix are
// cleared, as most tools do. Returns nullopt with `*error` saying why.
std::optional<Cidr> parseCidr(std::string_view text, std::string* error);

// "header:NAME" or "cookie:NAME".
std::optional<KeySource> parseKeySource(std::string_view text, std::string* error);

// An RFC 9110 token (header names, cookie names).
bool isToken(std::string_view text);

// A duration: a non-negative number, decimals allowed, followed by "ms", "s", "m" or "h"
// ("500ms", "30s", "1.5s", "10m", "2h"), in milliseconds. It must come to a whole number of
// milliseconds. Returns nullopt with `*error` saying why.
std::optional<uint64_t> parseDuration(std::string_view text, std::string* error);

// An RFC 3339 time with an offset ("2025-03-01T09:00:00Z", "2025-03-01T10:00:00.250+01:00"; "t"
// or a space may replace "T"), as unix milliseconds (fractions below a millisecond are dropped).
// A time without an offset is rejected: it would depend on the host's time zone.
std::optional<int64_t> parseRfc3339(std::string_view text, std::string* error);

// A rollout id or the name of a route with a rollout: it becomes a file or directory name under
// state_dir, so only [A-Za-z0-9._-], 1..128 characters, not starting with ".". Returns "" when
// `name` is fine, else why not.
std::string fileNameError(std::string_view name);

// "http://host[:port][/path][?query]" ([routes.rollout] notify_url). https is not supported.
struct HttpUrl {
  HostPort address;    // port 80 when not written
  std::string target;  // path and query as written; "/" when absent
};
std::optional<HttpUrl> parseHttpUrl(std::string_view text, std::string* error);

// RE2 options shared by validation and compilation, so both accept exactly the same patterns.
RE2::Options regexOptions();

// TLS and CA files are relative to the directory of the config file (as nginx does with its
// prefix), so a config and its certificates can move together, e.g. in one ConfigMap.
std::string resolveFilePath(const std::string& config_file, const std::string& path);

// ---- Stage 3 (snapshot.cc) ----------------------------------------------------------------------

// Resolves one address into `out` (one SocketAddress per resolved address, text = as written).
// Returns nullopt on success or the reason it failed.
using Resolver =
    std::function<std::optional<std::string>(const HostPort&, std::vector<SocketAddress>& out)>;

// getaddrinfo(AF_UNSPEC, SOCK_STREAM); numeric addresses never cause a DNS lookup.
Resolver systemResolver();

// Compiles `raw` into a Snapshot. Resolves every address that parses and appends an error for
// each one that does not resolve, even when `errors` is already non-empty, so one run reports
// everything. Returns the Snapshot only when `errors` is empty at the end; tolerates (skips)
// anything validate() rejected.
std::shared_ptr<Snapshot> compileSnapshot(const RawConfig& raw, const Resolver& resolver,
                                          std::vector<ConfigError>& errors);

// loadSnapshotFromString() with an injected resolver (unit tests use a fake one: no DNS).
LoadResult loadSnapshotFromString(std::string_view toml_text, const std::string& path,
                                  const Resolver& resolver);

}  // namespace sy::config
