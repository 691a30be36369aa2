#pragma once
// The immutable, compiled configuration. Built once on the main thread by
// config::loadSnapshot(); after that it never changes and is shared read-only by every
// worker through SnapshotConstSharedPtr. The data plane (proxy/) reads configuration only
// through this type.
//
// Thread: any (read-only after construction).

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <openssl/ssl.h>
#include <re2/re2.h>

#include "config/geoip.h"
#include "config/key_set.h"

namespace sy::config {

// The variants of a route. The first three are the weighted ones; shadow only receives
// mirrored copies.
enum class Variant : uint8_t { Blue = 0, Green = 1, Canary = 2, Shadow = 3 };
inline constexpr size_t kWeightedVariants = 3;
inline constexpr size_t kVariants = 4;
inline constexpr std::array<const char*, kVariants> kVariantNames = {"blue", "green", "canary",
                                                                     "shadow"};
inline const char* variantName(Variant v) { return kVariantNames[static_cast<size_t>(v)]; }
// Returns the variant for "blue"/"green"/"canary"/"shadow", or nullopt.
std::optional<Variant> parseVariant(std::string_view name);

// A resolved socket address, kept with the text it came from ("host:port").
struct SocketAddress {
  std::string text;
  sockaddr_storage addr{};
  socklen_t len = 0;
};

struct Timeouts {
  uint32_t client_header_ms = 10000;
  uint32_t client_idle_ms = 60000;
  uint32_t upstream_connect_ms = 2000;
  uint32_t upstream_response_ms = 30000;
  uint32_t drain_timeout_ms = 15000;
};

struct Limits {
  uint64_t max_header_bytes = 65536;
  uint64_t max_body_bytes = 0;  // 0 = unlimited
  uint32_t max_connections = 10000;
};

// [server.http2] (SPEC §12): the SETTINGS of every HTTP/2 connection.
struct Http2Settings {
  uint32_t max_concurrent_streams = 128;
  uint32_t initial_window_bytes = 65535;  // per stream
  uint64_t max_header_list_bytes = 65536;
};

// An IPv4 or IPv6 network. IPv4 networks are stored as IPv4-mapped IPv6 (::ffff:a.b.c.d/96+len)
// so a single comparison covers both families.
struct Cidr {
  std::array<uint8_t, 16> addr{};
  uint8_t prefix_len = 0;  // 0..128 over the 16-byte form
};

struct ServerSettings {
  std::vector<SocketAddress> listen;  // plain-HTTP listeners
  uint32_t workers = 0;               // 0 = one per CPU core (resolved by the server, not here)
  std::optional<SocketAddress> admin;
  std::string admin_token;
  std::string variant_header = "X-Switchyard-Variant";  // "" disables
  std::string access_log;                               // "" off, "-" stdout, else a path
  bool watch_config = false;
  std::string state_dir;  // rollout journals (SPEC §11); "" = none (no route has a rollout)
  Timeouts timeouts;
  Limits limits;
  Http2Settings http2;
  bool http2_cleartext = false;  // plain listeners also accept HTTP/2 with prior knowledge
  // SPEC §13: from a connection whose address is in one of these, the client is taken from
  // X-Forwarded-For (proxy/routing/client_address.h).
  std::vector<Cidr> trusted_proxies;
  std::string geoip_database;  // resolved path; "" = no location (SPEC §13)
};

struct TlsCertificate {
  std::vector<std::string> names;  // SNI names, exact or "*.suffix" (empty for the default)
  std::string cert_file;
  std::string key_file;
};

class ServerTls;

// One [[listener]]: TLS with `tls`, else plain HTTP like server.listen.
struct Listener {
  SocketAddress address;
  TlsCertificate default_cert;
  std::vector<TlsCertificate> sni;
  bool http2 = true;                     // TLS: ALPN offers h2 besides http/1.1
  bool proxy_protocol = false;           // SPEC §13: a PROXY v1/v2 header comes first
  std::shared_ptr<const ServerTls> tls;  // compiled contexts (config/tls_context.h); null: plain
};

struct HealthCheck {
  std::string path = "/healthz";
  uint32_t interval_ms = 2000;
  uint32_t timeout_ms = 1000;
  uint32_t unhealthy_after = 3;
  uint32_t healthy_after = 2;
};

enum class Balance : uint8_t { RoundRobin, LeastConn };

struct Pool {
  std::string name;
  std::vector<SocketAddress> servers;  // resolved at load; one entry per resolved address
  Balance balance = Balance::RoundRobin;
  bool tls = false;
  bool tls_verify = true;
  std::string ca_file;
  std::string sni;
  std::optional<HealthCheck> health;
  std::shared_ptr<SSL_CTX> tls_ctx;  // with tls: the client context (config/tls_context.h)
};

struct KeySource {
  enum class Kind : uint8_t { Header, Cookie };
  Kind kind;
  std::string name;  // header names as written; compared case-insensitively
};

struct Fallback {
  enum class Kind : uint8_t { Random, ClientIp, Variant };
  Kind kind = Kind::Random;
  Variant variant = Variant::Blue;  // with Kind::Variant
};

// [segments.NAME] (SPEC §13): a named set of requests; every condition given must hold.
struct Segment {
  enum class Source : uint8_t { None, Header, Cookie };
  std::string name;
  std::string keys_file;               // resolved path; "" = no keys condition
  std::shared_ptr<const KeySet> keys;  // the route's split key is in the file
  Source source = Source::None;        // with regex: a header or cookie whose value full-matches
  std::string source_name;
  std::shared_ptr<RE2> regex;
  std::vector<CountryCode> countries;  // the client's country (geoip_database) is one of these
  std::vector<Cidr> networks;          // the client address is in one of these
};
// Segment membership of a request is kept in a 64-bit set (proxy/routing/segments.h).
inline constexpr size_t kMaxSegments = 64;

struct Override {
  enum class Kind : uint8_t { Header, Cookie, ClientIp, Segment };
  Kind kind;
  std::string name;            // header or cookie name (Header/Cookie)
  std::shared_ptr<RE2> regex;  // full match against the value (Header/Cookie)
  std::vector<Cidr> networks;  // ClientIp
  uint32_t segment = 0;        // Segment: index in Snapshot::segments
  Variant variant;
};

struct ShadowSettings {
  double percent = 0.0;  // 0..100
  uint64_t max_body_bytes = 1048576;
  uint32_t max_in_flight = 1024;
  bool compare = true;
  std::vector<std::string> ignore_headers = {"date", "x-request-id"};  // lower-case
};

// One stage of a rollout (SPEC §11): the variant's share of the route's hashed traffic.
struct RolloutStage {
  double percent = 0.0;      // (0, 100]
  uint64_t hold_ms = 0;      // how long the stage runs before it may advance
  bool manual_gate = false;  // after its hold, waits for `promote`
  // Segments (indexes in Snapshot::segments) that get the rolled-out variant from this stage
  // on, whatever the percent (SPEC §13).
  std::vector<uint32_t> segments;
};

// The tolerances a rollout's variant is judged by (SPEC §11 [routes.rollout.analysis]).
struct RolloutAnalysis {
  uint64_t interval_ms = 30000;
  uint64_t warmup_ms = 60000;
  double confidence = 0.99;  // (0.5, 1)
  uint64_t min_requests = 500;
  double error_relative = 1.5;     // error_ratio.relative (>= 1)
  double error_absolute = 0.002;   // error_ratio.absolute (0..1)
  double latency_quantile = 0.95;  // latency.quantile (0, 1)
  double latency_relative = 1.5;   // latency.relative (>= 1)
  // latency.absolute: a variant request is slow only when it is also this much slower than the
  // baseline's quantile, so sub-millisecond differences (a colder connection pool) never fail a
  // rollout. An extension of SPEC §11.
  uint64_t latency_absolute_ms = 5;
  std::optional<double> shadow_mismatch;  // tolerated mismatch share (0..1); absent = no check
  double critical_error_ratio = 0.5;      // (0, 1]
  // SPEC §14: "local" judges this process's own requests; "prometheus" judges the sums of every
  // replica's, read from prometheus_url, evaluating interval k at start + k x interval + lag.
  bool prometheus = false;
  std::string prometheus_url;  // "http://host[:port][/prefix]"; set when prometheus
  uint64_t lag_ms = 30000;     // > 0
};

enum class RolloutFailure : uint8_t { Rollback, Pause };

struct Rollout {
  std::string id;
  Variant variant = Variant::Canary;
  Variant baseline = Variant::Blue;
  std::optional<int64_t> start_unix_ms;  // absent: "on_load"
  RolloutFailure on_failure = RolloutFailure::Rollback;
  std::vector<RolloutStage> stages;  // percent strictly increasing
  RolloutAnalysis analysis;
  std::string notify_url;  // "" = no notifications
};

struct Route {
  std::string name;
  // Host match: empty = any; exact (lower-case, no port); or wildcard "*.suffix" stored as
  // host_suffix = ".suffix" with host_wildcard = true.
  std::string host;
  bool host_wildcard = false;
  std::shared_ptr<RE2> path;  // null = any path; searched (partial match) on the path without query
  std::vector<KeySource> keys;
  Fallback fallback;
  std::string assign_cookie;  // "" disables
  std::string salt;           // defaults to the route name
  std::optional<Variant> failover;
  // Pool per variant (index = Variant); null when the route does not name one.
  std::array<const Pool*, kVariants> pools{};
  // Relative weights of blue, green, canary as configured (>= 0, sum > 0).
  std::array<double, kWeightedVariants> weights{};
  std::optional<ShadowSettings> shadow;
  std::vector<Override> overrides;
  // With a rollout, weights[rollout->variant] is set by the rollout's current share (SPEC §11);
  // the snapshot as loaded keeps the configured value, derived snapshots (cloneSnapshot) the
  // share's.
  std::optional<Rollout> rollout;
  // The segments (bit i = Snapshot::segments[i]) whose requests the rollout sends to its
  // variant now: those of its stages up to the current one while its share is above 0. Set
  // with the share in derived snapshots (RolloutManager::applyShares); 0 as loaded.
  uint64_t rollout_segments = 0;
};

struct Snapshot {
  std::string path;         // the config file it was loaded from
  uint64_t generation = 0;  // assigned by the server when published
  ServerSettings server;
  std::vector<Listener> listeners;  // [[listener]], one per resolved address
  // Pools by name. std::map so Route::pools pointers stay valid (nodes never move).
  std::map<std::string, Pool> pools;
  std::vector<Route> routes;
  std::vector<Segment> segments;               // by name (TOML key order)
  std::shared_ptr<const GeoIpDatabase> geoip;  // server.geoip_database; null = none

  Snapshot() = default;
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;
};

using SnapshotConstSharedPtr = std::shared_ptr<const Snapshot>;

// A copy of `snapshot` (its routes' pool pointers re-linked to the copy's pools), for a derived
// generation that differs only in route weights (a rollout's share changed, SPEC §11).
std::shared_ptr<Snapshot> cloneSnapshot(const Snapshot& snapshot);

}  // namespace sy::config
