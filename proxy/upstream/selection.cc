#include "proxy/upstream/selection.h"

namespace sy::proxy {
namespace {

// Scans from the round-robin position; least-conn keeps the least busy usable server seen.
class RoundRobinOrLeastConn final : public Selection {
 public:
  RoundRobinOrLeastConn(bool least_conn, size_t start) : least_conn_(least_conn), next_(start) {}

  size_t pick(const ServerView& servers, int exclude) override {
    const size_t n = servers.size();
    if (n == 0) return 0;
    size_t best = n;
    size_t fallback = n;
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (next_ + k) % n;
      if (!servers.usable(i)) continue;
      if (static_cast<int>(i) == exclude) {
        fallback = i;
        continue;
      }
      if (!least_conn_) {
        best = i;
        break;
      }
      if (best == n || servers.active(i) < servers.active(best)) best = i;
    }
    if (best == n) best = fallback;
    if (best != n) next_ = (best + 1) % n;
    return best;
  }

 private:
  bool least_conn_;
  size_t next_;
};

}  // namespace

std::unique_ptr<Selection> makeSelection(config::Balance balance, size_t start) {
  return std::make_unique<RoundRobinOrLeastConn>(balance == config::Balance::LeastConn, start);
}

}  // namespace sy::proxy
