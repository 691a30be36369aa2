#include "config/loader.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <tuple>
#include <utility>

#include "config/validate.h"

namespace sy::config {
namespace {

// ---- Key paths ----------------------------------------------------------------------------------

// Keys are printed the way TOML would need them written, so `upstreams."a.b"` stays unambiguous.
bool isBareKey(std::string_view key) {
  return !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::string childKey(const std::string& parent, std::string_view key) {
  std::string out = parent;
  if (!out.empty()) out += '.';
  if (isBareKey(key)) return out.append(key);
  out += '"';
  for (char c : key) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out += '"';
}

std::string indexKey(const std::string& parent, size_t index) {
  return parent + '[' + std::to_string(index) + ']';
}

Origin originAt(const toml::source_region& source, std::string key) {
  return Origin{source.begin.line, source.begin.column, std::move(key)};
}

// For "did you mean" hints on unknown keys.
size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// ---- Values -------------------------------------------------------------------------------------

struct Context {
  const std::string& file;
  std::vector<ConfigError>& errors;

  void error(const Origin& origin, std::string message) {
    errors.push_back(errorAt(file, origin, std::move(message)));
  }
};

const char* typeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a decimal number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time: return "a date/time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

std::string expected(std::string_view what, const toml::node& node) {
  return "expected " + std::string(what) + ", got " + typeName(node);
}

// One converter per raw value type. Each reports its own errors (an array reports each bad
// element at the element's position) and returns whether `out` holds a usable value.

bool convert(Context& ctx, const toml::node& node, const Origin& origin, std::string& out) {
  const auto* value = node.as_string();
  if (value == nullptr) {
    ctx.error(origin, expected("a string", node));
    return false;
  }
  out = value->get();
  return true;
}

bool convert(Context& ctx, const toml::node& node, const Origin& origin, bool& out) {
  const auto* value = node.as_boolean();
  if (value == nullptr) {
    ctx.error(origin, expected("true or false", node));
    return false;
  }
  out = value->get();
  return true;
}

template <class UInt>
bool convertUnsigned(Context& ctx, const toml::node& node, const Origin& origin, UInt& out) {
  const auto* value = node.as_integer();
  if (value == nullptr) {
    ctx.error(origin, expected("an integer", node));
    return false;
  }
  const int64_t v = value->get();
  if (v < 0) {
    ctx.error(origin, "must be >= 0");
    return false;
  }
  if (static_cast<uint64_t>(v) > std::numeric_limits<UInt>::max()) {
    ctx.error(origin, "must be <= " + std::to_string(std::numeric_limits<UInt>::max()));
    return false;
  }
  out = static_cast<UInt>(v);
  return true;
}

bool convert(Context& ctx, const toml::node& node, const Origin& origin, uint32_t& out) {
  return convertUnsigned(ctx, node, origin, out);
}

bool convert(Context& ctx, const toml::node& node, const Origin& origin, uint64_t& out) {
  return convertUnsigned(ctx, node, origin, out);
}

// Weights and percentages: "95" and "95.5" are both natural to write.
bool convert(Context& ctx, const toml::node& node, const Origin& origin, double& out) {
  if (const auto* integer = node.as_integer()) {
    out = static_cast<double>(integer->get());
    return true;
  }
  if (const auto* decimal = node.as_floating_point()) {
    out = decimal->get();
    return true;
  }
  ctx.error(origin, expected("a number", node));
  return false;
}

bool convert(Context& ctx, const toml::node& node, const Origin& origin, StringList& out) {
  const auto* array = node.as_array();
  if (array == nullptr) {
    ctx.error(origin, expected("an array of strings", node));
    return false;
  }
  bool ok = true;
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    Field<std::string> item;
    item.origin = originAt(element.source(), indexKey(origin.key, i));
    item.present = true;
    item.ok = convert(ctx, element, item.origin, item.value);
    ok = ok && item.ok;
    out.push_back(std::move(item));
  }
  return ok;
}

constexpr const char* kDurationExamples = "a duration like \"30s\", \"10m\", \"500ms\" or \"2h\"";

bool convert(Context& ctx, const toml::node& node, const Origin& origin, RawDuration& out) {
  const auto* value = node.as_string();
  if (value == nullptr) {
    ctx.error(origin, expected(kDurationExamples, node));
    return false;
  }
  std::string why;
  const std::optional<uint64_t> ms = parseDuration(value->get(), &why);
  if (!ms) {
    ctx.error(origin, why);
    return false;
  }
  out.ms = *ms;
  return true;
}

// The RFC 3339 text of a TOML date-time with an offset, for parseRfc3339 (one parser for both
// spellings of a time).
std::string rfc3339Text(const toml::date_time& value) {
  char text[64];
  const int offset = value.offset->minutes;
  const int magnitude = offset < 0 ? -offset : offset;
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%09u%c%02d:%02d",
                static_cast<int>(value.date.year), static_cast<int>(value.date.month),
                static_cast<int>(value.date.day), static_cast<int>(value.time.hour),
                static_cast<int>(value.time.minute), static_cast<int>(value.time.second),
                static_cast<unsigned>(value.time.nanosecond), offset < 0 ? '-' : '+',
                magnitude / 60, magnitude % 60);
  return text;
}

// "on_load" or an RFC 3339 time, as a string or as a TOML offset date-time.
bool convert(Context& ctx, const toml::node& node, const Origin& origin, RawStart& out) {
  static constexpr std::string_view kExpected = "must be \"on_load\" or an RFC 3339 time: ";
  std::string text;
  if (const auto* date_time = node.as_date_time()) {
    if (!date_time->get().offset) {
      ctx.error(origin, std::string(kExpected) +
                            "a local date-time has no UTC offset, so its moment would depend on "
                            "the host's time zone: add \"Z\" or an offset such as \"+01:00\"");
      return false;
    }
    text = rfc3339Text(date_time->get());
  } else if (const auto* string = node.as_string()) {
    text = string->get();
    if (text == "on_load") {
      out.unix_ms.reset();
      return true;
    }
  } else if (node.is_date() || node.is_time()) {
    ctx.error(origin, std::string(kExpected) + (node.is_date() ? "a date" : "a time of day") +
                          " alone is not a moment: write a full date-time with an offset, e.g. "
                          "2025-03-01T09:00:00Z");
    return false;
  } else {
    ctx.error(origin,
              expected("\"on_load\" or an RFC 3339 time such as \"2025-03-01T09:00:00Z\"", node));
    return false;
  }
  std::string why;
  const std::optional<int64_t> unix_ms = parseRfc3339(text, &why);
  if (!unix_ms) {
    ctx.error(origin, std::string(kExpected) + why);
    return false;
  }
  out.unix_ms = *unix_ms;
  return true;
}

// ---- Tables -------------------------------------------------------------------------------------

// Walks one TOML table against its schema: every read names a key the table may have, so the
// keys nobody asked for are exactly the unknown ones.
class TableReader {
 public:
  TableReader(Context& ctx, const toml::table& table, Origin origin)
      : ctx_(ctx), table_(table), origin_(std::move(origin)) {}

