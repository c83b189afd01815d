// CUDA split-KV decode kernel: the forward for few queries per sequence (decode_plan.h says when),
// flash-decoding style, on the tile library (tile_load.cuh, tile_math.cuh, tile_store.cuh). Two
// differences from the tile kernel:
//   - rows: the `group` query heads that share a KV head are packed into one tile's rows, packed
//     row r = g * len_q + i being query i of query head h_kv * group + g, so every K/V tile read
//     from memory serves the whole group (the tile kernel reads it once per query head);
//   - keys: a block walks one split, a contiguous share of the key tiles `key_blocks` names for
//     the sequence's queries, and writes that split's normalised output and LSE; combine_kernel
//     merges the splits by LSE. With one split the block writes o and lse itself.
// The rule is evaluated per packed row (its query i), on edge tiles only, as in the forward.
// decode_plan.h's kDecodeBlocksPerSm assumes 2 blocks (8 warps) per SM; the `decode` rows of
// docs/sass-report.md (make sass-report) show the registers, shared memory and key-loop SASS
// that this holds with.
#pragma once
#include <cmath>
#include <cstdint>

#include "../params.h"
#include "../sequence.h"
#include "kernel_traits.h"
#include "tile_load.cuh"
#include "tile_math.cuh"
#include "tile_store.cuh"

