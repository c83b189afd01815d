// CUDA forward kernel: sink + sliding-window attention, FlashAttention-2 style (docs/architecture.md, "Which CUDA forward kernel runs").
// One thread block = kBlockM query rows of one (batch, query head), each warp two 16-row m-tiles
// that share every K/V fragment it reads; it visits only the key blocks `key_blocks` (mask.h)
// names, each once, and evaluates the rule only on tiles its warp's BlockVisibility (mask.h)
// cannot clear. Built on the tile library (tile_load.cuh, tile_math.cuh, tile_store.cuh); shapes
// and sizes: kernel_traits.h. Runs on the GPU (nvcc) and on the CPU through the SIMT emulator
// (g++ -DSWAA_SIMT_HOST): all PTX goes through simt.h.
//
// The budget is derived in kernel_traits.h; what nvcc makes of it (registers, spills, shared
// memory, SASS per key tile and its history) is measured by `make sass-report` and read in
// docs/sass-report.md, not here.
#pragma once
#include <cmath>
#include <cstdint>

#include "../mask.h"
#include "../params.h"
#include "../sequence.h"
#include "kernel_traits.h"
#include "tile_load.cuh"
#include "tile_math.cuh"
#include "tile_store.cuh"

namespace swaa::cuda {

// Where one thread block works: its query rows, the heads it reads, its rule. (Where it writes,
// BlockOutput, is found after the key loop: nothing of it is held in registers through the loop.)
template <typename Traits, bool kPaged>
struct BlockProblem {
  using Element = typename Traits::Element;
  const Element* q;  // row 0 of this (batch, query head)
  KVSourceOf<Traits, Traits::kBlockN, kPaged> kv;
  int64_t m0, m1;    // query rows [m0, m1) of this block, m1 <= len_q (m0 >= m1: past the end)
  int64_t len_q;     // the sequence's (Q tile loads zero-fill past it)
  MaskRule rule;
};

template <typename Traits, bool kPaged>
__device__ __forceinline__ BlockProblem<Traits, kPaged> block_problem(const AttentionParams& p) {
  using Element = typename Traits::Element;
  const int64_t h = blockIdx.y, h_kv = h / p.group_size();
  const Sequence seq(p, blockIdx.z);
  const int64_t m0 = int64_t(blockIdx.x) * Traits::kBlockM;
  return {static_cast<const Element*>(p.q) + seq.q_offset(p, h),
          kv_source<Traits, Traits::kBlockN, kPaged>(p, seq, h_kv),
          m0,
          min64(m0 + Traits::kBlockM, seq.len_q),
          seq.len_q,
          seq.rule};
}

// Row 0 of this block's (sequence, query head) in o and lse.
template <typename Traits>
struct BlockOutput {
  typename Traits::Element* o;
  float* lse;
};

template <typename Traits>
__device__ __forceinline__ BlockOutput<Traits> block_output(const AttentionParams& p) {
  const Sequence seq(p, blockIdx.z);
  return {static_cast<typename Traits::Element*>(p.o) + seq.o_offset(p, blockIdx.y),
          static_cast<float*>(p.lse) + seq.lse_offset(p, blockIdx.y)};
}

// out <- o / rowsum and lse <- scale * max + log(rowsum) (natural log) for rows < m1 of one m-tile.
template <typename Traits>
__device__ __forceinline__ void store_output(const BlockOutput<Traits>& out, int64_t m1,
                                             int64_t o_row_stride,
                                             const float (&o)[Traits::kDTiles][4],
                                             const RowStats& st, float scale, int64_t row0,
                                             int lane) {
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row0 + Accumulator::half_row(lane, h);
    const float sum = quad_sum(st.sum[h]);  // every lane of the quad, before any leaves
    if (row >= m1) continue;
    store_row<Traits>(out.o + row * o_row_stride, o, h, sum > 0.f ? 1.f / sum : 0.f, lane);
    // A row with no visible key gets +inf, so a backward's exp(s - lse) is 0 there (params.h).
    if (lane % 4 == 0) out.lse[row] = sum > 0.f ? st.lse(h, sum, scale) : INFINITY;
  }
}