  Context& context() const { return ctx_; }
  const Origin& origin() const { return origin_; }

  template <class T>
  void read(std::string_view key, Field<T>& out) {
    const toml::node* node = take(key, out);
    if (node != nullptr) out.ok = convert(ctx_, *node, out.origin, out.value);
  }

  // A sub-table ([header] or inline); null when absent or not a table (reported).
  template <class T>
  const toml::table* table(std::string_view key, Field<T>& out) {
    const toml::node* node = take(key, out);
    if (node == nullptr) return nullptr;
    if (!node->is_table()) {
      ctx_.error(out.origin, expected("a table", *node));
      return nullptr;
    }
    out.ok = true;
    return node->as_table();
  }

  // The elements of an array of tables ([[key]]) with their origins; elements that are not
  // tables are reported and left out.
  std::vector<std::pair<const toml::table*, Origin>> tables(std::string_view key) {
    Field<bool> field;
    return tables(key, field, "an array of tables ([[" + std::string(key) + "]])");
  }

  // Same, also marking `out` as read() does (`ok`: an array whose elements are all tables);
  // `what` is the expectation reported when the value is not an array.
  template <class T>
  std::vector<std::pair<const toml::table*, Origin>> tables(std::string_view key, Field<T>& out,
                                                            std::string_view what) {
    const toml::node* node = take(key, out);
    if (node == nullptr) return {};
    const auto* array = node->as_array();
    if (array == nullptr) {
      ctx_.error(out.origin, expected(what, *node));
      return {};
    }
    out.ok = true;
    std::vector<std::pair<const toml::table*, Origin>> tables;
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = *array->get(i);
      Origin origin = originAt(element.source(), indexKey(out.origin.key, i));
      if (element.is_table()) {
        tables.emplace_back(element.as_table(), std::move(origin));
      } else {
        ctx_.error(origin, expected("a table", element));
        out.ok = false;
      }
    }
    return tables;
  }

