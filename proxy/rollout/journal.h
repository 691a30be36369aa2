#pragma once
// The rollout journal (SPEC §11): state_dir/rollouts/<route>/<id>.jsonl, one JSON object per
// event, appended and flushed to disk (fdatasync) before the event takes effect. Replaying it
// (RolloutEngine::apply of each record) restores the rollout after a restart.
//
// Thread: main.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/unique_fd.h"
#include "proxy/rollout/rollout.h"

namespace sy::proxy {

// A record as JSON (journal lines, /rollouts history, notifications). `with_checks` adds the
// evidence at that moment.
nlohmann::ordered_json recordJson(const RolloutRecord& record, bool with_checks);
nlohmann::ordered_json checkJson(const CheckResult& check);
// Nullopt for a line that is not a record (a line cut short by a crash is skipped).
std::optional<RolloutRecord> parseRecord(std::string_view line);

class RolloutJournal {
 public:
  // Opens the journal of rollout `id` on `route` for appending, creating the directories, and
  // reads back its records into `records`. Null with `error` set when it cannot.
  static std::unique_ptr<RolloutJournal> open(const std::string& state_dir,
                                              const std::string& route, const std::string& id,
                                              std::vector<RolloutRecord>& records,
                                              std::string& error);

  // Appends one line and waits until it is on disk. False with `error` set when it is not.
  bool append(const RolloutRecord& record, std::string& error);
  const std::string& path() const { return path_; }

 private:
  RolloutJournal(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

}  // namespace sy::proxy
