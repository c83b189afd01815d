// CUDA backward kernels: sink + sliding-window attention, deterministic (docs/cuda-backward.md).
// P is recomputed from the forward's LSE; with delta = rowsum(dO * O) - dLSE (computed by the
// caller, params.h):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - delta),  dK = scale * dS^T Q,  dQ = scale * dS K.
// Two kernels, so that every gradient element has exactly one writer and no float atomics:
//   dkdv_kernel: one block per (key block, KV head, batch); it visits exactly the query blocks
//                `query_blocks` (mask.h) names, for every query head of the GQA group, and keeps
//                dK/dV in registers. Keys that no query sees get zeros (no visits).
//   dq_kernel:   one block per (query block, query head, batch); it visits exactly the key blocks
//                `key_blocks` names, like the forward, and keeps dQ in registers.
// Both evaluate the rule only on tiles their warp's visibility test (mask.h) cannot clear, and
// are built on the tile library (tile_load.cuh, tile_math.cuh, tile_store.cuh). Tile shapes:
// kernel_traits.h (BackwardKVTraits, BackwardQTraits). Same source on the GPU (nvcc) and on the
// CPU through the SIMT emulator (g++ -DSWAA_SIMT_HOST).
//
// Occupancy: a dkdv block has 256 threads, so at its register count (near the 255 cap) one block
// of 8 warps fits an SM on both archs: registers bind it (at D=128 shared memory too). A dq
// block has 128 threads. Registers, spills, shared memory and the hot loops' SASS counts are
// measured by `make sass-report` and read in docs/sass-report.md.
#pragma once
#include "../params.h"
#include "../sequence.h"
#include "kernel_traits.h"
#include "tile_load.cuh"
#include "tile_math.cuh"
#include "tile_store.cuh"

namespace swaa::cuda {

// Pointers of one (sequence, query head) of the backward's inputs.
template <typename Element>
struct QueryHead {
  const Element* q;
  const Element* d_o;
  const float* lse;    // (len_q,) natural log
  const float* delta;  // (len_q,)

  // The same sequence, `heads` query heads further on: one multiply-add per pointer.
  __device__ __forceinline__ QueryHead next(int heads, const AttentionBackwardParams& p) const {
    return {q + heads * p.q_head_stride, d_o + heads * p.do_head_stride,
            lse + heads * p.lse_head_stride, delta + heads * p.lse_head_stride};
  }
};

template <typename Element>
__device__ __forceinline__ QueryHead<Element> query_head(const AttentionBackwardParams& p,
                                                         const Sequence& seq, int64_t h) {
  const int64_t row = seq.lse_offset(p, h);  // delta shares lse's layout
  return {static_cast<const Element*>(p.q) + seq.q_offset(p, h),
          static_cast<const Element*>(p.d_o) + seq.do_offset(p, h),
          static_cast<const float*>(p.lse) + row, static_cast<const float*>(p.delta) + row};
}

// The softmax backward on one tile, in place: s holds raw scores (-inf where masked), dp holds
// dO . v; afterwards s = P = exp(scale * s - lse) and dp = dS = P * (dp - delta). `lse_log2(e)`
// and `delta(e)` give the row terms of accumulator element e of n-tile nt. An LSE of +inf (rows
// past len_q, rows with no visible key) gives P = 0.
template <int kNTiles, typename RowTerm>
__device__ __forceinline__ void softmax_backward(float (&s)[kNTiles][4], float (&dp)[kNTiles][4],
                                                 float scale_log2, RowTerm row_term) {
  for (int nt = 0; nt < kNTiles; ++nt) {
    for (int e = 0; e < 4; ++e) {
      float lse_log2, delta;
      row_term(nt, e, lse_log2, delta);
      s[nt][e] = exp2f(s[nt][e] * scale_log2 - lse_log2);
      dp[nt][e] = s[nt][e] * (dp[nt][e] - delta);
    }
  }
}

// ---- dK / dV ------------------------------------------------------------------------------------

// s^T[j][i] <- -inf where query i does not see key j, in 32-bit arithmetic relative to the tile
// (mask.h's TileRule). Keys are the accumulator rows here, queries its columns.
template <int kNTiles>
__device__ __forceinline__ void apply_mask_transposed(float (&s)[kNTiles][4], const MaskRule& rule,
                                                      int64_t key0, int64_t m0, int lane) {
  const TileRule tile = tile_rule(rule, m0, key0);
  SWAA_UNROLL for (int nt = 0; nt < kNTiles; ++nt) {
    SWAA_UNROLL for (int e = 0; e < 4; ++e) {
      const int dj = Accumulator::row(lane, e);
      const int di = nt * kMmaN + Accumulator::col(lane, e);
      if (!tile.visible(di, dj)) s[nt][e] = -INFINITY;
    }
  }
}

// The dK/dV block's shared memory: K and V for the whole kernel, then a ring of query stages.
template <typename Traits>
struct KVSmem {
  using Element = typename Traits::Element;
  Element* k;      // (kBlockN, D)
  Element* v;      // (kBlockN, D)
  Element* q;      // kStages x (kBlockM, D)
  Element* d_o;    // kStages x (kBlockM, D)
  float* lse;      // kStages x kBlockM (natural log); 0 past len_q, where Q and dO are 0 too
  float* delta;    // kStages x kBlockM; 0 past len_q