  // For a table whose keys are names chosen by the user ([upstreams.NAME]): every entry must be
  // a table, read with fill(reader, name).
  template <class Fill>
  void forEachTable(Fill&& fill) {
    for (auto&& [key, node] : table_) {
      known_.emplace_back(key.str());
      Origin origin = originAt(node.source(), childKey(origin_.key, key.str()));
      if (!node.is_table()) {
        ctx_.error(origin, expected("a table", node));
        continue;
      }
      TableReader reader(ctx_, *node.as_table(), std::move(origin));
      fill(reader, key.str());
      reader.rejectUnknownKeys();
    }
  }

  void rejectUnknownKeys() {
    for (auto&& [key, node] : table_) {
      if (std::find(known_.begin(), known_.end(), key.str()) != known_.end()) continue;
      std::string message = "unknown key";
      if (const std::string* hint = closestKnown(key.str())) {
        message += " (did you mean \"" + *hint + "\"?)";
      }
      ctx_.error(originAt(key.source(), childKey(origin_.key, key.str())), std::move(message));
    }
  }

 private:
  // Marks `key` as part of the schema and fills the field's origin: the value's position when
  // present, the table's otherwise.
  template <class T>
  const toml::node* take(std::string_view key, Field<T>& out) {
    known_.emplace_back(key);
    const toml::node* node = table_.get(key);
    out.present = node != nullptr;
    out.origin = node != nullptr ? originAt(node->source(), childKey(origin_.key, key))
                                 : Origin{origin_.line, origin_.col, childKey(origin_.key, key)};
    return node;
  }

  const std::string* closestKnown(std::string_view key) const {
    const std::string* best = nullptr;
    size_t best_distance = std::numeric_limits<size_t>::max();
    for (const std::string& candidate : known_) {
      const size_t distance = editDistance(key, candidate);
      // A typo is a few edits away, a few more for long names ("client_header").
      const size_t tolerance = std::max<size_t>(2, candidate.size() / 4);
      if (distance <= tolerance && distance < best_distance && distance < candidate.size()) {
        best = &candidate;
        best_distance = distance;
      }
    }
    return best;
  }

  Context& ctx_;
  const toml::table& table_;
  Origin origin_;
  std::vector<std::string> known_;
};

// Reads the sub-table `key` into `out` with fill(reader, out.value), then rejects its unknown
// keys.
template <class T, class Fill>
void readTable(TableReader& parent, std::string_view key, Field<T>& out, Fill&& fill) {
  if (const toml::table* table = parent.table(key, out)) {
    TableReader reader(parent.context(), *table, out.origin);
    fill(reader, out.value);
    reader.rejectUnknownKeys();
  }
}

// Reads each table of the array of tables `key` with fill(reader).
template <class Fill>
void readTables(TableReader& parent, std::string_view key, Fill&& fill) {
  for (auto& [table, origin] : parent.tables(key)) {
    TableReader reader(parent.context(), *table, std::move(origin));
    fill(reader);
    reader.rejectUnknownKeys();
  }
}

// ---- The schema (SPEC §3, §11) ------------------------------------------------------------------

void readServer(TableReader& r, RawServer& server) {
  r.read("listen", server.listen);
  r.read("workers", server.workers);
  r.read("admin", server.admin);
  r.read("admin_token", server.admin_token);
  r.read("variant_header", server.variant_header);
  r.read("access_log", server.access_log);
  r.read("watch_config", server.watch_config);
  r.read("state_dir", server.state_dir);
  readTable(r, "timeouts", server.timeouts, [](TableReader& t, RawTimeouts& timeouts) {
    t.read("client_header_ms", timeouts.client_header_ms);
    t.read("client_idle_ms", timeouts.client_idle_ms);
    t.read("upstream_connect_ms", timeouts.upstream_connect_ms);
    t.read("upstream_response_ms", timeouts.upstream_response_ms);
    t.read("drain_timeout_ms", timeouts.drain_timeout_ms);
  });
  readTable(r, "limits", server.limits, [](TableReader& t, RawLimits& limits) {
    t.read("max_header_bytes", limits.max_header_bytes);
    t.read("max_body_bytes", limits.max_body_bytes);
    t.read("max_connections", limits.max_connections);
  });
  readTable(r, "http2", server.http2, [](TableReader& t, RawHttp2& http2) {
    t.read("max_concurrent_streams", http2.max_concurrent_streams);
    t.read("initial_window_bytes", http2.initial_window_bytes);
    t.read("max_header_list_bytes", http2.max_header_list_bytes);
  });
  r.read("http2_cleartext", server.http2_cleartext);
  r.read("trusted_proxies", server.trusted_proxies);
  r.read("geoip_database", server.geoip_database);
}

