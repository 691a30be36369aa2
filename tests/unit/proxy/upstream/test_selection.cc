// Server selection policies (round robin, least connections) over a fake view of a pool.
#include <doctest/doctest.h>

#include <vector>

#include "proxy/upstream/selection.h"

using namespace sy;
using namespace sy::proxy;

namespace {

struct FakeServers final : ServerView {
  std::vector<bool> up;
  std::vector<uint32_t> busy;
  size_t size() const override { return up.size(); }
  bool usable(size_t i) const override { return up[i]; }
  uint32_t active(size_t i) const override { return busy[i]; }
};

}  // namespace

TEST_CASE("round robin cycles over the usable servers, skipping unusable ones") {
  FakeServers s;
  s.up = {true, false, true};
  s.busy = {0, 0, 0};
  auto rr = makeSelection(config::Balance::RoundRobin, 0);
  CHECK(rr->pick(s, -1) == 0);
  CHECK(rr->pick(s, -1) == 2);
  CHECK(rr->pick(s, -1) == 0);
  CHECK(rr->pick(s, -1) == 2);
}

TEST_CASE("round robin starts where the worker's offset says") {
  FakeServers s;
  s.up = {true, true, true};
  s.busy = {0, 0, 0};
  auto rr = makeSelection(config::Balance::RoundRobin, 2);
  CHECK(rr->pick(s, -1) == 2);
  CHECK(rr->pick(s, -1) == 0);
}

TEST_CASE("the excluded server is avoided unless it is the only usable one") {
  FakeServers s;
  s.up = {true, true};
  s.busy = {0, 0};
  auto rr = makeSelection(config::Balance::RoundRobin, 0);
  CHECK(rr->pick(s, 0) == 1);
  CHECK(rr->pick(s, 1) == 0);
  s.up = {true, false};
  CHECK(rr->pick(s, 0) == 0);
}

TEST_CASE("no usable server: size() is returned") {
  FakeServers s;
  s.up = {false, false};
  s.busy = {0, 0};
  CHECK(makeSelection(config::Balance::RoundRobin, 0)->pick(s, -1) == 2);
  CHECK(makeSelection(config::Balance::LeastConn, 0)->pick(s, -1) == 2);
}

TEST_CASE("least connections picks the least busy usable server, ties round robin") {
  FakeServers s;
  s.up = {true, true, true};
  s.busy = {3, 1, 2};
  auto lc = makeSelection(config::Balance::LeastConn, 0);
  CHECK(lc->pick(s, -1) == 1);
  s.busy = {1, 1, 1};
  const size_t a = lc->pick(s, -1);
  const size_t b = lc->pick(s, -1);
  CHECK(a != b);
  s.up = {true, false, true};
  s.busy = {5, 0, 4};
  CHECK(lc->pick(s, -1) == 2);
}