  __device__ __forceinline__ explicit KVSmem(char* raw) {
    k = reinterpret_cast<Element*>(raw);
    v = k + Traits::kSmemKElems;
    q = v + Traits::kSmemKElems;
    d_o = q + Traits::kStages * Traits::kSmemQElems;
    lse = reinterpret_cast<float*>(d_o + Traits::kStages * Traits::kSmemQElems);
    delta = lse + Traits::kStages * Traits::kBlockM;
  }
};

// A position in the dK/dV visiting order: every query head of the GQA group in turn, each over
// the same query blocks (a VisitOrder). Advanced one visit at a time, so no division finds the
// head of visit t.
struct QueryVisit {
  int head = 0;  // within the group
  int t = 0;     // visit within the head's VisitOrder

  __device__ __forceinline__ void advance(int per_head) {
    if (++t == per_head) t = 0, ++head;
  }
};

// Q, dO rows [m0, m0 + kBlockM) of one query head into ring stage `stage`, and their LSE and
// delta rows, all by cp.async (zero-filled past the sequence's len_q). Zero rows contribute
// nothing: their P is exp(0 - 0) = 1 but their dO and dS are 0.
template <typename Traits>
__device__ __forceinline__ void load_query_stage(const KVSmem<Traits>& sm, int stage,
                                                 const QueryHead<typename Traits::Element>& qh,
                                                 const AttentionBackwardParams& p, int64_t len_q,
                                                 int64_t m0) {
  constexpr int kBlockM = Traits::kBlockM;
  const int offset = stage * Traits::kSmemQElems;
  load_tile_async<Traits, kBlockM>(sm.q + offset, qh.q, p.q_row_stride, m0, len_q);
  load_tile_async<Traits, kBlockM>(sm.d_o + offset, qh.d_o, p.do_row_stride, m0, len_q);
  static_assert(kBlockM <= Traits::kNThreads, "one thread per row of statistics");
  if (threadIdx.x < kBlockM) {
    const int64_t row = m0 + threadIdx.x;
    const bool in_range = row < len_q;
    simt::cp_async_ca<4>(&sm.lse[stage * kBlockM + threadIdx.x], qh.lse + (in_range ? row : 0),
                         in_range);
    simt::cp_async_ca<4>(&sm.delta[stage * kBlockM + threadIdx.x],
                         qh.delta + (in_range ? row : 0), in_range);
  }
}

// This warp's K or V rows, the A operand of S^T = K Q^T or dP^T = V dO^T: kKVRegisterSteps
// slices of the head dim held, the rest re-read on every query tile (kernel_traits.h).
template <typename Traits>
using KVRows = HeldRows<Traits, 1, Traits::kKVRegisterSteps>;

// dV += P^T dO and dK += dS^T Q for this warp's 16 keys and one query stage.
template <typename Traits>
__device__ __forceinline__ void dkdv_tile(float (&dk)[Traits::kDTiles][4],
                                          float (&dv)[Traits::kDTiles][4],
                                          const KVRows<Traits>& k_rows,
                                          const KVRows<Traits>& v_rows,
                                          const KVSmem<Traits>& sm, int stage, const MaskRule& rule,
                                          bool masked, int64_t key0, int64_t m0, float scale_log2,
                                          int warp, int lane) {
  constexpr int kQTiles = Traits::kQTiles;
  const auto* q = sm.q + stage * Traits::kSmemQElems;
  const auto* d_o = sm.d_o + stage * Traits::kSmemQElems;
  const float* lse = sm.lse + stage * Traits::kBlockM;
  const float* delta = sm.delta + stage * Traits::kBlockM;

  // S^T = K Q^T and dP^T = V dO^T: keys are the rows, so P^T and dS^T come out in accumulator
  // layout, which is the A operand of the two products below.
  float s[kQTiles][4], dp[kQTiles][4];
  qk_scores<Traits>(s, k_rows, q, lane);
  qk_scores<Traits>(dp, v_rows, d_o, lane);
  if (masked) apply_mask_transposed(s, rule, key0, m0, lane);
  softmax_backward(s, dp, scale_log2, [&](int nt, int e, float& l, float& d) {
    const int col = nt * kMmaN + Accumulator::col(lane, e);
    l = simt::ld_shared(&lse[col]) * kLog2e;
    d = simt::ld_shared(&delta[col]);
  });
  pv_accumulate<Traits>(dv, s, d_o, lane);
  pv_accumulate<Traits>(dk, dp, q, lane);
}

// grid = (ceil(len_k / kBlockN), heads_kv, batch), block = kNThreads, dynamic smem = kSmemBytes;
// varlen: len_k = max_seqlen_k, and blocks past their sequence's keys return at once.
template <typename Traits>
__global__ void __launch_bounds__(Traits::kNThreads) dkdv_kernel(const AttentionBackwardParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  SWAA_DYNAMIC_SMEM(smem_raw);
  const KVSmem<Traits> sm(smem_raw);
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t h_kv = blockIdx.y;
  const Sequence seq(p, blockIdx.z);
  const int64_t n0 = int64_t(blockIdx.x) * Traits::kBlockN;
  if (n0 >= seq.len_k) return;  // the whole block, before any barrier
  const int64_t n1 = min64(n0 + Traits::kBlockN, seq.len_k);
  const MaskRule& rule = seq.rule;
  const int64_t h0 = h_kv * p.group_size();

  // Visits: every query head of the group, each over the same query blocks; below 2^31, since
  // Q holds kBlockM rows for each. A key block that no query sees (none at all when the sequence
  // has no queries) gets zeros.
  const VisitOrder order(query_blocks(rule, n0, n1, kBlockM, seq.len_q));
  const int n_visits = order.n_visits * int(p.group_size());
  const QueryHead<Element> first_head = query_head<Element>(p, seq, h0);
  QueryVisit loading;  // the next visit to load, kStages - 1 ahead of the one computed
  auto load_visit = [&](int stage, int) {
    load_query_stage<Traits>(sm, stage, first_head.next(loading.head, p), p, seq.len_q,
                             int64_t(order.block(loading.t)) * kBlockM);
    loading.advance(order.n_visits);
  };

  // K and V in their own cp.async group, then the ring's first query stages. A block with no
  // visit loads nothing: it would exit with the copies in flight.
  if (n_visits > 0) kv_source<Traits, Traits::kBlockN>(p, seq, h_kv).load(sm.k, sm.v, n0);
  simt::cp_async_commit();
  CopyRing<Traits::kStages> ring;
  ring.start(n_visits, load_visit);
  // Held K/V slices are read once their copies have landed (without visits they are never used).
  if (Traits::kKVRegisterSteps > 0 && n_visits > 0) ring.wait_for_resident();
  const KVRows<Traits> k_rows(sm.k, warp, lane), v_rows(sm.v, warp, lane);

  const float scale_log2 = float(p.scale * kLog2e);
  const int64_t key0 = n0 + warp * Traits::kRowsPerWarp;
  // Per warp: only its keys decide whether it masks (keys past len_k are never stored). Query
  // tiles are tested unclipped: rows past len_q are zero and contribute nothing.
  const QueryBlockVisibility warp_visibility =
      query_block_visibility(rule, key0, key0 + Traits::kRowsPerWarp, kBlockM);
  float dk[Traits::kDTiles][4] = {}, dv[Traits::kDTiles][4] = {};
  QueryVisit visit;
  for (int t = 0; t < n_visits; ++t) {
    ring.next_tile(t, n_visits, load_visit);
    const int block = order.block(visit.t);
    dkdv_tile<Traits>(dk, dv, k_rows, v_rows, sm, ring.stage, rule,
                      !warp_visibility.fully_visible(block), key0, int64_t(block) * kBlockM,
                      scale_log2, warp, lane);
    visit.advance(order.n_visits);
    ring.advance();
  }

  store_rows<Traits>(static_cast<Element*>(p.dk) + seq.dk_offset(p, h_kv), p.dk_row_stride, dk,
                     float(p.scale), key0, seq.len_k, lane);
  store_rows<Traits>(static_cast<Element*>(p.dv) + seq.dv_offset(p, h_kv), p.dv_row_stride, dv,
                     1.f, key0, seq.len_k, lane);
}

// ---- dQ -----------------------------------------------------------------------------------------

// grid = (ceil(len_q / kBlockM), heads_q, batch), block = kNThreads, dynamic smem = kSmemBytes;
// varlen: len_q = max_seqlen_q, and blocks past their sequence's queries return at once.
template <typename Traits>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocksPerSm)
    dq_kernel(const AttentionBackwardParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN;
  SWAA_DYNAMIC_SMEM(smem_raw);
  Element* smem_q = reinterpret_cast<Element*>(smem_raw);
  Element* smem_do = smem_q + Traits::kSmemQElems;
  Element* smem_k = smem_do + Traits::kSmemQElems;                   // kStages K tiles
  Element* smem_v = smem_k + Traits::kStages * Traits::kSmemKElems;  // kStages V tiles

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t h = blockIdx.y, h_kv = h / p.group_size();
  const Sequence seq(p, blockIdx.z);
  const int64_t m0 = int64_t(blockIdx.x) * Traits::kBlockM;
  if (m0 >= seq.len_q) return;  // the whole block, before any barrier
  const int64_t m1 = min64(m0 + Traits::kBlockM, seq.len_q);
  const MaskRule& rule = seq.rule;
  const QueryHead<Element> qh = query_head<Element>(p, seq, h);
  const KVSource<Traits, kBlockN> kv = kv_source<Traits, kBlockN>(p, seq, h_kv);
  const VisitOrder order(key_blocks(rule, m0, m1, kBlockN, seq.len_k));
  auto load_kv = [&](int stage, int t) {
    kv.load(smem_k + stage * Traits::kSmemKElems, smem_v + stage * Traits::kSmemKElems,
            int64_t(order.block(t)) * kBlockN);
  };

  // Q and dO in their own cp.async group, then the ring's first K/V tiles.
  load_tile_async<Traits, Traits::kBlockM>(smem_q, qh.q, p.q_row_stride, m0, seq.len_q);
  load_tile_async<Traits, Traits::kBlockM>(smem_do, qh.d_o, p.do_row_stride, m0, seq.len_q);
  simt::cp_async_commit();
  CopyRing<Traits::kStages> ring;
  ring.start(order.n_visits, load_kv);

  // This lane's two rows: LSE (log2 units) and delta, plain loads (+inf / 0 past len_q).
  const int64_t warp_row0 = m0 + warp * Traits::kRowsPerWarp;
  float lse_log2[2], delta[2];
  for (int half = 0; half < 2; ++half) {
    const int64_t row = warp_row0 + Accumulator::half_row(lane, half);
    lse_log2[half] = row < m1 ? qh.lse[row] * kLog2e : INFINITY;
    delta[half] = row < m1 ? qh.delta[row] : 0.f;
  }
  ring.wait_for_resident();
  const HeldRows<Traits> q_rows(smem_q, warp, lane), do_rows(smem_do, warp, lane);

  const float scale_log2 = float(p.scale * kLog2e);
  // Per warp: only its rows decide whether it masks (rows past len_q have P = 0). Tiles are
  // tested unclipped, as in the forward.
  const BlockVisibility warp_visibility =
      block_visibility(rule, warp_row0, warp_row0 + Traits::kRowsPerWarp, kBlockN);
  float dq[Traits::kDTiles][4] = {};
  for (int t = 0; t < order.n_visits; ++t) {
    ring.next_tile(t, order.n_visits, load_kv);
    const int block = order.block(t);
    const Element* k_tile = smem_k + ring.stage * Traits::kSmemKElems;
    float s[Traits::kNTiles][4], dp[Traits::kNTiles][4];
    qk_scores<Traits>(s, q_rows, k_tile, lane);
    qk_scores<Traits>(dp, do_rows, smem_v + ring.stage * Traits::kSmemKElems, lane);
    if (!warp_visibility.fully_visible(block))
      apply_mask(s, rule, warp_row0, int64_t(block) * kBlockN, lane);
    softmax_backward(s, dp, scale_log2, [&](int, int e, float& l, float& d) {
      l = lse_log2[e / 2];
      d = delta[e / 2];
    });
    // dQ += dS K: K is stored key-major, as V is for the forward's P V.
    pv_accumulate<Traits>(dq, dp, k_tile, lane);
    ring.advance();
  }
  store_rows<Traits>(static_cast<Element*>(p.dq) + seq.dq_offset(p, h), p.dq_row_stride, dq,
                     float(p.scale), warp_row0, seq.len_q, lane);
}

}  // namespace swaa::cuda
