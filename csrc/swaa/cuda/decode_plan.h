// When the forward runs the split-KV decode kernel (decode_kernel.cuh) instead of the tile kernel
// (forward_kernel.cuh), and how it splits the keys. Plain host C++ on the params alone, so the
// torch boundary, the emulated build and the static report (bench/sass) share this one rule.
//
//   use_decode  <=> len_q <= kDecodeMaxQueries (per sequence; varlen: max_seqlen_q)
//   row_groups  = ceil(group * len_q / kDecodeBlockRows): blocks along the packed rows, where the
//                 `group` query heads sharing a KV head are stacked into one tile's rows
//   num_splits  = clamp(ceil(num_sms * kDecodeBlocksPerSm / (batch * heads_kv * row_groups)),
//                       1, min(ceil(key_tiles / kDecodeMinTilesPerSplit), kDecodeMaxSplits))
//
// With few queries a tile-kernel block fills 1-16 of its 128 rows, and the grid has one block per
// query head, each walking its whole live key range alone and re-reading the K/V that the other
// heads of its group read too. The decode kernel reads each K/V tile once per KV head and cuts
// the key range into enough splits to give every SM kDecodeBlocksPerSm blocks (flash-decoding).
#pragma once
#include <cstdint>

#include "../params.h"

namespace swaa::cuda {

inline constexpr int64_t kDecodeMaxQueries = 16;
// Packed (query head, query) rows per decode block: 4 warps x one 16-row m-tile (DecodeTraits).
inline constexpr int64_t kDecodeBlockRows = 64;
// Target residency: both head dims fit 2 decode blocks per SM on A100 and H100 (registers and
// shared memory: kernel_traits.h's DecodeTraits, docs/sass-report.md), i.e. 8 warps to hide
// latency; DecodeTraits also holds ptxas to it.
inline constexpr int64_t kDecodeBlocksPerSm = 2;
// A split streams at least this many key tiles, so its prologue (Q, first K/V) is amortised...
inline constexpr int64_t kDecodeMinTilesPerSplit = 2;
// ...and a row has at most this many partial results to merge.
inline constexpr int64_t kDecodeMaxSplits = 128;

// Keys per tile and ring stages of the decode kernel (DecodeTraits: why twice the forward's).
constexpr int decode_block_n(int64_t head_dim) { return head_dim <= 64 ? 128 : 64; }
inline constexpr int kDecodeStages = 2;

struct DecodePlan {
  bool use_decode;
  int64_t row_groups;  // decode blocks per (sequence, KV head, split)
  int64_t key_tiles;   // the most key tiles one sequence's queries can need (a host bound)
  int64_t num_splits;  // key ranges per row group; 1: no partial results, no combine step
  int64_t blocks;      // decode blocks in the grid: batch * heads_kv * row_groups * num_splits
};

// Key tiles the queries of a sequence with params' lengths may visit. The device-side full_from
// values are not read here (that would sync), so a given full_from counts every key.
inline int64_t decode_key_tiles(const AttentionParams& p) {
  const int64_t block_n = decode_block_n(p.head_dim);
  if (p.full_from != nullptr) return ceil_div(p.len_k, block_n);
  const MaskRule never_full{min64(p.window, max64(p.len_k, 1)), p.sinks, p.len_k,
                            p.len_k - p.len_q};
  const TwoRanges r = key_blocks(never_full, 0, p.len_q, block_n, p.len_k);
  return (r.first.end - r.first.begin) + (r.second.end - r.second.begin);
}

inline DecodePlan plan_decode(const AttentionParams& p, int64_t num_sms) {
  DecodePlan plan{};
  plan.use_decode = p.len_q >= 1 && p.len_q <= kDecodeMaxQueries;
  if (!plan.use_decode) return plan;
  plan.row_groups = ceil_div(p.group_size() * p.len_q, kDecodeBlockRows);
  plan.key_tiles = decode_key_tiles(p);
  const int64_t unsplit = max64(p.batch * p.heads_kv * plan.row_groups, 1);
  const int64_t wanted = ceil_div(max64(num_sms, 1) * kDecodeBlocksPerSm, unsplit);
  const int64_t most = min64(ceil_div(plan.key_tiles, kDecodeMinTilesPerSplit), kDecodeMaxSplits);
  plan.num_splits = max64(min64(wanted, most), 1);
  plan.blocks = p.batch * p.heads_kv * plan.row_groups * plan.num_splits;
  return plan;
}

}  // namespace swaa::cuda
