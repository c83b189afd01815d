// Split-KV for the CPU forward (flash-decoding, as cuda/decode_plan.h does on the GPU): when a
// batch has fewer work items than threads can share, e.g. one or two requests decoding over a
// long context, the visited key tiles of each decode item are cut into contiguous parts that
// run on different threads; each part writes a partial output and LSE, merged by LSE after.
//
//   decode sequence <=> 1 <= len_q <= kDecodeMaxQueries (its queries fit one query block)
//   splits(b)        = clamp(ceil(threads * kItemsPerThread / items), 1,
//                            ceil(key_tiles(b) / kMinTilesPerSplit))   for decode sequences
//                    = 1                                               otherwise
// where items is the batch's unsplit work items (sequence, KV head, query block).
#pragma once
#include <numeric>
#include <vector>

#include "../sequence.h"
#include "kernels.h"

namespace swaa::cpu {

inline constexpr int64_t kDecodeMaxQueries = 16;
static_assert(kDecodeMaxQueries <= kBlockM, "a decode sequence's queries fit one query block");
// Enough items per thread that the dynamic schedule evens out splits of unequal cost...
inline constexpr int64_t kItemsPerThread = 4;
// ...while each part streams enough keys to amortise its setup and its share of the merge.
inline constexpr int64_t kMinTilesPerSplit = 8;

// Keys per tile: kBlockN, narrowed for a paged cache to a divisor of the page size so that each
// tile's rows lie in one page, at one row stride.
inline int64_t key_tile_width(const AttentionParams& p) {
  // amx layout: pages are multiples of 32 keys and the tile products take a tile in 32-key
  // segments, each in its own page.
  if (p.block_table == nullptr || p.amx_layout) return kBlockN;
  return std::gcd(kBlockN, p.page_size);
}

// The k-th tile (0-based) of the visiting order "first range, then second range".
inline int64_t nth_visited(const TwoRanges& r, int64_t k) {
  const int64_t in_first = r.first.end - r.first.begin;
  return k < in_first ? r.first.begin + k : r.second.begin + (k - in_first);
}
inline int64_t visited_count(const TwoRanges& r) {
  return (r.first.end - r.first.begin) + (r.second.end - r.second.begin);
}

struct SplitPlan {
  std::vector<int64_t> splits;         // per sequence, >= 1
  std::vector<int64_t> partial_begin;  // per sequence: its first partial row (splits > 1 only)
  int64_t partial_rows = 0;            // partial rows of the batch: splits * heads_q * len_q each

  // Partial row of split s, query head h, query i of sequence b.
  int64_t partial_row(const AttentionParams& p, const Sequence& seq, int64_t s, int64_t h,
                      int64_t i) const {
    return partial_begin[seq.b] + (s * p.heads_q + h) * seq.len_q + i;
  }
};

inline SplitPlan plan_splits(const AttentionParams& p, int64_t threads) {
  SplitPlan plan;
  plan.splits.assign(p.batch, 1);
  plan.partial_begin.assign(p.batch, 0);
  int64_t items = 0;
  for (int64_t b = 0; b < p.batch; ++b) items += p.heads_kv * ceil_div(Sequence(p, b).len_q, kBlockM);
  if (threads <= 1 || items == 0) return plan;
  const int64_t wanted = ceil_div(threads * kItemsPerThread, items);
  if (wanted <= 1) return plan;
  for (int64_t b = 0; b < p.batch; ++b) {
    const Sequence seq(p, b);
    if (seq.len_q < 1 || seq.len_q > kDecodeMaxQueries) continue;
    const int64_t tiles =
        visited_count(key_blocks(seq.rule, 0, seq.len_q, key_tile_width(p), seq.len_k));
    const int64_t splits = min64(wanted, ceil_div(tiles, kMinTilesPerSplit));
    if (splits <= 1) continue;
    plan.splits[b] = splits;
    plan.partial_begin[b] = plan.partial_rows;
    plan.partial_rows += splits * p.heads_q * seq.len_q;
  }
  return plan;
}

}  // namespace swaa::cpu
