#include "tools/ctl/cli.h"

#include <cerrno>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <variant>

#include "config/loader.h"
#include "tools/ctl/error.h"
#include "tools/ctl/explain.h"
#include "tools/ctl/format.h"
#include "tools/ctl/rollout.h"
#include "tools/ctl/simulate.h"
#include "tools/ctl/status.h"

namespace sy::ctl {
namespace {

constexpr const char* kUsage =
    "usage: switchyard-ctl check FILE\n"
    "       switchyard-ctl explain FILE (--route NAME | --host HOST [--path PATH]) [--key KEY]\n"
    "                      [--header 'Name: value']... [--cookie 'name=value']...\n"
    "                      [--client-ip IP] [--country CC] [--stage N]\n"
    "       switchyard-ctl simulate FILE --route NAME [--keys N] [--weights blue=90,canary=10]\n"
    "                      [--seed S]\n"
    "       switchyard-ctl reload --admin HOST:PORT [--token T] [--timeout SECONDS]\n"
    "       switchyard-ctl status --admin HOST:PORT [--timeout SECONDS]\n"
    "       switchyard-ctl rollout status --admin HOST:PORT [--route NAME] [--token T]\n"
    "                      [--timeout SECONDS]\n"
    "       switchyard-ctl rollout pause|resume|promote|abort|retry --admin HOST:PORT\n"
    "                      --route NAME [--reason TEXT] [--to 100] [--token T]\n"
    "                      [--timeout SECONDS]\n"
    "       switchyard-ctl rollout preview FILE --route NAME [--keys N] [--seed S]\n"
    "\n"
    "  check     validate FILE exactly as `switchyard --check` does\n"
    "  explain   the variant a request with KEY gets on a route, and why (the key goes into the\n"
    "            route's first key source; --header/--cookie add more, e.g. to try overrides;\n"
    "            without --route, --host/--path pick the route as the proxy would; it names\n"
    "            the segments the request is in, its country from --country or from the\n"
    "            config's geoip_database for --client-ip, and with --stage N decides as the\n"
    "            proxy does while the route's rollout is at stage N)\n"
    "  simulate  shares per variant over N random keys (default 100000, seed 1); with\n"
    "            --weights (unlisted variants are 0), also how many keys would move, and where\n"
    "  reload    POST /reload on the admin endpoint and print the answer\n"
    "  status    GET /status on the admin endpoint, as tables\n"
    "  rollout status   GET /rollouts (or /rollouts/NAME): each rollout's state, stage and\n"
    "            share, its checks' evidence against their thresholds, verdict and history\n"
    "  rollout pause|resume|promote|abort|retry   POST /rollouts/NAME/ACTION (--reason is\n"
    "            recorded in the rollout's history; promote --to 100 goes to the last stage)\n"
    "            and print the rollout's new state\n"
    "  rollout preview  per stage of the route's rollout in FILE: its weights, the share of\n"
    "            N random keys (default 100000, seed 1) per variant, and how many keys move\n"
    "            from which variant to which; and that a rollback returns every key\n"
    "\n"
    "exit status: 0 ok, 1 config error or failed call, 2 usage error\n";

struct OptionSpec {
  bool repeatable = false;
};

// Parsed "--name value" / "--name=value" options and positional arguments.
struct Parsed {
  std::map<std::string, std::vector<std::string>> options;
  std::vector<std::string> positional;
  bool help = false;  // --help / -h anywhere an option may stand

  bool has(const std::string& name) const { return options.count(name) != 0; }
  const std::string& one(const std::string& name) const { return options.at(name).front(); }
  std::vector<std::string> all(const std::string& name) const {
    const auto it = options.find(name);
    return it == options.end() ? std::vector<std::string>() : it->second;
  }
};

std::variant<Parsed, CtlError> parseOptions(const std::string& command,
                                            const std::vector<std::string>& args,
                                            const std::map<std::string, OptionSpec>& spec) {
  Parsed p;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      p.help = true;
      continue;
    }
    if (a.size() < 2 || a.compare(0, 2, "--") != 0) {
      p.positional.push_back(a);
      continue;
    }
    std::string name = a;
    std::optional<std::string> value;
    if (const size_t eq = a.find('='); eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    }
    const auto it = spec.find(name);
    if (it == spec.end()) return usageError(command + ": unknown option " + name);
    if (!value) {
      if (i + 1 >= args.size()) return usageError(command + ": " + name + " needs a value");
      value = args[++i];
    }
    std::vector<std::string>& slot = p.options[name];
    if (!slot.empty() && !it->second.repeatable) {
      return usageError(command + ": " + name + " given more than once");
    }
    slot.push_back(*value);
  }
  return p;
}

