// switchyard-ctl: the operator tool (SPEC §8). Only argv and the real stdout/stderr/network
// live here; the commands are in the sy_ctl library so the unit tests run them in-process.

#include <iostream>
#include <string>
#include <vector>

#include "tools/ctl/admin_client.h"
#include "tools/ctl/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const int code = sy::ctl::run(args, std::cout, std::cerr, &sy::ctl::httpCall);
  std::cout.flush();
  return code;
}