// grid = (ceil(len_q / kBlockM), heads_q, batch), block = kNThreads, dynamic smem = kSmemBytes;
// varlen: len_q = max_seqlen_q, and blocks past their sequence's queries return at once.
// kPaged: K/V read through the block table (params.h), the paged op's variant.
template <typename Traits, bool kPaged>
__global__ void __launch_bounds__(Traits::kNThreads) forward_kernel(const AttentionParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN, kStages = Traits::kStages, kMTiles = Traits::kMTiles;
  SWAA_DYNAMIC_SMEM(smem_raw);
  Element* smem_q = reinterpret_cast<Element*>(smem_raw);
  Element* smem_k = smem_q + Traits::kSmemQElems;           // kStages K tiles
  Element* smem_v = smem_k + kStages * Traits::kSmemKVElems;  // kStages V tiles

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const BlockProblem<Traits, kPaged> bp = block_problem<Traits, kPaged>(p);
  if (bp.m0 >= bp.m1) return;  // the whole block, before any barrier
  const VisitOrder order(key_blocks(bp.rule, bp.m0, bp.m1, kBlockN, bp.kv.len_k()));
  auto load_kv = [&](int stage, int t) {
    bp.kv.load(smem_k + stage * Traits::kSmemKVElems, smem_v + stage * Traits::kSmemKVElems,
            int64_t(order.block(t)) * kBlockN);
  };

  // Q in its own cp.async group, then the ring's first K/V tiles.
  load_tile_async<Traits, Traits::kBlockM>(smem_q, bp.q, p.q_row_stride, bp.m0, bp.len_q);
  simt::cp_async_commit();
  CopyRing<kStages> ring;
  ring.start(order.n_visits, load_kv);
  ring.wait_for_resident();
  const HeldRows<Traits, Traits::kMTiles, Traits::kQRegisterSteps> q_rows(smem_q, warp, lane);

  const float scale_log2 = float(p.scale * kLog2e);
  const int64_t warp_row0 = bp.m0 + warp * Traits::kRowsPerWarp;
  // Per warp: only its rows decide whether it masks (rows past m1 are never stored). Tiles are
  // tested unclipped: keys past the sequence's len_k are zero-filled and masked out.
  const BlockVisibility warp_visibility =
      block_visibility(bp.rule, warp_row0, warp_row0 + Traits::kRowsPerWarp, kBlockN);
  float o[kMTiles][Traits::kDTiles][4] = {};
  RowStats st[kMTiles];
  SWAA_UNROLL for (int mt = 0; mt < kMTiles; ++mt) st[mt] = {{-INFINITY, -INFINITY}, {0.f, 0.f}};

  for (int t = 0; t < order.n_visits; ++t) {
    ring.next_tile(t, order.n_visits, load_kv);
    const int block = order.block(t);
    float s[kMTiles][Traits::kNTiles][4];
    qk_scores<Traits>(s, q_rows, smem_k + ring.stage * Traits::kSmemKVElems, lane);
    if (!warp_visibility.fully_visible(block))
      apply_mask(s, bp.rule, warp_row0, int64_t(block) * kBlockN, lane);
    SWAA_UNROLL for (int mt = 0; mt < kMTiles; ++mt)
      online_softmax<Traits>(s[mt], o[mt], st[mt], scale_log2);
    pv_accumulate<Traits>(o, s, smem_v + ring.stage * Traits::kSmemKVElems, lane);
    ring.advance();
  }
  const BlockOutput<Traits> out = block_output<Traits>(p);
  SWAA_UNROLL for (int mt = 0; mt < kMTiles; ++mt)
    store_output<Traits>(out, bp.m1, p.o_row_stride, o[mt], st[mt], float(p.scale),
                         warp_row0 + mt * kMmaM, lane);
}

}  // namespace swaa::cuda
