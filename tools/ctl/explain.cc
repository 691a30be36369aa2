// `switchyard-ctl explain`. Everything that decides is the proxy's code; this file only builds
// the request the proxy would see and words the answer.

#include "tools/ctl/explain.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cctype>
#include <cstring>

#include "proxy/routing/client_address.h"
#include "proxy/routing/router.h"
#include "proxy/routing/segments.h"
#include "tools/ctl/format.h"

namespace sy::ctl {
namespace {

using config::Variant;
using Reason = proxy::SplitDecision::Reason;

// decide() takes randomness for fallback = "random" and for minting assign_cookie ids. Fixed
// values keep explain reproducible; the output says those variants vary per request.
constexpr uint64_t kRandomA = 0x5eed5eed5eed5eedULL;
constexpr uint64_t kRandomB = 0x0123456789abcdefULL;

bool isOws(char c) { return c == ' ' || c == '\t'; }

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && isOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && isOws(s.back())) s.remove_suffix(1);
  return s;
}

// RFC 9110 §5.6.2 tchar: what a header name may consist of.
bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (std::isalnum(c) != 0) continue;
    if (std::strchr("!#$%&'*+-.^_`|~", c) == nullptr || c == '\0') return false;
  }
  return true;
}

// CR, LF and NUL cannot travel in a header at all; the proxy would never see such a value.
bool hasForbiddenOctet(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::optional<CtlError> parseClientIp(const std::string& text, proxy::ClientIp& out) {
  sockaddr_storage ss{};
  std::string_view t = text;
  // Accept "[::1]" as written in addresses, too.
  std::string bare(t.size() >= 2 && t.front() == '[' && t.back() == ']' ? t.substr(1, t.size() - 2)
                                                                        : t);
  if (bare.find(':') != std::string::npos) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, bare.c_str(), &sin6->sin6_addr) != 1) {
      return usageError("--client-ip: not an IPv4 or IPv6 address: " + text);
    }
  } else {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, bare.c_str(), &sin->sin_addr) != 1) {
      return usageError("--client-ip: not an IPv4 or IPv6 address: " + text);
    }
  }
  // The same conversion the proxy applies to the peer address of a connection.
  out = proxy::clientIpFromSockaddr(reinterpret_cast<const sockaddr*>(&ss));
  return std::nullopt;
}

std::string routeList(const config::Snapshot& snapshot) {
  std::string out;
  for (const config::Route& r : snapshot.routes) {
    if (!out.empty()) out += ", ";
    out += r.name;
  }
  return out.empty() ? "none" : out;
}

std::string overrideText(const config::Snapshot& snapshot, const config::Override& o) {
  switch (o.kind) {
    case config::Override::Kind::Segment:
      return "segment " +
             (o.segment < snapshot.segments.size() ? snapshot.segments[o.segment].name : "?");
    case config::Override::Kind::Header:
    case config::Override::Kind::Cookie: {
      std::string s = o.kind == config::Override::Kind::Header ? "header " : "cookie ";
      s += o.name;
      s += " full-matches ";
      s += o.regex ? quoted(o.regex->pattern()) : std::string("(any value)");
      return s;
    }
    case config::Override::Kind::ClientIp: {
      std::string s = "client_ip in [";
      for (size_t i = 0; i < o.networks.size(); ++i) {
        const config::Cidr& c = o.networks[i];
        static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        char buf[INET6_ADDRSTRLEN] = "?";
        unsigned len = c.prefix_len;
        if (std::memcmp(c.addr.data(), kMapped, sizeof(kMapped)) == 0 && len >= 96) {
          inet_ntop(AF_INET, c.addr.data() + 12, buf, sizeof(buf));
          len -= 96;
        } else {
          inet_ntop(AF_INET6, c.addr.data(), buf, sizeof(buf));
        }
        if (i > 0) s += ", ";
        s += strFormat("%s/%u", buf, len);
      }
      return s + "]";
    }
  }
  return "?";
}

// The value the override looked at, for "value ..." in the explanation.
std::optional<std::string_view> overrideValue(const config::Override& o,
                                              const proxy::Headers& headers) {
  switch (o.kind) {
    case config::Override::Kind::Header: return proxy::findHeader(headers, o.name);
    case config::Override::Kind::Cookie: return proxy::findCookie(headers, o.name);
    case config::Override::Kind::ClientIp:
    case config::Override::Kind::Segment: return std::nullopt;
  }
  return std::nullopt;
}

