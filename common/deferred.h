#pragma once
// Objects whose `this` is libevent callback context are never freed inside their own
// callbacks: they are handed to their Worker, which frees them once the callbacks return.

namespace sy {

class Deferrable {
 public:
  virtual ~Deferrable() = default;
};

}  // namespace sy