namespace swaa::cuda {

// Where a decode block works: one (sequence, KV head), packed rows [row0, row0 + kBlockM) of the
// group's `rows`, and key tiles [t_begin, t_end) of the visiting order.
struct DecodeBlock {
  int64_t h_kv, group, row0, rows;
  int64_t split;
  int t_begin, t_end;
};

// Query head and query row of packed row r.
struct PackedRow {
  int64_t head, query;
};
__device__ __forceinline__ PackedRow unpack_row(const DecodeBlock& db, const Sequence& seq,
                                                int64_t r) {
  return {db.h_kv * db.group + r / seq.len_q, r % seq.len_q};
}

// Asynchronously copies the block's packed query rows into the swizzled Q tile; rows past the
// group's rows are zero-filled. Once per block, so the per-row division is off the hot loop.
template <typename Traits>
__device__ __forceinline__ void load_packed_queries_async(typename Traits::Element* smem_q,
                                                          const DecodeParams& p,
                                                          const Sequence& seq,
                                                          const DecodeBlock& db) {
  using Element = typename Traits::Element;
  constexpr int kPerThread = Traits::kBlockM * Traits::kChunksPerRow / Traits::kNThreads;
  constexpr int kRowStep = Traits::kNThreads / Traits::kChunksPerRow;
  const int row = threadIdx.x / Traits::kChunksPerRow;
  const int col = (threadIdx.x % Traits::kChunksPerRow) * Traits::kChunkElems;
  const auto* q = static_cast<const Element*>(p.q);
  for (int i = 0; i < kPerThread; ++i) {
    const int r = row + i * kRowStep;
    const bool in_range = db.row0 + r < db.rows;
    const PackedRow pr = unpack_row(db, seq, in_range ? db.row0 + r : 0);
    const Element* src = q + seq.q_offset(p, pr.head) + pr.query * p.q_row_stride + col;
    simt::cp_async_16(smem_q + Traits::smem_offset(r, col), src, in_range);
  }
}

// s[i][j] <- -inf where the rule hides key j from this lane's two packed rows, whose queries are
// `query` (lane_queries), for an edge tile starting at key n0.
template <int kNTiles>
__device__ __forceinline__ void apply_mask_packed(float (&s)[kNTiles][4], const MaskRule& rule,
                                                  const int64_t (&query)[2], int64_t n0,
                                                  int lane) {
  for (int h = 0; h < 2; ++h) {
    const TileRule tile = tile_rule(rule, query[h], n0);
    for (int nt = 0; nt < kNTiles; ++nt) {
      for (int e = 2 * h; e < 2 * h + 2; ++e) {
        if (!tile.visible(0, nt * kMmaN + Accumulator::col(lane, e))) s[nt][e] = -INFINITY;
      }
    }
  }
}

// The queries of this lane's two packed rows (its row halves of the warp's 16): fixed for the
// block, so computed once, off the key loop.
__device__ __forceinline__ void lane_queries(int64_t (&query)[2], const Sequence& seq,
                                             int64_t warp_row0, int lane) {
  for (int h = 0; h < 2; ++h) query[h] = (warp_row0 + Accumulator::half_row(lane, h)) % seq.len_q;
}

// This lane's two rows: one split writes out and lse (like the forward's store_output), several
// write their partial results, normalised by the split's own sum (combine_kernel merges them).
template <typename Traits>
__device__ __forceinline__ void store_decode_output(const DecodeParams& p, const Sequence& seq,
                                                    const DecodeBlock& db,
                                                    const float (&o)[Traits::kDTiles][4],
                                                    const RowStats& st, int64_t warp_row0,
                                                    int lane) {
  for (int h = 0; h < 2; ++h) {
    const int64_t packed = warp_row0 + Accumulator::half_row(lane, h);
    const float sum = quad_sum(st.sum[h]);  // every lane of the quad, before any leaves
    if (packed >= db.rows) continue;
    const PackedRow pr = unpack_row(db, seq, packed);
    const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
    const int64_t lse_index = seq.lse_offset(p, pr.head) + pr.query;
    if (p.num_splits == 1) {
      store_row<Traits>(static_cast<typename Traits::Element*>(p.o) + seq.o_offset(p, pr.head) +
                            pr.query * p.o_row_stride,
                        o, h, inv_sum, lane);
      // No visible key (unreachable: every row sees itself): +inf, as the forward (params.h).
      if (lane % 4 == 0) {
        const float lse = sum > 0.f ? st.lse(h, sum, float(p.scale)) : INFINITY;
        static_cast<float*>(p.lse)[lse_index] = lse;
      }
      continue;
    }
    const int64_t partial = db.split * p.partial_split_stride + lse_index;
    store_row<Traits>(p.o_partial + partial * Traits::kHeadDim, o, h, inv_sum, lane);
    // A split that saw none of this row's keys contributes nothing: weight exp(-inf) = 0.
    if (lane % 4 == 0)
      p.lse_partial[partial] = sum > 0.f ? st.lse(h, sum, float(p.scale)) : -INFINITY;
  }
}

// grid = (row_groups * num_splits, heads_kv, batch), block = kNThreads, dynamic smem =
// kSmemBytes; blockIdx.x = row group * num_splits + split. Varlen: len_q = max_seqlen_q, and
// row groups past a shorter sequence's rows return at once. kPaged: K/V read through the block
// table (params.h), the paged op's variant.
template <typename Traits, bool kPaged>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocksPerSm)
    decode_kernel(const DecodeParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN, kStages = Traits::kStages;
  SWAA_DYNAMIC_SMEM(smem_raw);
  Element* smem_q = reinterpret_cast<Element*>(smem_raw);
  Element* smem_k = smem_q + Traits::kSmemQElems;             // kStages K tiles
  Element* smem_v = smem_k + kStages * Traits::kSmemKVElems;  // kStages V tiles

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const Sequence seq(p, blockIdx.z);
  DecodeBlock db;
  db.h_kv = blockIdx.y;
  db.group = p.group_size();
  db.split = int64_t(blockIdx.x) % p.num_splits;
  db.row0 = int64_t(blockIdx.x) / p.num_splits * Traits::kBlockM;
  db.rows = db.group * seq.len_q;
  if (db.row0 >= db.rows) return;  // the whole block, before any barrier
  // This split's share of the tiles every query of the sequence may see (sinks, then window).
  const VisitOrder order(key_blocks(seq.rule, 0, seq.len_q, kBlockN, seq.len_k));
  const int per_split = int(ceil_div(order.n_visits, p.num_splits));
  db.t_begin = int(min64(db.split * per_split, order.n_visits));
  db.t_end = int(min64(db.t_begin + per_split, order.n_visits));
  const int n_visits = db.t_end - db.t_begin;
  const auto kv = kv_source<Traits, kBlockN, kPaged>(p, seq, db.h_kv);
  auto load_kv = [&](int stage, int t) {
    kv.load(smem_k + stage * Traits::kSmemKVElems, smem_v + stage * Traits::kSmemKVElems,
            int64_t(order.block(db.t_begin + t)) * kBlockN);
  };

  // The forward's pipeline: Q in its own group, then the ring's first K/V tiles.
  load_packed_queries_async<Traits>(smem_q, p, seq, db);
  simt::cp_async_commit();
  CopyRing<kStages> ring;
  ring.start(n_visits, load_kv);
  ring.wait_for_resident();
  const HeldRows<Traits, Traits::kMTiles, Traits::kQRegisterSteps> q_rows(smem_q, warp, lane);

  const float scale_log2 = float(p.scale * kLog2e);
  const int64_t warp_row0 = db.row0 + warp * Traits::kRowsPerWarp;
  // A warp whose 16 rows are all past the group's only helps copy (warp-uniform branch).
  const bool warp_has_rows = warp_row0 < db.rows;
  int64_t query[2];
  lane_queries(query, seq, warp_row0, lane);
  // Conservative over every query of the sequence: each packed row is one of them.
  const BlockVisibility visibility = block_visibility(seq.rule, 0, seq.len_q, kBlockN);
  float o[Traits::kDTiles][4] = {};
  RowStats st = {{-INFINITY, -INFINITY}, {0.f, 0.f}};

  for (int t = 0; t < n_visits; ++t) {
    ring.next_tile(t, n_visits, load_kv);
    if (warp_has_rows) {
      const int block = order.block(db.t_begin + t);
      float s[Traits::kNTiles][4];
      qk_scores<Traits>(s, q_rows, smem_k + ring.stage * Traits::kSmemKVElems, lane);
      if (!visibility.fully_visible(block))
        apply_mask_packed(s, seq.rule, query, int64_t(block) * kBlockN, lane);
      online_softmax<Traits>(s, o, st, scale_log2);
      pv_accumulate<Traits>(o, s, smem_v + ring.stage * Traits::kSmemKVElems, lane);
    }
    ring.advance();
  }
  store_decode_output<Traits>(p, seq, db, o, st, warp_row0, lane);
}

