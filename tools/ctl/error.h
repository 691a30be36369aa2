#pragma once
// Exit codes of switchyard-ctl and the error type its commands return instead of printing, so
// the command logic stays testable without a process.

#include <string>

namespace sy::ctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // config errors, no such route, admin call failed
inline constexpr int kExitUsage = 2;    // the command line itself is wrong

struct CtlError {
  int exit_code = kExitFailure;
  std::string message;  // one or more lines, without the "switchyard-ctl: " prefix
};

inline CtlError usageError(std::string message) { return {kExitUsage, std::move(message)}; }
inline CtlError failure(std::string message) { return {kExitFailure, std::move(message)}; }

}  // namespace sy::ctl
