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
// Both evaluate the rule only on tiles that `tile_fully_visible` cannot clear. Tile shapes:
// kernel_traits.h (BackwardKVTraits, BackwardQTraits). Same source on the GPU (nvcc) and on the
// CPU through the SIMT emulator (g++ -DSWAA_SIMT_HOST).
//
// Occupancy: a dkdv block has 256 threads, so at its register count (near the 255 cap) one block
// of 8 warps fits an SM on both archs: registers, not shared memory, bound it, and a larger
// D=128 tile would spill. A dq block has 128 threads. Registers, spills, shared memory and the
// hot loops' SASS counts are measured by `make sass-report` and read in docs/sass-report.md.
#pragma once
#include "forward_kernel.cuh"  // the tile helpers both directions share

namespace swaa::cuda {

// Pointers of one (sequence, query head) of the backward's inputs.
template <typename Element>
struct QueryHead {
  const Element* q;
  const Element* d_o;
  const float* lse;    // (len_q,) natural log
  const float* delta;  // (len_q,)
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

// Rows [row0 + lane/4 (+8)] of a (16, kHeadDim) accumulator, times `scale`, into a row-major
// output; rows at or past n_rows are not written.
template <typename Traits>
__device__ __forceinline__ void store_rows(typename Traits::Element* out, int64_t row_stride,
                                           const float (&acc)[Traits::kDTiles][4], float scale,
                                           int64_t row0, int64_t n_rows, int lane) {
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + lane / 4 + r * 8;
    if (row >= n_rows) continue;
    auto* dst = reinterpret_cast<uint32_t*>(out + row * row_stride);
    for (int dt = 0; dt < Traits::kDTiles; ++dt) {
      const int col = dt * kMmaN + 2 * (lane % 4);
      simt::st_global(dst + col / 2,
                      Traits::Ops::pack2(acc[dt][2 * r] * scale, acc[dt][2 * r + 1] * scale));
    }
  }
}

// ---- dK / dV ------------------------------------------------------------------------------------

// s^T[j][i] <- -inf where query i does not see key j, in 32-bit arithmetic relative to the tile
// (mask.h's TileRule). Keys are the accumulator rows here: lane holds keys lane/4 (+8 for
// e >= 2) and queries 2 (lane % 4) + (e % 2) of each n-tile.
template <int kNTiles>
__device__ __forceinline__ void apply_mask_transposed(float (&s)[kNTiles][4], const MaskRule& rule,
                                                      int64_t key0, int64_t m0, int lane) {
  const TileRule tile = tile_rule(rule, m0, key0);
  for (int nt = 0; nt < kNTiles; ++nt) {
    for (int e = 0; e < 4; ++e) {
      const int dj = lane / 4 + (e / 2) * 8;
      const int di = nt * kMmaN + 2 * (lane % 4) + e % 2;
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
  float* lse_log2;  // kStages x kBlockM: LSE * log2(e), +inf past len_q
  float* delta;    // kStages x kBlockM: 0 past len_q

  __device__ __forceinline__ explicit KVSmem(char* raw) {
    k = reinterpret_cast<Element*>(raw);
    v = k + Traits::kSmemKElems;
    q = v + Traits::kSmemKElems;
    d_o = q + Traits::kStages * Traits::kSmemQElems;
    lse_log2 = reinterpret_cast<float*>(d_o + Traits::kStages * Traits::kSmemQElems);
    delta = lse_log2 + Traits::kStages * Traits::kBlockM;
  }
};

// One visit of the dK/dV loop: query block `m_block` of head `h` of the GQA group.
struct QueryVisit {
  int64_t h;
  int64_t m0;
};

__device__ __forceinline__ QueryVisit nth_query_visit(const TwoRanges& blocks, int64_t per_head,
                                                      int64_t h0, int64_t block_m, int64_t t) {
  return {h0 + t / per_head, nth_block(blocks, t % per_head) * block_m};
}

// Q, dO rows [m0, m0 + kBlockM) of one query head into ring stage `stage` (cp.async, zero-filled
// past the sequence's len_q), and their LSE / delta with plain loads.
template <typename Traits>
__device__ __forceinline__ void load_query_stage(const KVSmem<Traits>& sm, int stage,
                                                 const QueryHead<typename Traits::Element>& qh,
                                                 const AttentionBackwardParams& p, int64_t len_q,
                                                 int64_t m0) {
  constexpr int kBlockM = Traits::kBlockM;
  const int offset = stage * Traits::kSmemQElems;
  load_tile_async<Traits, kBlockM>(sm.q + offset, qh.q, p.q_row_stride, m0, len_q);
  load_tile_async<Traits, kBlockM>(sm.d_o + offset, qh.d_o, p.do_row_stride, m0, len_q);
  for (int i = threadIdx.x; i < kBlockM; i += Traits::kNThreads) {
    const int64_t row = m0 + i;
    const bool in_range = row < len_q;
    // Through the layer's accessors, so the emulator's race check sees this exchange.
    simt::st_shared(&sm.lse_log2[stage * kBlockM + i], in_range ? qh.lse[row] * kLog2e : INFINITY);
    simt::st_shared(&sm.delta[stage * kBlockM + i], in_range ? qh.delta[row] : 0.f);
  }
}

// dV += P^T dO and dK += dS^T Q for this warp's 16 keys and one query stage.
template <typename Traits>
__device__ __forceinline__ void dkdv_tile(float (&dk)[Traits::kDTiles][4],
                                          float (&dv)[Traits::kDTiles][4],
                                          const KVSmem<Traits>& sm, int stage, const MaskRule& rule,
                                          bool masked, int64_t key0, int64_t m0, float scale_log2,
                                          int warp, int lane) {
  constexpr int kQTiles = Traits::kQTiles;
  const auto* q = sm.q + stage * Traits::kSmemQElems;
  const auto* d_o = sm.d_o + stage * Traits::kSmemQElems;
  const float* lse_log2 = sm.lse_log2 + stage * Traits::kBlockM;
  const float* delta = sm.delta + stage * Traits::kBlockM;

  // S^T = K Q^T and dP^T = V dO^T: keys are the rows, so P^T and dS^T come out in accumulator
  // layout, which is the A operand of the two products below. The K/V fragments are reloaded
  // per stage rather than held: registers go to the dK/dV accumulators.
  uint32_t frag[Traits::kDSteps][4];
  float s[kQTiles][4], dp[kQTiles][4];
  load_row_fragments<Traits>(frag, sm.k, warp, lane);
  qk_scores<Traits>(s, frag, q, lane);
  load_row_fragments<Traits>(frag, sm.v, warp, lane);
  qk_scores<Traits>(dp, frag, d_o, lane);
  if (masked) apply_mask_transposed(s, rule, key0, m0, lane);
  softmax_backward(s, dp, scale_log2, [&](int nt, int e, float& l, float& d) {
    const int col = nt * kMmaN + 2 * (lane % 4) + e % 2;
    l = simt::ld_shared(&lse_log2[col]);
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
  constexpr int kStages = Traits::kStages;
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

  // Visits: every query head of the group, each over the same query blocks. A key block that no
  // query sees (none at all when the sequence has no queries) gets zeros.
  const TwoRanges blocks = query_blocks(rule, n0, n1, Traits::kBlockM, seq.len_q);
  const int64_t per_head = (blocks.first.end - blocks.first.begin) +
                           (blocks.second.end - blocks.second.begin);
  const int64_t n_visits = per_head * p.group_size();
  auto load_visit = [&](int64_t t) {
    const QueryVisit qv = nth_query_visit(blocks, per_head, h0, Traits::kBlockM, t);
    load_query_stage<Traits>(sm, int(t % kStages), query_head<Element>(p, seq, qv.h), p,
                             seq.len_q, qv.m0);
  };

  // K and V in their own cp.async group, then the first kStages - 1 query stages, one group each.
  // A block with no visit loads nothing: it would exit with the copies in flight.
  if (n_visits > 0) {
    const auto* k = static_cast<const Element*>(p.k) + seq.k_offset(p, h_kv);
    const auto* v = static_cast<const Element*>(p.v) + seq.v_offset(p, h_kv);
    load_tile_async<Traits, Traits::kBlockN>(sm.k, k, p.k_row_stride, n0, seq.len_k);
    load_tile_async<Traits, Traits::kBlockN>(sm.v, v, p.v_row_stride, n0, seq.len_k);
  }
  simt::cp_async_commit();
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < n_visits) load_visit(t);
    simt::cp_async_commit();
  }

  const float scale_log2 = float(p.scale * kLog2e);
  const int64_t key0 = n0 + warp * Traits::kRowsPerWarp;
  float dk[Traits::kDTiles][4] = {}, dv[Traits::kDTiles][4] = {};
  for (int64_t t = 0; t < n_visits; ++t) {
    // Stage t has landed, and every warp is done with the stage that t + kStages - 1 reuses.
    simt::cp_async_wait<kStages - 2>();
    __syncthreads();
    if (t + kStages - 1 < n_visits) load_visit(t + kStages - 1);
    simt::cp_async_commit();

    const int64_t m0 = nth_query_visit(blocks, per_head, h0, Traits::kBlockM, t).m0;
    const int64_t m1 = min64(m0 + Traits::kBlockM, seq.len_q);
    // The key tile's unclipped end, as in the forward (keys past len_k are never stored).
    const bool masked = !rule.tile_fully_visible(m0, m1, n0, n0 + Traits::kBlockN);
    dkdv_tile<Traits>(dk, dv, sm, int(t % kStages), rule, masked, key0, m0, scale_log2, warp, lane);
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
__global__ void __launch_bounds__(Traits::kNThreads) dq_kernel(const AttentionBackwardParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN, kStages = Traits::kStages;
  SWAA_DYNAMIC_SMEM(smem_raw);
  Element* smem_q = reinterpret_cast<Element*>(smem_raw);
  Element* smem_do = smem_q + Traits::kSmemQElems;
  Element* smem_k = smem_do + Traits::kSmemQElems;           // kStages K tiles
  Element* smem_v = smem_k + kStages * Traits::kSmemKElems;  // kStages V tiles

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t h = blockIdx.y, h_kv = h / p.group_size();
  const Sequence seq(p, blockIdx.z);
  const int64_t m0 = int64_t(blockIdx.x) * Traits::kBlockM;
  if (m0 >= seq.len_q) return;  // the whole block, before any barrier
  const int64_t m1 = min64(m0 + Traits::kBlockM, seq.len_q);
  const MaskRule& rule = seq.rule;
  const QueryHead<Element> qh = query_head<Element>(p, seq, h);
  const auto* k = static_cast<const Element*>(p.k) + seq.k_offset(p, h_kv);
  const auto* v = static_cast<const Element*>(p.v) + seq.v_offset(p, h_kv);
  const TwoRanges blocks = key_blocks(rule, m0, m1, kBlockN, seq.len_k);
  const int64_t n_visits = (blocks.first.end - blocks.first.begin) +
                           (blocks.second.end - blocks.second.begin);
  auto load_kv = [&](int64_t t) {
    const int64_t n0 = nth_block(blocks, t) * kBlockN;
    const int offset = int(t % kStages) * Traits::kSmemKElems;
    load_tile_async<Traits, kBlockN>(smem_k + offset, k, p.k_row_stride, n0, seq.len_k);
    load_tile_async<Traits, kBlockN>(smem_v + offset, v, p.v_row_stride, n0, seq.len_k);
  };

  // Q and dO in their own cp.async group, then the first kStages - 1 K/V tiles, one group each.
  load_tile_async<Traits, Traits::kBlockM>(smem_q, qh.q, p.q_row_stride, m0, seq.len_q);
  load_tile_async<Traits, Traits::kBlockM>(smem_do, qh.d_o, p.do_row_stride, m0, seq.len_q);
  simt::cp_async_commit();
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < n_visits) load_kv(t);
    simt::cp_async_commit();
  }

  // This lane's two rows: LSE (log2 units) and delta, plain loads (+inf / 0 past len_q).
  const int64_t warp_row0 = m0 + warp * Traits::kRowsPerWarp;
  float lse_log2[2], delta[2];
  for (int r = 0; r < 2; ++r) {
    const int64_t row = warp_row0 + lane / 4 + r * 8;
    lse_log2[r] = row < m1 ? qh.lse[row] * kLog2e : INFINITY;
    delta[r] = row < m1 ? qh.delta[row] : 0.f;
  }
  simt::cp_async_wait<kStages - 1>();
  __syncthreads();
  uint32_t q_frag[Traits::kDSteps][4], do_frag[Traits::kDSteps][4];
  load_row_fragments<Traits>(q_frag, smem_q, warp, lane);
  load_row_fragments<Traits>(do_frag, smem_do, warp, lane);

  const float scale_log2 = float(p.scale * kLog2e);
  float dq[Traits::kDTiles][4] = {};
  for (int64_t t = 0; t < n_visits; ++t) {
    // Tile t has landed, and every warp is done with the stage that tile t + kStages - 1 reuses.
    simt::cp_async_wait<kStages - 2>();
    __syncthreads();
    if (t + kStages - 1 < n_visits) load_kv(t + kStages - 1);
    simt::cp_async_commit();

    const int stage = int(t % kStages);
    const int64_t n0 = nth_block(blocks, t) * kBlockN;
    float s[Traits::kNTiles][4], dp[Traits::kNTiles][4];
    qk_scores<Traits>(s, q_frag, smem_k + stage * Traits::kSmemKElems, lane);
    qk_scores<Traits>(dp, do_frag, smem_v + stage * Traits::kSmemKElems, lane);
    if (!rule.tile_fully_visible(m0, m1, n0, n0 + kBlockN)) apply_mask(s, rule, warp_row0, n0, lane);
    softmax_backward(s, dp, scale_log2, [&](int, int e, float& l, float& d) {
      l = lse_log2[e / 2];
      d = delta[e / 2];
    });
    // dQ += dS K: K is stored key-major, as V is for the forward's P V.
    pv_accumulate<Traits>(dq, dp, smem_k + stage * Traits::kSmemKElems, lane);
  }
  store_rows<Traits>(static_cast<Element*>(p.dq) + seq.dq_offset(p, h), p.dq_row_stride, dq,
                     float(p.scale), warp_row0, seq.len_q, lane);
}

}  // namespace swaa::cuda