std::string keySourceOf(const config::Route& route, int index) {
  if (index >= 0 && static_cast<size_t>(index) < route.keys.size()) {
    const config::KeySource& k = route.keys[static_cast<size_t>(index)];
    return strFormat("%s %s (key source %d of %zu)",
                     k.kind == config::KeySource::Kind::Header ? "header" : "cookie",
                     k.name.c_str(), index + 1, route.keys.size());
  }
  return "cookie " + route.assign_cookie + " (the assign_cookie id the proxy set earlier)";
}

std::string allKeySources(const config::Route& route) {
  std::string out;
  for (const config::KeySource& k : route.keys) {
    if (!out.empty()) out += ", ";
    out += keySourceText(k);
  }
  if (!route.assign_cookie.empty()) {
    if (!out.empty()) out += ", ";
    out += "cookie:" + route.assign_cookie + " (assign_cookie)";
  }
  return out.empty() ? "none" : out;
}

std::string weightsText(const config::Route& route) {
  double sum = 0;
  for (double w : route.weights) sum += w > 0 ? w : 0;
  std::string out;
  for (size_t i = 0; i < config::kWeightedVariants; ++i) {
    if (!(route.weights[i] > 0)) continue;
    if (!out.empty()) out += ", ";
    out += strFormat("%s %s", config::kVariantNames[i], percent(route.weights[i] / sum).c_str());
  }
  return out;
}

bool isHashedKey(Reason r) { return r == Reason::Key || r == Reason::FallbackClientIp; }

std::string poolLine(const config::Route& route, Variant v) {
  const config::Pool* pool = route.pools[static_cast<size_t>(v)];
  if (pool == nullptr) return "(no pool)";
  std::string s = pool->name + ":";
  for (const config::SocketAddress& a : pool->servers) s += " " + a.text;
  return s;
}

}  // namespace

std::string_view effectiveSalt(const config::Route& route) {
  // decide() applies the same rule, so a hand-built Route without a salt agrees too.
  return route.salt.empty() ? std::string_view(route.name) : std::string_view(route.salt);
}

std::string keySourceText(const config::KeySource& source) {
  return (source.kind == config::KeySource::Kind::Header ? "header:" : "cookie:") + source.name;
}

