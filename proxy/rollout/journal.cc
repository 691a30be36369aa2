#include "proxy/rollout/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace sy::proxy {
namespace {

// mkdir -p; true when `path` is a directory at the end.
bool makeDirectories(const std::string& path, std::string& error) {
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (!prefix.empty() && mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      error = "cannot create " + prefix + ": " + std::strerror(errno);
      return false;
    }
    if (slash == std::string::npos) break;
  }
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    error = path + " is not a directory";
    return false;
  }
  return true;
}

int64_t parseTimeMs(const std::string& text) {
  tm tm{};
  if (strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) return 0;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

}  // namespace

nlohmann::ordered_json checkJson(const CheckResult& c) {
  nlohmann::ordered_json j;
  j["name"] = kCheckNames[static_cast<size_t>(c.kind)];
  j["evidence"] = c.evidence;
  j["threshold"] = c.threshold;
  j["ratio"] = c.threshold > 0 ? c.evidence / c.threshold : 0.0;
  j["failed"] = c.failed;
  j["variant_requests"] = c.variant_requests;
  j["variant_events"] = c.variant_events;
  j["baseline_requests"] = c.baseline_requests;
  j["baseline_events"] = c.baseline_events;
  j["tolerated"] = c.tolerated;
  if (c.kind == CheckKind::Latency) j["threshold_ms"] = static_cast<double>(c.threshold_us) / 1e3;
  j["summary"] = c.summary;
  return j;
}

nlohmann::ordered_json recordJson(const RolloutRecord& r, bool with_checks) {
  nlohmann::ordered_json j;
  j["at"] = formatTime(r.at_ms);
  j["at_ms"] = r.at_ms;
  j["event"] = kRolloutEventNames[static_cast<size_t>(r.event)];
  j["state"] = kRolloutStateNames[static_cast<size_t>(r.state)];
  j["stage"] = r.stage;
  j["percent"] = r.percent;
  j["stage_started_ms"] = r.stage_started_ms;
  j["reason"] = r.reason;
  j["verdict"] = r.verdict;
  if (with_checks) {
    nlohmann::ordered_json checks = nlohmann::ordered_json::array();
    for (const CheckResult& c : r.checks) checks.push_back(checkJson(c));
    j["checks"] = checks;
  }
  return j;
}

std::optional<RolloutRecord> parseRecord(std::string_view line) {
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  RolloutRecord r;
  try {
    const auto event = parseRolloutEvent(j.value("event", ""));
    const auto state = parseRolloutState(j.value("state", ""));
    if (!event || !state) return std::nullopt;
    r.event = *event;
    r.state = *state;
    r.at_ms = j.contains("at_ms") ? j.at("at_ms").get<int64_t>() : parseTimeMs(j.value("at", ""));
    r.stage = j.value("stage", 0u);
    r.percent = j.value("percent", 0.0);
    r.stage_started_ms = j.value("stage_started_ms", r.at_ms);
    r.reason = j.value("reason", "");
    r.verdict = j.value("verdict", "");
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // a field of the wrong type: not one of our lines
  }
  return r;
}

std::unique_ptr<RolloutJournal> RolloutJournal::open(const std::string& state_dir,
                                                     const std::string& route,
                                                     const std::string& id,
                                                     std::vector<RolloutRecord>& records,
                                                     std::string& error) {
  const std::string dir = state_dir + "/rollouts/" + route;
  if (!makeDirectories(dir, error)) return nullptr;
  const std::string path = dir + "/" + id + ".jsonl";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd) {
    error = "cannot open " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  // The file's name must survive a crash as well as its lines: flush the directory too.
  if (UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      !d || fsync(d.get()) != 0) {
    error = "cannot flush " + dir + ": " + std::strerror(errno);
    return nullptr;
  }
  std::string text;
  char buf[16384];
  ssize_t n = 0;
  while ((n = pread(fd.get(), buf, sizeof(buf), static_cast<off_t>(text.size()))) > 0) {
    text.append(buf, static_cast<size_t>(n));
  }
  if (n < 0) {
    error = "cannot read " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  records.clear();
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    const std::string_view line(text.data() + pos, end - pos);
    if (!line.empty()) {
      if (auto r = parseRecord(line)) {
        records.push_back(std::move(*r));
      } else {
        SY_LOG(Warn, "%s:%zu: not a rollout record, skipped", path.c_str(), line_no);
      }
    }
    pos = end + 1;
  }
  std::unique_ptr<RolloutJournal> journal(new RolloutJournal(std::move(fd), path));
  // A line cut short by a crash: the next record starts on a line of its own.
  if (!text.empty() && text.back() != '\n' && ::write(journal->fd_.get(), "\n", 1) != 1) {
    error = "cannot write " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  return journal;
}

bool RolloutJournal::append(const RolloutRecord& record, std::string& error) {
  const std::string line = recordJson(record, true).dump() + "\n";
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_.get(), line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = "cannot write " + path_ + ": " + std::strerror(errno);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  if (fdatasync(fd_.get()) != 0) {
    error = "cannot flush " + path_ + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace sy::proxy