std::optional<CtlError> oneFile(const std::string& command, const Parsed& p) {
  if (p.positional.size() == 1) return std::nullopt;
  if (p.positional.empty()) return usageError(command + ": missing FILE");
  return usageError(command + ": one FILE expected, got " + std::to_string(p.positional.size()) +
                    " (" + p.positional[1] + "?)");
}

std::optional<CtlError> noPositional(const std::string& command, const Parsed& p) {
  if (p.positional.empty()) return std::nullopt;
  return usageError(command + ": unexpected argument " + p.positional[0]);
}

std::optional<uint64_t> parseUnsigned(const std::string& s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno == ERANGE || *end != '\0') return std::nullopt;
  return static_cast<uint64_t>(v);
}

// --keys and --seed as simulate and rollout preview take them.
std::optional<CtlError> keysAndSeed(const std::string& command, const Parsed& p, uint64_t& keys,
                                    uint64_t& seed) {
  // 1e9 keys already take minutes; more is a typo, not a wish.
  constexpr uint64_t kMaxKeys = 1000000000;
  if (p.has("--keys")) {
    const std::optional<uint64_t> n = parseUnsigned(p.one("--keys"));
    if (!n || *n == 0 || *n > kMaxKeys) {
      return usageError(command + ": --keys: expected 1.." + groupDigits(kMaxKeys) + ", got \"" +
                        p.one("--keys") + "\"");
    }
    keys = *n;
  }
  if (p.has("--seed")) {
    const std::optional<uint64_t> s = parseUnsigned(p.one("--seed"));
    if (!s) {
      return usageError(command + ": --seed: expected an unsigned 64-bit integer, got \"" +
                        p.one("--seed") + "\"");
    }
    seed = *s;
  }
  return std::nullopt;
}

// Loads FILE as the proxy does; prints the errors and returns null when it is invalid.
std::shared_ptr<config::Snapshot> load(const std::string& path, std::ostream& err) {
  config::LoadResult r = config::loadSnapshot(path);
  if (!r.ok()) {
    const std::string text = config::formatErrors(r.errors);
    err << text;
    if (!text.empty() && text.back() != '\n') err << '\n';
    return nullptr;
  }
  return r.snapshot;
}

int report(const CtlError& e, std::ostream& err) {
  err << "switchyard-ctl: " << e.message << '\n';
  if (e.exit_code == kExitUsage) err << "(switchyard-ctl --help for usage)\n";
  return e.exit_code;
}