std::variant<ExplainResult, CtlError> explain(const config::Snapshot& snapshot,
                                              const ExplainOptions& options) {
  ExplainResult r;
  r.host = options.host;
  r.path = options.path.empty() ? "/" : options.path;

  // The route: by name, else the one the proxy's router picks.
  if (!options.route_name.empty()) {
    for (size_t i = 0; i < snapshot.routes.size(); ++i) {
      if (snapshot.routes[i].name == options.route_name) {
        r.route = &snapshot.routes[i];
        r.route_index = i;
        break;
      }
    }
    if (r.route == nullptr) {
      return failure("no route named \"" + options.route_name + "\" in " + snapshot.path +
                     " (routes: " + routeList(snapshot) + ")");
    }
  } else {
    r.route = proxy::matchRoute(snapshot, options.host, r.path);
    if (r.route == nullptr) {
      return failure("no route matches host \"" + options.host + "\" and path \"" + r.path +
                     "\": the proxy answers 404");
    }
    r.route_index = static_cast<size_t>(r.route - snapshot.routes.data());
    r.route_by_match = true;
  }
  const config::Route& route = *r.route;
  r.salt = std::string(effectiveSalt(route));

  // The request: Host, the key in the first key source, then the extra headers and cookies.
  std::vector<std::string> cookie_pairs;
  if (!options.host.empty()) r.headers.push_back({"Host", options.host});
  if (options.key) {
    const std::string& key = *options.key;
    if (hasForbiddenOctet(key)) return usageError("--key: CR, LF and NUL cannot be sent");
    if (route.keys.empty() && route.assign_cookie.empty()) {
      return usageError("--key: route \"" + route.name +
                        "\" has no key source (key = []) and no assign_cookie: requests on it "
                        "are never split by a key");
    }
    if (!key.empty() && (isOws(key.front()) || isOws(key.back()))) {
      r.notes.push_back(
          "the key starts or ends with whitespace, which is not part of a header "
          "value (RFC 9110 §5.5): a real request cannot carry it that way");
    }
    if (!route.keys.empty() && route.keys[0].kind == config::KeySource::Kind::Header) {
      r.headers.push_back({route.keys[0].name, key});
    } else {
      const std::string& name = route.keys.empty() ? route.assign_cookie : route.keys[0].name;
      cookie_pairs.push_back(name + "=" + key);
    }
  }
  for (const std::string& h : options.headers) {
    const size_t colon = h.find(':');
    const std::string_view name =
        colon == std::string::npos ? std::string_view() : std::string_view(h).substr(0, colon);
    if (!isToken(name)) return usageError("--header: expected 'Name: value', got: " + h);
    const std::string_view value = trimOws(std::string_view(h).substr(colon + 1));
    if (hasForbiddenOctet(value)) return usageError("--header: CR, LF and NUL cannot be sent");
    r.headers.push_back({std::string(name), std::string(value)});
  }
  for (const std::string& c : options.cookies) {
    const size_t eq = c.find('=');
    if (eq == std::string::npos || eq == 0 || c.find(';') != std::string::npos ||
        hasForbiddenOctet(c)) {
      return usageError("--cookie: expected 'name=value' (no ';'), got: " + c);
    }
    cookie_pairs.push_back(c);
  }
  if (!cookie_pairs.empty()) {
    std::string value;
    for (const std::string& p : cookie_pairs) value += (value.empty() ? "" : "; ") + p;
    r.headers.push_back({"Cookie", value});
  }

  r.client_ip_default = options.client_ip.empty();
  r.client_ip = r.client_ip_default ? "127.0.0.1" : options.client_ip;
  proxy::ClientIp client;
  if (auto err = parseClientIp(r.client_ip, client)) return *err;
  // SPEC §13: --client-ip is the connection's address; behind a trusted balancer the proxy
  // takes the client from X-Forwarded-For, and so does explain.
  const proxy::ClientIp peer = client;
  client = proxy::requestClient(peer, r.headers, snapshot.server.trusted_proxies);
  if (client.bytes != peer.bytes) {
    r.notes.push_back("the client is " + proxy::clientIpText(client) +
                      " from X-Forwarded-For: " + r.client_ip + " is in server.trusted_proxies");
    r.client_ip = proxy::clientIpText(client);
  }

  r.snapshot = &snapshot;
  proxy::SegmentMatcher segments(snapshot.segments, snapshot.geoip.get(), r.headers, client);
  if (options.country) {
    std::string why;
    const std::optional<config::CountryCode> code =
        config::parseCountryCode(*options.country, &why);
    if (!code) return usageError("--country: " + why);
    segments.setCountry(*code);
    r.country_given = true;
  }
  // As the proxy has the route at --stage N: the stage's share, and its segments.
  const config::Route* decided = &route;
  if (options.stage) {
    if (!route.rollout) {
      return usageError("--stage: route \"" + route.name + "\" has no rollout");
    }
    const size_t stages = route.rollout->stages.size();
    if (*options.stage < 1 || *options.stage > stages) {
      return usageError(
          strFormat("--stage: route \"%s\" has stages 1..%zu", route.name.c_str(), stages));
    }
    r.stage = options.stage;
    r.staged_route = route;
    const double share = route.rollout->stages[*options.stage - 1].percent;
    r.staged_route.weights = proxy::weightsWithShare(route, route.rollout->variant, share);
    r.staged_route.rollout_segments = proxy::rolloutSegments(*route.rollout, *options.stage, share);
    decided = &r.staged_route;
  }
  r.decision = proxy::decide(*decided, r.headers, client, kRandomA, kRandomB, &segments);
  r.segments = segments.all();
  r.country = segments.country();

  // Under an override (or a rollout segment), what the request's key alone would have picked:
  // the same call on the same route minus its overrides and segments.
  const proxy::SplitDecision* keyed = &r.decision;
  if (r.decision.reason == Reason::Override || r.decision.reason == Reason::RolloutSegment) {
    config::Route plain = *decided;
    plain.overrides.clear();
    plain.rollout_segments = 0;
    r.without_overrides = proxy::decide(plain, r.headers, client, kRandomA, kRandomB);
    keyed = &*r.without_overrides;
  }
  if (isHashedKey(keyed->reason)) {
    std::array<proxy::VariantScore, config::kWeightedVariants> scores{};
    for (size_t i = 0; i < config::kWeightedVariants; ++i) {
      scores[i] =
          proxy::variantScore(r.salt, static_cast<Variant>(i), decided->weights[i], keyed->key);
    }
    r.scores = scores;
  }
  // As proxy/mirror.cc samples: on the key the decision hashed (a request key, or the client
  // address with fallback = "client_ip"); at random when the decision has none (an override,
  // fallback = a variant) or a fresh random one (fallback = "random", a new assign_cookie id).
  if (route.shadow && route.pools[static_cast<size_t>(Variant::Shadow)] != nullptr &&
      isHashedKey(r.decision.reason)) {
    r.shadow_sampled = proxy::shadowSampled(r.salt, r.decision.key, route.shadow->percent);
  }

  if (options.key && keyed->reason == Reason::Key && keyed->key_source_index == 0 &&
      keyed->key != *options.key) {
    r.notes.push_back("the proxy hashes " + quoted(keyed->key) + ", not " + quoted(*options.key) +
                      ": a cookie value ends at ';', and surrounding blanks and quotes go");
  }
  if (options.key && options.key->empty()) {
    r.notes.push_back("an empty key counts as absent (every such client would share a variant)");
  }
  return r;
}