// Over the warp's 32 lanes.
__device__ __forceinline__ float warp_max(float x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    x = fmaxf(x, __shfl_xor_sync(kFullWarpMask, x, offset));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    x += __shfl_xor_sync(kFullWarpMask, x, offset);
  return x;
}

// Merges the splits' partial results: lse = log sum_s exp(lse_s), o = sum_s exp(lse_s - lse) o_s.
// grid = (heads_q, batch), block = kCombineThreads; warp w merges query rows w, w + kCombineWarps,
// ... of its (sequence, query head), lane l columns 2 l + 64 c (c < kCombinePairsPerLane).
template <typename Traits>
__global__ void __launch_bounds__(Traits::kCombineThreads) combine_kernel(const DecodeParams p) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const Sequence seq(p, blockIdx.y);
  const int64_t h = blockIdx.x, stride = p.partial_split_stride;
  for (int64_t i = warp; i < seq.len_q; i += Traits::kCombineWarps) {
    const int64_t row = seq.lse_offset(p, h) + i;
    float max_lse = -INFINITY;
    for (int64_t s = lane; s < p.num_splits; s += kWarpSize)
      max_lse = fmaxf(max_lse, p.lse_partial[s * stride + row]);
    max_lse = warp_max(max_lse);
    float sum = 0.f;
    if (max_lse != -INFINITY) {
      for (int64_t s = lane; s < p.num_splits; s += kWarpSize)
        sum += expf(p.lse_partial[s * stride + row] - max_lse);
    }
    sum = warp_sum(sum);
    const float lse = max_lse + logf(sum);  // sum >= 1 when any split saw a key
    float acc[Traits::kCombinePairsPerLane][2] = {};
    for (int64_t s = 0; s < p.num_splits && sum > 0.f; ++s) {
      const float weight = expf(p.lse_partial[s * stride + row] - lse);  // 0 for -inf
      const float* o_s = p.o_partial + (s * stride + row) * Traits::kHeadDim;
      for (int c = 0; c < Traits::kCombinePairsPerLane; ++c) {
        const int col = 2 * lane + 2 * kWarpSize * c;
        acc[c][0] += weight * o_s[col];
        acc[c][1] += weight * o_s[col + 1];
      }
    }
    auto* out = reinterpret_cast<uint32_t*>(static_cast<typename Traits::Element*>(p.o) +
                                            seq.o_offset(p, h) + i * p.o_row_stride);
    for (int c = 0; c < Traits::kCombinePairsPerLane; ++c)
      simt::st_global(out + lane + kWarpSize * c, Traits::Ops::pack2(acc[c][0], acc[c][1]));
    if (lane == 0) static_cast<float*>(p.lse)[row] = sum > 0.f ? lse : INFINITY;
  }
}

}  // namespace swaa::cuda