void readCertificate(TableReader& r, RawCertificate& cert, bool with_names) {
  cert.origin = r.origin();
  if (with_names) r.read("names", cert.names);
  r.read("cert", cert.cert);
  r.read("key", cert.key);
}

RawListener readListener(TableReader& r) {
  RawListener listener;
  listener.origin = r.origin();
  r.read("address", listener.address);
  r.read("http2", listener.http2);
  r.read("proxy_protocol", listener.proxy_protocol);
  readTable(r, "tls", listener.tls,
            [](TableReader& t, RawCertificate& cert) { readCertificate(t, cert, false); });
  readTables(r, "sni",
             [&](TableReader& t) { readCertificate(t, listener.sni.emplace_back(), true); });
  return listener;
}

RawPool readPool(TableReader& r, std::string_view name) {
  RawPool pool;
  pool.origin = r.origin();
  pool.name = name;
  r.read("servers", pool.servers);
  r.read("balance", pool.balance);
  r.read("tls", pool.tls);
  r.read("tls_verify", pool.tls_verify);
  r.read("ca_file", pool.ca_file);
  r.read("sni", pool.sni);
  readTable(r, "health", pool.health, [](TableReader& t, RawHealth& health) {
    t.read("path", health.path);
    t.read("interval_ms", health.interval_ms);
    t.read("timeout_ms", health.timeout_ms);
    t.read("unhealthy_after", health.unhealthy_after);
    t.read("healthy_after", health.healthy_after);
  });
  return pool;
}

RawOverride readOverride(TableReader& r) {
  RawOverride override_;
  override_.origin = r.origin();
  r.read("header", override_.header);
  r.read("cookie", override_.cookie);
  r.read("client_ip", override_.client_ip);
  r.read("regex", override_.regex);
  r.read("variant", override_.variant);
  r.read("segment", override_.segment);
  return override_;
}

RawSegment readSegment(TableReader& r, std::string_view name) {
  RawSegment segment;
  segment.origin = r.origin();
  segment.name = name;
  r.read("keys_file", segment.keys_file);
  r.read("header", segment.header);
  r.read("cookie", segment.cookie);
  r.read("regex", segment.regex);
  r.read("country", segment.country);
  r.read("client_ip", segment.client_ip);
  return segment;
}

// [routes.rollout] (SPEC §11).
void readRollout(TableReader& r, RawRollout& rollout) {
  r.read("id", rollout.id);
  r.read("variant", rollout.variant);
  r.read("baseline", rollout.baseline);
  r.read("start", rollout.start);
  r.read("on_failure", rollout.on_failure);
  for (auto& [table, origin] :
       r.tables("stages", rollout.stages,
                "an array of stages like [{ percent = 1, hold = \"10m\" }, ...]")) {
    TableReader t(r.context(), *table, std::move(origin));
    RawRolloutStage& stage = rollout.stages.value.emplace_back();
    stage.origin = t.origin();
    t.read("percent", stage.percent);
    t.read("hold", stage.hold);
    t.read("gate", stage.gate);
    t.read("segments", stage.segments);
    t.rejectUnknownKeys();
  }
  r.read("notify_url", rollout.notify_url);
  readTable(r, "analysis", rollout.analysis, [](TableReader& t, RawRolloutAnalysis& analysis) {
    t.read("interval", analysis.interval);
    t.read("warmup", analysis.warmup);
    t.read("confidence", analysis.confidence);
    t.read("min_requests", analysis.min_requests);
    readTable(t, "error_ratio", analysis.error_ratio, [](TableReader& e, RawErrorRatio& ratio) {
      e.read("relative", ratio.relative);
      e.read("absolute", ratio.absolute);
    });
    readTable(t, "latency", analysis.latency, [](TableReader& l, RawLatency& latency) {
      l.read("quantile", latency.quantile);
      l.read("relative", latency.relative);
      l.read("absolute", latency.absolute);
    });
    t.read("shadow_mismatch", analysis.shadow_mismatch);
    t.read("critical_error_ratio", analysis.critical_error_ratio);
    t.read("source", analysis.source);
    t.read("prometheus_url", analysis.prometheus_url);
    t.read("lag", analysis.lag);
  });
}