std::string formatExplain(const ExplainResult& r) {
  const config::Route& route = r.stage ? r.staged_route : *r.route;
  const proxy::SplitDecision& d = r.decision;
  std::string out;
  // "label    text", word-wrapped to 100 columns under the text.
  auto line = [&out](const char* label, const std::string& text) {
    out += wrapText(text, strFormat("%-9s", label), 9);
  };
  const std::string route_path = strFormat("routes[%zu]", r.route_index);

  std::string route_text = route.name + " (" + route_path + ")";
  if (r.route_by_match) {
    route_text +=
        ", the first route matching host " + quoted(r.host) + " and path " + quoted(r.path);
  }
  line("route", route_text);

  const proxy::SplitDecision& keyed = r.without_overrides ? *r.without_overrides : d;
  // What the request would get without its override or stage segment.
  const std::string by_key_alone =
      keyed.reason == Reason::FallbackRandom || keyed.reason == Reason::AssignedCookie
          ? std::string("a variant drawn per request")
          : std::string(config::variantName(keyed.variant));
  if (keyed.reason == Reason::Key) {
    line("key", quoted(keyed.key) + " from " + keySourceOf(route, keyed.key_source_index));
  } else {
    line("key", "none present (sources: " + allKeySources(route) + ")");
  }
  if (r.scores) {
    std::string salt = quoted(r.salt);
    if (route.salt.empty() || route.salt == route.name) salt += " (the route name)";
    line("salt", salt);
  }

  if (r.snapshot != nullptr && !r.snapshot->segments.empty()) {
    const std::vector<config::Segment>& all = r.snapshot->segments;
    std::string in;
    for (size_t i = 0; i < all.size() && i < config::kMaxSegments; ++i) {
      if ((r.segments >> i) & 1) in += (in.empty() ? "" : ", ") + all[i].name;
    }
    std::string defined;
    for (const config::Segment& s : all) defined += (defined.empty() ? "" : ", ") + s.name;
    line("segments", (in.empty() ? std::string("none") : in) + " (defined: " + defined + ")");
  }
  if (r.country_given || (r.snapshot != nullptr && r.snapshot->geoip)) {
    char buf[2];
    const std::string_view code = config::countryText(r.country, buf);
    line("country", (code.empty() ? std::string("unknown") : std::string(code)) +
                        (r.country_given ? " (--country)"
                                         : " (geoip_database, for client " + r.client_ip + ")"));
  }
  if (route.rollout && r.snapshot != nullptr) {
    const config::Rollout& rollout = *route.rollout;
    for (size_t i = 0; i < rollout.stages.size(); ++i) {
      for (uint32_t index : rollout.stages[i].segments) {
        if (index >= r.snapshot->segments.size() || !((r.segments >> index) & 1)) continue;
        std::string text = strFormat(
            "%s: the request is in segment %s, which gets %s from stage %zu (%s) on, "
            "whatever the share, unless the rollout is rolled back or aborted",
            rollout.id.c_str(), r.snapshot->segments[index].name.c_str(),
            config::variantName(rollout.variant), i + 1,
            (weightText(rollout.stages[i].percent) + "%").c_str());
        if (!r.stage) text += " (--stage N decides as at stage N)";
        line("rollout", text);
      }
    }
    if (r.stage) {
      line("stage", strFormat("as at stage %u of rollout %s: %s gets %s of the hashed traffic",
                              *r.stage, rollout.id.c_str(), config::variantName(rollout.variant),
                              (weightText(rollout.stages[*r.stage - 1].percent) + "%").c_str()));
    }
  }

  const std::string variant = config::variantName(d.variant);
  const std::string no_key = "no key present, so fallback = ";
  switch (d.reason) {
    case Reason::Override: {
      const config::Override& o = route.overrides[static_cast<size_t>(d.override_index)];
      line("variant", variant);
      std::string why =
          strFormat("%s.override[%d] matched: ", route_path.c_str(), d.override_index);
      why += overrideText(*r.snapshot, o);
      if (auto value = overrideValue(o, r.headers)) {
        why += " (value " + quoted(*value) + ")";
      } else if (o.kind == config::Override::Kind::ClientIp) {
        why += " (client " + r.client_ip + ")";
      }
      why +=
          "; overrides are tried in order before the key, and without them this request "
          "would get ";
      why += by_key_alone;
      line("why", why);
      break;
    }
    case Reason::RolloutSegment: {
      line("variant", variant);
      const std::string name = r.snapshot->segments[static_cast<size_t>(d.segment_index)].name;
      std::string why = "in segment " + name + ", which rollout " + route.rollout->id +
                        " sends to " + variant + " at stage " + std::to_string(*r.stage) +
                        " whatever the share (overrides come first); by its key alone it "
                        "would get ";
      why += by_key_alone;
      line("why", why);
      break;
    }
    case Reason::Key:
      line("variant", variant);
      line("why",
           "the highest score of the weighted hash of (salt, variant, key); "
           "score = -weight / ln(u), u from the hash");
      break;
    case Reason::FallbackClientIp:
      line("variant", variant);
      line("why", no_key + "\"client_ip\": the client address " + quoted(r.client_ip) +
                      " is hashed as the key" +
                      (r.client_ip_default ? " (the default; set it with --client-ip)" : ""));
      break;
    case Reason::FallbackVariant:
      line("variant", variant);
      line("why", no_key + quoted(variant));
      break;
    case Reason::FallbackRandom:
      line("variant", "varies per request");
      line("why", no_key + "\"random\": each request is hashed with a fresh random value (" +
                      weightsText(route) + ")");
      break;
    case Reason::AssignedCookie:
      line("variant", "varies per new client");
      line("why", "no key present, so the proxy answers with Set-Cookie: " + route.assign_cookie +
                      "=<random 32-hex id> and hashes that id (" + weightsText(route) +
                      "); the client keeps its variant from then on");
      break;
  }

  if (r.scores) {
    const std::array<proxy::VariantScore, config::kWeightedVariants>& s = *r.scores;
    double sum = 0;
    for (double w : route.weights) sum += w > 0 ? w : 0;
    out += "\n";
    if (r.without_overrides) {
      out += d.reason == Reason::Override ? "  without overrides, the key alone gives:\n"
                                          : "  without the segment, the key alone gives:\n";
    }
    Table t("lrrlrrl");
    t.row({"variant", "weight", "share", "hash", "u", "score", ""});
    for (size_t i = 0; i < config::kWeightedVariants; ++i) {
      const double w = route.weights[i];
      const bool candidate = w > 0;
      const bool winner = candidate && static_cast<size_t>(keyed.variant) == i;
      t.row({config::kVariantNames[i], weightText(w), percent(candidate ? w / sum : 0.0),
             strFormat("%016llx", static_cast<unsigned long long>(s[i].hash)),
             strFormat("%.9f", s[i].u),
             candidate ? strFormat("%.6g", s[i].score) : std::string("-"),
             winner ? "<- highest" : (candidate ? "" : "weight 0: not a candidate")});
    }
    out += t.render("  ") + "\n";
  }

  if (route.shadow && route.pools[static_cast<size_t>(Variant::Shadow)] != nullptr) {
    const std::string pct = weightText(route.shadow->percent) + "%";
    if (r.shadow_sampled) {
      line("shadow", std::string(*r.shadow_sampled ? "mirrored: the key is inside"
                                                   : "not mirrored: the key is outside") +
                         " the " + pct +
                         " sample (sampled per key, so a user's whole session "
                         "is mirrored or none of it)");
    } else if (d.reason == Reason::Override || d.reason == Reason::RolloutSegment) {
      line("shadow", "mirrored at random, " + pct + " of requests decided by an override");
    } else {
      line("shadow", "mirrored at random, " + pct + " of requests that have no key");
    }
  }
  if (d.reason != Reason::FallbackRandom && d.reason != Reason::AssignedCookie) {
    std::string pool = poolLine(route, d.variant);
    if (route.failover) {
      pool += std::string(" (failover to ") + config::variantName(*route.failover) +
              " when it has no healthy server)";
    } else {
      pool += " (no failover: 503 when it has no healthy server)";
    }
    line("pool", pool);
  }
  for (const std::string& n : r.notes) line("note", n);
  return out;
}

}  // namespace sy::ctl
