// The work items of one CPU pass, (sequence, head, block), flattened over every sequence of the
// batch so that one dynamically scheduled parallel loop balances them across threads however
// ragged the sequences are (a prefix sum of the items per sequence; an item finds its sequence
// by binary search). For a dense batch the order is the plain (batch, head, block) nesting.
#pragma once
#include <algorithm>
#include <vector>

#include "../sequence.h"

namespace swaa::cpu {

struct WorkItem {
  int64_t b, head, block;
};

class WorkItems {
 public:
  // `blocks_of(seq)`: blocks per head of sequence seq; `heads` heads per sequence.
  template <typename BlocksOf>
  WorkItems(const AttentionParams& p, int64_t heads, BlocksOf blocks_of)
      : start_(p.batch + 1, 0), blocks_(p.batch, 0) {
    for (int64_t b = 0; b < p.batch; ++b) {
      blocks_[b] = blocks_of(Sequence(p, b));
      start_[b + 1] = start_[b] + heads * blocks_[b];
    }
  }

  int64_t size() const { return start_.back(); }

  WorkItem operator[](int64_t item) const {
    // The last sequence whose first item is <= item (sequences without items are skipped).
    const int64_t b = std::upper_bound(start_.begin(), start_.end(), item) - start_.begin() - 1;
    const int64_t local = item - start_[b];
    return {b, local / blocks_[b], local % blocks_[b]};
  }

 private:
  std::vector<int64_t> start_;   // start_[b]: first item of sequence b; start_[batch] = total
  std::vector<int64_t> blocks_;  // blocks per head of sequence b
};

}  // namespace swaa::cpu