RawRoute readRoute(TableReader& r) {
  RawRoute route;
  route.origin = r.origin();
  r.read("name", route.name);
  readTable(r, "match", route.match, [](TableReader& t, RawMatch& match) {
    t.read("host", match.host);
    t.read("path", match.path);
  });
  r.read("key", route.key);
  r.read("fallback", route.fallback);
  r.read("assign_cookie", route.assign_cookie);
  r.read("salt", route.salt);
  r.read("failover", route.failover);
  readTable(r, "upstreams", route.upstreams, [](TableReader& t, RawVariantPools& pools) {
    for (size_t v = 0; v < kVariants; ++v) t.read(kVariantNames[v], pools.pool[v]);
  });
  readTable(r, "weights", route.weights, [](TableReader& t, RawWeights& weights) {
    for (size_t v = 0; v < kWeightedVariants; ++v) t.read(kVariantNames[v], weights.weight[v]);
  });
  readTable(r, "shadow", route.shadow, [](TableReader& t, RawShadow& shadow) {
    t.read("percent", shadow.percent);
    t.read("max_body_bytes", shadow.max_body_bytes);
    t.read("max_in_flight", shadow.max_in_flight);
    t.read("compare", shadow.compare);
    t.read("ignore_headers", shadow.ignore_headers);
  });
  readTables(r, "override", [&](TableReader& t) { route.overrides.push_back(readOverride(t)); });
  readTable(r, "rollout", route.rollout, readRollout);
  return route;
}

RawConfig readConfig(Context& ctx, const toml::table& root) {
  RawConfig raw;
  raw.file = ctx.file;
  TableReader r(ctx, root, originAt(root.source(), ""));
  readTable(r, "server", raw.server, readServer);
  readTables(r, "listener", [&](TableReader& t) { raw.listeners.push_back(readListener(t)); });
  Field<bool> upstreams;  // only its origin matters: the pools are named by their keys
  if (const toml::table* table = r.table("upstreams", upstreams)) {
    TableReader reader(ctx, *table, upstreams.origin);
    reader.forEachTable(
        [&](TableReader& t, std::string_view name) { raw.pools.push_back(readPool(t, name)); });
  }
  readTables(r, "routes", [&](TableReader& t) { raw.routes.push_back(readRoute(t)); });
  Field<bool> segments;  // the segments are named by their keys
  if (const toml::table* table = r.table("segments", segments)) {
    raw.segments_origin = segments.origin;
    TableReader reader(ctx, *table, segments.origin);
    reader.forEachTable([&](TableReader& t, std::string_view name) {
      raw.segments.push_back(readSegment(t, name));
    });
  }
  r.rejectUnknownKeys();
  return raw;
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

}  // namespace

std::optional<RawConfig> parseRaw(std::string_view toml_text, const std::string& file,
                                  std::vector<ConfigError>& errors) {
  toml::table root;
  try {
    root = toml::parse(toml_text, std::string_view(file));
  } catch (const toml::parse_error& e) {
    errors.push_back(errorAt(file, originAt(e.source(), ""), std::string(e.description())));
    return std::nullopt;
  }
  Context ctx{file, errors};
  return readConfig(ctx, root);
}

LoadResult loadSnapshotFromString(std::string_view toml_text, const std::string& path,
                                  const Resolver& resolver) {
  LoadResult result;
  try {
    std::optional<RawConfig> raw = parseRaw(toml_text, path, result.errors);
    if (!raw) return result;
    validate(*raw, result.errors);
    result.snapshot = compileSnapshot(*raw, resolver, result.errors);
    // The stages find errors in their own order; the reader wants them in file order.
    std::stable_sort(result.errors.begin(), result.errors.end(),
                     [](const ConfigError& a, const ConfigError& b) {
                       return std::tie(a.line, a.col) < std::tie(b.line, b.col);
                     });
  } catch (const std::exception& e) {
    // Only toml::parse is expected to throw, and it is handled above; this keeps the promise
    // that nothing escapes (e.g. std::bad_alloc) for callers on a reload path.
    result.snapshot.reset();
    result.errors.push_back(
        ConfigError{path, 0, 0, "", std::string("internal error: ") + e.what()});
  }
  return result;
}

LoadResult loadSnapshotFromString(std::string_view toml_text, const std::string& path) {
  return loadSnapshotFromString(toml_text, path, systemResolver());
}

LoadResult loadSnapshot(const std::string& path) {
  LoadResult result;
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  std::string text;
  if (file) {
    char buffer[16384];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) text.append(buffer, n);
  }
  // ferror also catches a directory, which fopen accepts and the first read refuses.
  if (!file || std::ferror(file.get())) {
    result.errors.push_back(
        ConfigError{path, 0, 0, "", std::string("cannot read: ") + std::strerror(errno)});
    return result;
  }
  return loadSnapshotFromString(text, path);
}

}  // namespace sy::config