const config::Route* findRoute(const config::Snapshot& s, const std::string& name) {
  for (const config::Route& r : s.routes) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

CtlError noSuchRoute(const config::Snapshot& s, const std::string& name, const std::string& file) {
  std::string names;
  for (const config::Route& r : s.routes) names += (names.empty() ? "" : ", ") + r.name;
  return failure("no route named \"" + name + "\" in " + file +
                 " (routes: " + (names.empty() ? "none" : names) + ")");
}

int cmdCheck(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto parsed = parseOptions("check", args, {});
  if (auto* e = std::get_if<CtlError>(&parsed)) return report(*e, err);
  const Parsed& p = std::get<Parsed>(parsed);
  if (p.help) {
    out << kUsage;
    return kExitOk;
  }
  if (auto e = oneFile("check", p)) return report(*e, err);
  if (load(p.positional[0], err) == nullptr) return kExitFailure;
  out << p.positional[0] << ": ok\n";
  return kExitOk;
}

int cmdExplain(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto parsed = parseOptions("explain", args,
                             {{"--route", {}},
                              {"--host", {}},
                              {"--path", {}},
                              {"--key", {}},
                              {"--header", {true}},
                              {"--cookie", {true}},
                              {"--client-ip", {}},
                              {"--country", {}},
                              {"--stage", {}}});
  if (auto* e = std::get_if<CtlError>(&parsed)) return report(*e, err);
  const Parsed& p = std::get<Parsed>(parsed);
  if (p.help) {
    out << kUsage;
    return kExitOk;
  }
  if (auto e = oneFile("explain", p)) return report(*e, err);
  if (!p.has("--route") && !p.has("--host") && !p.has("--path")) {
    return report(usageError("explain: give --route NAME, or --host/--path to pick the route "
                             "as the proxy would"),
                  err);
  }
  ExplainOptions o;
  if (p.has("--route")) o.route_name = p.one("--route");
  if (p.has("--host")) o.host = p.one("--host");
  if (p.has("--path")) {
    o.path = p.one("--path");
    if (o.path.empty() || o.path.front() != '/') {
      return report(usageError("explain: --path must start with '/'"), err);
    }
  }
  if (p.has("--route") && o.route_name.empty()) {
    return report(usageError("explain: --route needs a name"), err);
  }
  if (p.has("--key")) o.key = p.one("--key");
  o.headers = p.all("--header");
  o.cookies = p.all("--cookie");
  if (p.has("--client-ip")) {
    o.client_ip = p.one("--client-ip");
    if (o.client_ip.empty())
      return report(usageError("explain: --client-ip needs an address"), err);
  }
  if (p.has("--country")) o.country = p.one("--country");
  if (p.has("--stage")) {
    const std::optional<uint64_t> stage = parseUnsigned(p.one("--stage"));
    if (!stage || *stage == 0 || *stage > 1000) {
      return report(usageError("explain: --stage: expected a stage number (1, 2, ...), got \"" +
                               p.one("--stage") + "\""),
                    err);
    }
    o.stage = static_cast<uint32_t>(*stage);
  }

  const std::shared_ptr<config::Snapshot> snap = load(p.positional[0], err);
  if (!snap) return kExitFailure;
  auto result = explain(*snap, o);
  if (auto* e = std::get_if<CtlError>(&result)) return report(*e, err);
  out << formatExplain(std::get<ExplainResult>(result));
  return kExitOk;
}

int cmdSimulate(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto parsed = parseOptions("simulate", args,
                             {{"--route", {}}, {"--keys", {}}, {"--weights", {}}, {"--seed", {}}});
  if (auto* e = std::get_if<CtlError>(&parsed)) return report(*e, err);
  const Parsed& p = std::get<Parsed>(parsed);
  if (p.help) {
    out << kUsage;
    return kExitOk;
  }
  if (auto e = oneFile("simulate", p)) return report(*e, err);
  if (!p.has("--route")) return report(usageError("simulate: --route NAME is required"), err);

  SimulateOptions o;
  if (auto e = keysAndSeed("simulate", p, o.keys, o.seed)) return report(*e, err);

  const std::shared_ptr<config::Snapshot> snap = load(p.positional[0], err);
  if (!snap) return kExitFailure;
  const config::Route* route = findRoute(*snap, p.one("--route"));
  if (route == nullptr) return report(noSuchRoute(*snap, p.one("--route"), p.positional[0]), err);
  if (p.has("--weights")) {
    auto w = parseWeights(p.one("--weights"), *route);
    if (auto* e = std::get_if<CtlError>(&w)) return report(*e, err);
    o.new_weights = std::get<Weights>(w);
  }
  out << formatSimulate(simulate(*route, o));
  return kExitOk;
}

struct AdminTarget {
  std::string host;
  uint16_t port = 0;
  std::string host_header;
  int timeout_seconds = 10;
};

std::variant<AdminTarget, CtlError> adminTarget(const std::string& command, const Parsed& p) {
  if (auto e = noPositional(command, p)) return *e;
  if (!p.has("--admin")) return usageError(command + ": --admin HOST:PORT is required");
  AdminTarget t;
  std::string error;
  if (!parseAdminAddress(p.one("--admin"), t.host, t.port, error)) {
    return usageError(command + ": --admin: " + error);
  }
  t.host_header = t.host.find(':') != std::string::npos ? "[" + t.host + "]" : t.host;
  t.host_header += ":" + std::to_string(t.port);
  if (p.has("--timeout")) {
    const std::optional<uint64_t> s = parseUnsigned(p.one("--timeout"));
    if (!s || *s == 0 || *s > 3600) {
      return usageError(command + ": --timeout: expected 1..3600 seconds, got \"" +
                        p.one("--timeout") + "\"");
    }
    t.timeout_seconds = static_cast<int>(*s);
  }
  return t;
}

HttpRequest requestTo(const AdminTarget& t, const char* method, const char* path) {
  HttpRequest r;
  r.host = t.host;
  r.port = t.port;
  r.method = method;
  r.path = path;
  r.timeout_seconds = t.timeout_seconds;
  r.headers.emplace_back("Host", t.host_header);
  return r;
}

void addToken(const Parsed& p, HttpRequest& req) {
  if (p.has("--token") && !p.one("--token").empty()) {
    req.headers.emplace_back("Authorization", "Bearer " + p.one("--token"));
  }
}

// The admin endpoint did not answer at all (refused, timed out).
CtlError noAnswer(const std::string& command, const AdminTarget& t, const HttpResponse& resp) {
  return failure(command + ": no answer from the admin endpoint " + t.host_header + ": " +
                 resp.error);
}

std::string trimmedBody(const std::string& body) {
  std::string b = body;
  while (!b.empty() && (b.back() == '\n' || b.back() == '\r')) b.pop_back();
  return b;
}

int cmdReload(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
              const HttpTransport& http) {
  auto parsed = parseOptions("reload", args, {{"--admin", {}}, {"--token", {}}, {"--timeout", {}}});
  if (auto* e = std::get_if<CtlError>(&parsed)) return report(*e, err);
  const Parsed& p = std::get<Parsed>(parsed);
  if (p.help) {
    out << kUsage;
    return kExitOk;
  }
  auto target = adminTarget("reload", p);
  if (auto* e = std::get_if<CtlError>(&target)) return report(*e, err);
  const AdminTarget& t = std::get<AdminTarget>(target);

  HttpRequest req = requestTo(t, "POST", "/reload");
  addToken(p, req);
  const HttpResponse resp = http(req);
  if (resp.status == 0) return report(noAnswer("reload", t, resp), err);
  const std::string body = trimmedBody(resp.body);
  if (resp.status == 200) {
    out << body << '\n';
    return kExitOk;
  }
  std::string what = "reload failed (HTTP " + std::to_string(resp.status) + ")";
  if (resp.status == 401) {
    what += p.has("--token") ? ": the admin token was refused"
                             : ": the proxy needs an admin token (--token)";
  } else if (resp.status == 400) {
    what += ": the new config is invalid; the proxy keeps serving the old one";
  }
  err << "switchyard-ctl: " << what << '\n';
  if (!body.empty()) err << body << '\n';
  return kExitFailure;
}

int cmdStatus(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
              const HttpTransport& http) {
  auto parsed = parseOptions("status", args, {{"--admin", {}}, {"--timeout", {}}});
  if (auto* e = std::get_if<CtlError>(&parsed)) return report(*e, err);
  const Parsed& p = std::get<Parsed>(parsed);
  if (p.help) {
    out << kUsage;
    return kExitOk;
  }
  auto target = adminTarget("status", p);
  if (auto* e = std::get_if<CtlError>(&target)) return report(*e, err);
  const AdminTarget& t = std::get<AdminTarget>(target);

  const HttpResponse resp = http(requestTo(t, "GET", "/status"));
  if (resp.status == 0) return report(noAnswer("status", t, resp), err);
  if (resp.status != 200) {
    err << "switchyard-ctl: status: HTTP " << resp.status << " from " << t.host_header << '\n';
    if (!resp.body.empty()) err << trimmedBody(resp.body) << '\n';
    return kExitFailure;
  }
  auto text = formatStatus(resp.body);
  if (auto* e = std::get_if<CtlError>(&text)) return report(*e, err);
  out << std::get<std::string>(text);
  return kExitOk;
}

// A failed admin call: why, and the server's words.
int adminFailure(const std::string& command, const Parsed& p, const HttpResponse& resp,
                 const std::string& what, std::ostream& err) {
  std::string line = command + ": " + what + " (HTTP " + std::to_string(resp.status) + ")";
  if (resp.status == 401) {
    line += p.has("--token") ? ": the admin token was refused"
                             : ": the proxy needs an admin token (--token)";
  }
  err << "switchyard-ctl: " << line << '\n';
  const std::string body =
      resp.status == 409 ? rolloutErrorText(resp.body) : trimmedBody(resp.body);
  if (!body.empty()) err << body << '\n';
  return kExitFailure;
}

int cmdRolloutStatus(const std::string& command, const Parsed& p, std::ostream& out,
                     std::ostream& err, const HttpTransport& http) {
  auto target = adminTarget(command, p);
  if (auto* e = std::get_if<CtlError>(&target)) return report(*e, err);
  const AdminTarget& t = std::get<AdminTarget>(target);
  if (p.has("--route") && p.one("--route").empty()) {
    return report(usageError(command + ": --route needs a name"), err);
  }
  const std::string path = rolloutPath(p.has("--route") ? p.one("--route") : "");
  HttpRequest req = requestTo(t, "GET", path.c_str());
  addToken(p, req);
  const HttpResponse resp = http(req);
  if (resp.status == 0) return report(noAnswer(command, t, resp), err);
  if (resp.status != 200) {
    std::string what = "GET " + path + " failed";
    if (resp.status == 404) {
      what = p.has("--route") ? "no rollout on route \"" + p.one("--route") + "\""
                              : "the proxy has no /rollouts (too old?)";
    }
    return adminFailure(command, p, resp, what, err);
  }
  auto text = formatRolloutStatus(resp.body);
  if (auto* e = std::get_if<CtlError>(&text)) return report(*e, err);
  out << std::get<std::string>(text);
  return kExitOk;
}

int cmdRolloutAction(const std::string& command, const std::string& action, const Parsed& p,
                     std::ostream& out, std::ostream& err, const HttpTransport& http) {
  auto target = adminTarget(command, p);
  if (auto* e = std::get_if<CtlError>(&target)) return report(*e, err);
  const AdminTarget& t = std::get<AdminTarget>(target);
  if (!p.has("--route") || p.one("--route").empty()) {
    return report(usageError(command + ": --route NAME is required"), err);
  }
  if (p.has("--to")) {
    if (action != "promote") {
      return report(usageError(command + ": --to is only for promote (promote --to 100)"), err);
    }
    if (p.one("--to") != "100") {
      return report(usageError(command + ": --to: only 100 (straight to the last stage), got \"" +
                               p.one("--to") + "\""),
                    err);
    }
  }
  const std::string route = p.one("--route");
  std::string path = rolloutPath(route, action);
  if (p.has("--to")) path += "?to=100";
  HttpRequest req = requestTo(t, "POST", path.c_str());
  addToken(p, req);
  if (p.has("--reason")) {
    req.body = reasonBody(p.one("--reason"));
    req.headers.emplace_back("Content-Type", "application/json");
  }
  const HttpResponse resp = http(req);
  if (resp.status == 0) return report(noAnswer(command, t, resp), err);
  if (resp.status != 200) {
    std::string what = action + " failed";
    if (resp.status == 404) what = "no rollout on route \"" + route + "\"";
    if (resp.status == 409) what = action + " is not allowed now";
    return adminFailure(command, p, resp, what, err);
  }
  auto text = formatRolloutAction(resp.body);
  if (auto* e = std::get_if<CtlError>(&text)) return report(*e, err);
  out << std::get<std::string>(text);
  return kExitOk;
}

int cmdRolloutPreview(const std::string& command, const Parsed& p, std::ostream& out,
                      std::ostream& err) {
  if (auto e = oneFile(command, p)) return report(*e, err);
  if (!p.has("--route") || p.one("--route").empty()) {
    return report(usageError(command + ": --route NAME is required"), err);
  }
  PreviewOptions o;
  if (auto e = keysAndSeed(command, p, o.keys, o.seed)) return report(*e, err);
  const std::shared_ptr<config::Snapshot> snap = load(p.positional[0], err);
  if (!snap) return kExitFailure;
  const config::Route* route = findRoute(*snap, p.one("--route"));
  if (route == nullptr) return report(noSuchRoute(*snap, p.one("--route"), p.positional[0]), err);
  auto result = previewRollout(*route, o);
  if (auto* e = std::get_if<CtlError>(&result)) return report(*e, err);
  out << formatPreview(std::get<PreviewResult>(result));
  return kExitOk;
}

// `rollout SUB ...`: args[0] is "rollout".
int cmdRollout(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
               const HttpTransport& http) {
  if (args.size() < 2) {
    return report(usageError("rollout: expected status, pause, resume, promote, abort, retry or "
                             "preview"),
                  err);
  }
  const std::string& sub = args[1];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    out << kUsage;
    return kExitOk;
  }
  const std::string command = "rollout " + sub;
  // parseOptions skips its first element, the sub-command here.
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  std::map<std::string, OptionSpec> spec;
  if (sub == "status") {
    spec = {{"--admin", {}}, {"--route", {}}, {"--token", {}}, {"--timeout", {}}};
  } else if (isRolloutAction(sub)) {
    spec = {{"--admin", {}}, {"--route", {}}, {"--reason", {}},
            {"--to", {}},    {"--token", {}}, {"--timeout", {}}};
  } else if (sub == "preview") {
    spec = {{"--route", {}}, {"--keys", {}}, {"--seed", {}}};
  } else {
    return report(usageError("rollout: unknown sub-command \"" + sub +
                             "\" (status, pause, resume, promote, abort, retry, preview)"),
                  err);
  }
  auto parsed = parseOptions(command, rest, spec);
  if (auto* e = std::get_if<CtlError>(&parsed)) return report(*e, err);
  const Parsed& p = std::get<Parsed>(parsed);
  if (p.help) {
    out << kUsage;
    return kExitOk;
  }
  if (sub == "status") return cmdRolloutStatus(command, p, out, err, http);
  if (sub == "preview") return cmdRolloutPreview(command, p, out, err);
  return cmdRolloutAction(command, sub, p, out, err, http);
}

}  // namespace

bool parseAdminAddress(std::string_view text, std::string& host, uint16_t& port,
                       std::string& error) {
  std::string_view t = text;
  if (t.substr(0, 7) == "http://") t.remove_prefix(7);
  while (!t.empty() && t.back() == '/') t.remove_suffix(1);
  std::string_view h;
  std::string_view p;
  if (!t.empty() && t.front() == '[') {
    const size_t close = t.find(']');
    if (close == std::string_view::npos || close + 1 >= t.size() || t[close + 1] != ':') {
      error = "expected HOST:PORT or [IPv6]:PORT, got \"" + std::string(text) + "\"";
      return false;
    }
    h = t.substr(1, close - 1);
    p = t.substr(close + 2);
  } else {
    const size_t colon = t.rfind(':');
    if (colon == std::string_view::npos || t.find(':') != colon) {
      error = "expected HOST:PORT or [IPv6]:PORT, got \"" + std::string(text) + "\"";
      return false;
    }
    h = t.substr(0, colon);
    p = t.substr(colon + 1);
  }
  const std::optional<uint64_t> n = parseUnsigned(std::string(p));
  if (h.empty() || !n || *n == 0 || *n > 65535) {
    error = "expected HOST:PORT with a port 1..65535, got \"" + std::string(text) + "\"";
    return false;
  }
  host = std::string(h);
  port = static_cast<uint16_t>(*n);
  return true;
}

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
        const HttpTransport& http) {
  if (args.empty()) {
    err << kUsage;
    return kExitUsage;
  }
  const std::string& command = args[0];
  if (command == "--help" || command == "-h" || command == "help") {
    out << kUsage;
    return kExitOk;
  }
  if (command == "--version") {
    out << "switchyard-ctl " << SWITCHYARD_VERSION << '\n';
    return kExitOk;
  }
  if (command == "check") return cmdCheck(args, out, err);
  if (command == "explain") return cmdExplain(args, out, err);
  if (command == "simulate") return cmdSimulate(args, out, err);
  if (command == "reload") return cmdReload(args, out, err, http);
  if (command == "status") return cmdStatus(args, out, err, http);
  if (command == "rollout") return cmdRollout(args, out, err, http);
  err << "switchyard-ctl: unknown command \"" << command << "\"\n" << kUsage;
  return kExitUsage;
}

}  // namespace sy::ctl
