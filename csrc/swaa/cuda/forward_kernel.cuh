// CUDA forward kernel: sink + sliding-window attention, FlashAttention-2 style (docs/architecture.md, "Which CUDA forward kernel runs").
// One thread block = kBlockM query rows of one (batch, query head), each warp two 16-row m-tiles
// that share every K/V fragment it reads; it visits only the key blocks `key_blocks` (mask.h)
// names, each once, and evaluates the rule only on tiles its warp's BlockVisibility (mask.h)
// cannot clear. Shapes and sizes: kernel_traits.h. Runs on the GPU (nvcc) and on the CPU through
// the SIMT emulator (g++ -DSWAA_SIMT_HOST): all PTX goes through simt.h.
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

namespace swaa::cuda {

// Where one thread block works: its query rows and the base pointers of its heads.
template <typename Traits>
struct BlockProblem {
  using Element = typename Traits::Element;
  const Element* q;  // row 0 of this (batch, query head)
  const Element* k;  // row 0 of the shared KV head (GQA: never repeated)
  const Element* v;
  Element* o;
  float* lse;
  int64_t m0, m1;    // query rows [m0, m1) of this block, m1 <= len_q (m0 >= m1: past the end)
  int64_t len_q, len_k;  // the sequence's (tile loads zero-fill past them)
  MaskRule rule;
};

template <typename Traits>
__device__ __forceinline__ BlockProblem<Traits> block_problem(const AttentionParams& p) {
  using Element = typename Traits::Element;
  const int64_t h = blockIdx.y, h_kv = h / p.group_size();
  const Sequence seq(p, blockIdx.z);
  BlockProblem<Traits> bp;
  bp.q = static_cast<const Element*>(p.q) + seq.q_offset(p, h);
  bp.k = static_cast<const Element*>(p.k) + seq.k_offset(p, h_kv);
  bp.v = static_cast<const Element*>(p.v) + seq.v_offset(p, h_kv);
  bp.o = static_cast<Element*>(p.o) + seq.o_offset(p, h);
  bp.lse = static_cast<float*>(p.lse) + seq.lse_offset(p, h);
  bp.m0 = int64_t(blockIdx.x) * Traits::kBlockM;
  bp.m1 = min64(bp.m0 + Traits::kBlockM, seq.len_q);
  bp.len_q = seq.len_q, bp.len_k = seq.len_k;
  bp.rule = seq.rule;
  return bp;
}

// Asynchronously copies rows [row0, row0 + kRows) of a (len, kHeadDim) matrix into a swizzled
// shared tile; rows at or past `len` are zero-filled (their source is not read). Each thread
// copies the same 16-byte column of rows r, r + kRowStep, ...: a compile-time trip count, and
// since kRowStep is a multiple of the swizzle period its shared offsets differ by a constant.
template <typename Traits, int kRows>
__device__ __forceinline__ void load_tile_async(typename Traits::Element* smem,
                                                const typename Traits::Element* gmem,
                                                int64_t row_stride, int64_t row0, int64_t len) {
  constexpr int kPerThread = kRows * Traits::kChunksPerRow / Traits::kNThreads;
  constexpr int kRowStep = Traits::kNThreads / Traits::kChunksPerRow;
  static_assert(kRows * Traits::kChunksPerRow % Traits::kNThreads == 0 &&
                    Traits::kNThreads % Traits::kChunksPerRow == 0,
                "every thread copies whole chunks of the same column");
  static_assert(kPerThread == 1 || kRowStep % Traits::kSwizzleRows == 0,
                "a thread's rows must share one swizzle");
  const int row = threadIdx.x / Traits::kChunksPerRow;
  const int col = (threadIdx.x % Traits::kChunksPerRow) * Traits::kChunkElems;
  // Rows this thread may read, in 32 bits: its i-th row is in range iff i * kRowStep < rows_left.
  const int rows_left = int(max64(min64(len - row0 - row, kRows), 0));
  const auto* src = gmem + (row0 + row) * row_stride + col;
  const int64_t src_step = kRowStep * row_stride;  // the same for every tile: hoisted
  auto* dst = smem + Traits::smem_offset(row, col);
  for (int i = 0; i < kPerThread; ++i, src += src_step) {
    const bool in_range = i * kRowStep < rows_left;
    simt::cp_async_16(dst + i * kRowStep * Traits::kHeadDim, in_range ? src : gmem, in_range);
  }
}

// K and V rows [n0, n0 + kBlockN) into ring stage `stage`.
template <typename Traits>
__device__ __forceinline__ void load_kv_async(typename Traits::Element* smem_k,
                                              typename Traits::Element* smem_v, int stage,
                                              const BlockProblem<Traits>& bp,
                                              const AttentionParams& p, int64_t n0) {
  const int offset = stage * Traits::kSmemKVElems;
  load_tile_async<Traits, Traits::kBlockN>(smem_k + offset, bp.k, p.k_row_stride, n0, bp.len_k);
  load_tile_async<Traits, Traits::kBlockN>(smem_v + offset, bp.v, p.v_row_stride, n0, bp.len_k);
}

// This warp's 16 rows of a shared tile (the backward's and decode's rows, one m-tile per warp)
// as mma A fragments, one per 16-wide slice of the head dim.
template <typename Traits>
__device__ __forceinline__ void load_row_fragments(uint32_t (&frag)[Traits::kDSteps][4],
                                                   const typename Traits::Element* smem,
                                                   int warp, int lane) {
  // ldmatrix.x4: lanes 0-15 address rows 0-15 at column 0, lanes 16-31 the same rows at column 8.
  const int row = warp * Traits::kRowsPerWarp + lane % 16;
  for (int ds = 0; ds < Traits::kDSteps; ++ds) {
    const int col = ds * kMmaK + (lane / 16) * 8;
    simt::ldmatrix_x4(frag[ds], smem + Traits::smem_offset(row, col));
  }
}

// The A operand of a product over the head dim for one m-tile, held in registers for the whole
// loop (the backward's K, V, Q and dO rows, decode's packed queries).
template <typename Traits>
struct RegisterRows {
  const uint32_t (&frag)[Traits::kDSteps][4];
  __device__ __forceinline__ void get(int /*mt*/, int ds, uint32_t (&a)[4]) const {
    for (int i = 0; i < 4; ++i) a[i] = frag[ds][i];
  }
};

// The forward's query rows: this warp's kMTiles m-tiles of the shared Q tile, the first
// kQRegisterSteps 16-wide slices of the head dim loaded to registers once, the rest re-read
// (ldmatrix) on every key tile; kernel_traits.h weighs registers against shared-memory bytes.
template <typename Traits>
struct QueryRows {
  using Element = typename Traits::Element;
  static constexpr int kHeld = Traits::kQRegisterSteps > 0 ? Traits::kQRegisterSteps : 1;
  uint32_t frag[Traits::kMTiles][kHeld][4];
  const Element* smem;  // this lane's ldmatrix address of m-tile 0, column 0, minus the swizzle
  int offset[Traits::kStepsPerSpan];  // ...which these add, per 16-wide step of a swizzle span

  __device__ __forceinline__ QueryRows(const Element* smem_q, int warp, int lane) : smem(smem_q) {
    // ldmatrix.x4: lanes 0-15 address rows 0-15 at column 0, lanes 16-31 the same rows at column 8.
    const int row = warp * Traits::kRowsPerWarp + lane % 16;
    for (int c = 0; c < Traits::kStepsPerSpan; ++c)
      offset[c] = Traits::smem_offset(row, c * kMmaK + (lane / 16) * 8);
    for (int mt = 0; mt < Traits::kMTiles; ++mt)
      for (int ds = 0; ds < Traits::kQRegisterSteps; ++ds) load(mt, ds, frag[mt][ds]);
  }
  // Rows 16 mt + [0, 16) are whole swizzle groups below row 0: a constant step (kernel_traits.h).
  __device__ __forceinline__ void load(int mt, int ds, uint32_t (&a)[4]) const {
    simt::ldmatrix_x4(a, smem + offset[ds % Traits::kStepsPerSpan] +
                             (ds / Traits::kStepsPerSpan) * Traits::kSwizzleSpan +
                             mt * kMmaM * Traits::kHeadDim);
  }
  __device__ __forceinline__ void get(int mt, int ds, uint32_t (&a)[4]) const {
    if (ds < Traits::kQRegisterSteps) {
      for (int i = 0; i < 4; ++i) a[i] = frag[mt][ds][i];
    } else {
      load(mt, ds, a);
    }
  }
};

// s[mt] <- A[mt] K^T for kMTiles m-tiles of A rows (`rows`: RegisterRows or QueryRows) and one K
// tile of 8 kNTiles rows (raw dot products, unscaled). Each K fragment feeds every m-tile. The
// backward uses it for every product over the head dim (dO V^T, K Q^T, V dO^T).
template <typename Traits, int kMTiles, int kNTiles, typename Rows>
__device__ __forceinline__ void qk_scores(float (&s)[kMTiles][kNTiles][4], const Rows& rows,
                                          const typename Traits::Element* smem_k, int lane) {
  static_assert(kNTiles % 2 == 0, "ldmatrix.x4 loads n-tiles in pairs");
  for (int mt = 0; mt < kMTiles; ++mt)
    for (int nt = 0; nt < kNTiles; ++nt)
      for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
  // ldmatrix.x4 of keys [16 np, 16 np + 16) x dims [16 ds, 16 ds + 16): registers {0,1} are
  // n-tile 2 np, {2,3} the next. This lane's address, from kStepsPerSpan swizzled offsets.
  int offset[Traits::kStepsPerSpan];
  for (int c = 0; c < Traits::kStepsPerSpan; ++c)
    offset[c] = Traits::smem_offset((lane / 16) * 8 + lane % 8, c * kMmaK + ((lane / 8) % 2) * 8);
  for (int ds = 0; ds < Traits::kDSteps; ++ds) {
    uint32_t a[kMTiles][4];
    for (int mt = 0; mt < kMTiles; ++mt) rows.get(mt, ds, a[mt]);
    for (int np = 0; np < kNTiles / 2; ++np) {
      uint32_t b[4];
      simt::ldmatrix_x4(b, smem_k + offset[ds % Traits::kStepsPerSpan] +
                               (ds / Traits::kStepsPerSpan) * Traits::kSwizzleSpan +
                               np * 2 * kMmaN * Traits::kHeadDim);
      const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
      for (int mt = 0; mt < kMTiles; ++mt) {
        Traits::Ops::mma(s[mt][2 * np], a[mt], b0, s[mt][2 * np]);
        Traits::Ops::mma(s[mt][2 * np + 1], a[mt], b1, s[mt][2 * np + 1]);
      }
    }
  }
}

// One m-tile of A rows held in registers (fragments as load_row_fragments gives them).
template <typename Traits, int kNTiles>
__device__ __forceinline__ void qk_scores(float (&s)[kNTiles][4],
                                          const uint32_t (&a_frag)[Traits::kDSteps][4],
                                          const typename Traits::Element* smem_k, int lane) {
  qk_scores<Traits>(*reinterpret_cast<float(*)[1][kNTiles][4]>(&s), RegisterRows<Traits>{a_frag},
                    smem_k, lane);
}

// s[i][j] <- -inf where the rule hides key j from row i. Only for tiles on an edge of the rule,
// in 32-bit arithmetic relative to the tile (mask.h's TileRule).
// Accumulator layout: lane holds rows lane/4 (+8 for e >= 2), columns 2 (lane % 4) + (e % 2).
// kMTiles m-tiles of rows row0 + 16 mt + [0, 16): one 32-bit rule for all of them.
template <int kMTiles, int kNTiles>
__device__ __forceinline__ void apply_mask(float (&s)[kMTiles][kNTiles][4], const MaskRule& rule,
                                           int64_t row0, int64_t n0, int lane) {
  const TileRule tile = tile_rule(rule, row0, n0);
  SWAA_UNROLL for (int mt = 0; mt < kMTiles; ++mt) {
    SWAA_UNROLL for (int nt = 0; nt < kNTiles; ++nt) {
      for (int e = 0; e < 4; ++e) {
        const int di = mt * kMmaM + lane / 4 + (e / 2) * 8;
        const int dj = nt * kMmaN + 2 * (lane % 4) + e % 2;
        if (!tile.visible(di, dj)) s[mt][nt][e] = -INFINITY;
      }
    }
  }
}

// One m-tile.
template <int kNTiles>
__device__ __forceinline__ void apply_mask(float (&s)[kNTiles][4], const MaskRule& rule,
                                           int64_t row0, int64_t n0, int lane) {
  apply_mask(*reinterpret_cast<float(*)[1][kNTiles][4]>(&s), rule, row0, n0, lane);
}

// Running softmax statistics of this lane's two rows (lane/4 and lane/4 + 8).
struct RowStats {
  float max[2];  // running max of raw scores (-inf before any visible key)
  float sum[2];  // this lane's share of sum(exp(scale * (s - max))); quad-reduced at the end
};

// The quad (4 lanes) holding one row: reduce a per-lane value over it.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFullWarpMask, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFullWarpMask, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(kFullWarpMask, x, 1);
  return x + __shfl_xor_sync(kFullWarpMask, x, 2);
}

// Online softmax step: s <- exp(scale * (s - new_max)), rescale o and the sums by
// exp(scale * (old_max - new_max)). A row with no visible key so far keeps max = -inf, and
// shifting by 0 instead keeps exp(-inf) = 0 (no NaN).
template <typename Traits>
__device__ __forceinline__ void online_softmax(float (&s)[Traits::kNTiles][4],
                                               float (&o)[Traits::kDTiles][4], RowStats& st,
                                               float scale_log2) {
  for (int r = 0; r < 2; ++r) {
    float tile_max = -INFINITY;
    for (int nt = 0; nt < Traits::kNTiles; ++nt)
      tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
    const float new_max = fmaxf(st.max[r], quad_max(tile_max));
    const float shift = new_max == -INFINITY ? 0.f : new_max * scale_log2;
    const float correction = exp2f(st.max[r] * scale_log2 - shift);
    st.max[r] = new_max;
    float tile_sum = 0.f;
    for (int nt = 0; nt < Traits::kNTiles; ++nt) {
      for (int e = 2 * r; e < 2 * r + 2; ++e) {
        s[nt][e] = exp2f(s[nt][e] * scale_log2 - shift);
        tile_sum += s[nt][e];
      }
    }
    st.sum[r] = st.sum[r] * correction + tile_sum;
    for (int dt = 0; dt < Traits::kDTiles; ++dt) {
      o[dt][2 * r] *= correction;
      o[dt][2 * r + 1] *= correction;
    }
  }
}

// o[mt] += P[mt] V for kMTiles m-tiles of P over 8 kNTiles keys. The accumulator layout of two
// adjacent S n-tiles is exactly the A fragment of one 16-key k-step, so P goes from registers to
// the tensor cores without shared memory; each V fragment feeds every m-tile. The backward uses
// it for every product over the key or query axis.
template <typename Traits, int kMTiles, int kNTiles>
__device__ __forceinline__ void pv_accumulate(float (&o)[kMTiles][Traits::kDTiles][4],
                                              const float (&p)[kMTiles][kNTiles][4],
                                              const typename Traits::Element* smem_v, int lane) {
  using Ops = typename Traits::Ops;
  // ldmatrix.x4.trans of keys [16 ks, 16 ks + 16) x dims [16 dp, 16 dp + 16): V is stored
  // key-major, the B operand wants dim-major, so transpose while loading. This lane's address,
  // from kStepsPerSpan swizzled offsets (kernel_traits.h).
  int offset[Traits::kStepsPerSpan];
  for (int c = 0; c < Traits::kStepsPerSpan; ++c)
    offset[c] = Traits::smem_offset(((lane / 8) % 2) * 8 + lane % 8, c * kMmaK + (lane / 16) * 8);
  for (int ks = 0; ks < kNTiles / 2; ++ks) {
    uint32_t a[kMTiles][4];
    for (int mt = 0; mt < kMTiles; ++mt) {
      const float(&lo)[4] = p[mt][2 * ks];
      const float(&hi)[4] = p[mt][2 * ks + 1];
      a[mt][0] = Ops::pack2(lo[0], lo[1]), a[mt][1] = Ops::pack2(lo[2], lo[3]);
      a[mt][2] = Ops::pack2(hi[0], hi[1]), a[mt][3] = Ops::pack2(hi[2], hi[3]);
    }
    for (int dp = 0; dp < Traits::kDTiles / 2; ++dp) {
      uint32_t b[4];
      simt::ldmatrix_x4_trans(b, smem_v + offset[dp % Traits::kStepsPerSpan] +
                                     (dp / Traits::kStepsPerSpan) * Traits::kSwizzleSpan +
                                     ks * kMmaK * Traits::kHeadDim);
      const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
      for (int mt = 0; mt < kMTiles; ++mt) {
        Ops::mma(o[mt][2 * dp], a[mt], b0, o[mt][2 * dp]);
        Ops::mma(o[mt][2 * dp + 1], a[mt], b1, o[mt][2 * dp + 1]);
      }
    }
  }
}

// One m-tile.
template <typename Traits, int kNTiles>
__device__ __forceinline__ void pv_accumulate(float (&o)[Traits::kDTiles][4],
                                              const float (&p)[kNTiles][4],
                                              const typename Traits::Element* smem_v, int lane) {
  pv_accumulate<Traits>(*reinterpret_cast<float(*)[1][Traits::kDTiles][4]>(&o),
                        *reinterpret_cast<const float(*)[1][kNTiles][4]>(&p), smem_v, lane);
}

// out <- o / rowsum and lse <- scale * max + log(rowsum) (natural log) for rows < m1.
template <typename Traits>
__device__ __forceinline__ void store_output(const BlockProblem<Traits>& bp, int64_t o_row_stride,
                                             float (&o)[Traits::kDTiles][4], const RowStats& st,
                                             float scale, int64_t row0, int lane) {
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + lane / 4 + r * 8;
    const float sum = quad_sum(st.sum[r]);
    if (row >= bp.m1) continue;
    const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;
    auto* out = reinterpret_cast<uint32_t*>(bp.o + row * o_row_stride);
    for (int dt = 0; dt < Traits::kDTiles; ++dt) {
      const int col = dt * kMmaN + 2 * (lane % 4);
      simt::st_global(out + col / 2,
                      Traits::Ops::pack2(o[dt][2 * r] * inv_sum, o[dt][2 * r + 1] * inv_sum));
    }
    // A row with no visible key gets +inf, so a backward's exp(s - lse) is 0 there (params.h).
    if (lane % 4 == 0) bp.lse[row] = sum > 0.f ? st.max[r] * scale + logf(sum) : INFINITY;
  }
}

// The t-th block of the visiting order: `first`, then `second` (for key_blocks: the sink
// blocks, then the window blocks).
__device__ __forceinline__ int64_t nth_block(const TwoRanges& blocks, int64_t t) {
  const int64_t n_first = blocks.first.end - blocks.first.begin;
  return t < n_first ? blocks.first.begin + t : blocks.second.begin + (t - n_first);
}

// The same order in 32 bits (block indices are below len_k / kBlockN, like the tile count): three
// registers instead of four 64-bit values carried through the key loop.
struct VisitOrder {
  int first_begin, n_first, second_begin;
  __device__ __forceinline__ explicit VisitOrder(const TwoRanges& blocks)
      : first_begin(int(blocks.first.begin)),
        n_first(int(blocks.first.end - blocks.first.begin)),
        second_begin(int(blocks.second.begin)) {}
  __device__ __forceinline__ int block(int t) const {
    return t < n_first ? first_begin + t : second_begin + (t - n_first);
  }
};

// grid = (ceil(len_q / kBlockM), heads_q, batch), block = kNThreads, dynamic smem = kSmemBytes;
// varlen: len_q = max_seqlen_q, and blocks past their sequence's queries return at once.
template <typename Traits>
__global__ void __launch_bounds__(Traits::kNThreads) forward_kernel(const AttentionParams p) {
  using Element = typename Traits::Element;
  constexpr int kBlockN = Traits::kBlockN, kStages = Traits::kStages, kMTiles = Traits::kMTiles;
  SWAA_DYNAMIC_SMEM(smem_raw);
  Element* smem_q = reinterpret_cast<Element*>(smem_raw);
  Element* smem_k = smem_q + Traits::kSmemQElems;           // kStages K tiles
  Element* smem_v = smem_k + kStages * Traits::kSmemKVElems;  // kStages V tiles

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const BlockProblem<Traits> bp = block_problem<Traits>(p);
  if (bp.m0 >= bp.m1) return;  // the whole block, before any barrier
  const TwoRanges blocks = key_blocks(bp.rule, bp.m0, bp.m1, kBlockN, bp.len_k);
  // Key tiles to visit: at most len_k / kBlockN, so 32 bits count them.
  const int n_visits = int((blocks.first.end - blocks.first.begin) +
                           (blocks.second.end - blocks.second.begin));
  const VisitOrder order(blocks);

  // Q in its own cp.async group, then the first kStages - 1 K/V tiles, one group each (empty
  // groups past the end keep the group count, and so the waits below, uniform).
  load_tile_async<Traits, Traits::kBlockM>(smem_q, bp.q, p.q_row_stride, bp.m0, bp.len_q);
  simt::cp_async_commit();
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < n_visits)
      load_kv_async<Traits>(smem_k, smem_v, t, bp, p, int64_t(order.block(t)) * kBlockN);
    simt::cp_async_commit();
  }
  simt::cp_async_wait<kStages - 1>();
  __syncthreads();
  const QueryRows<Traits> q_rows(smem_q, warp, lane);

  const float scale_log2 = float(p.scale * kLog2e);
  const int64_t warp_row0 = bp.m0 + warp * Traits::kRowsPerWarp;
  // Per warp: only its rows decide whether it masks (rows past m1 are never stored). Tiles are
  // tested unclipped: keys past the sequence's len_k are zero-filled and masked out.
  const BlockVisibility warp_visibility =
      block_visibility(bp.rule, warp_row0, warp_row0 + Traits::kRowsPerWarp, kBlockN);
  float o[kMTiles][Traits::kDTiles][4] = {};
  RowStats st[kMTiles];
  SWAA_UNROLL for (int mt = 0; mt < kMTiles; ++mt) st[mt] = {{-INFINITY, -INFINITY}, {0.f, 0.f}};

  // stage = t % kStages and the stage tile t + kStages - 1 goes to, kept as running counters.
  int stage = 0, next_stage = kStages - 1;
  for (int t = 0; t < n_visits; ++t) {
    // Tile t has landed, and every warp is done with the stage that tile t + kStages - 1 reuses.
    simt::cp_async_wait<kStages - 2>();
    __syncthreads();
    const int t_next = t + kStages - 1;
    if (t_next < n_visits)
      load_kv_async<Traits>(smem_k, smem_v, next_stage, bp, p, int64_t(order.block(t_next)) * kBlockN);
    simt::cp_async_commit();

    const int block = order.block(t);
    const int64_t n0 = int64_t(block) * kBlockN;
    float s[kMTiles][Traits::kNTiles][4];
    qk_scores<Traits>(s, q_rows, smem_k + stage * Traits::kSmemKVElems, lane);
    if (!warp_visibility.fully_visible(block)) apply_mask(s, bp.rule, warp_row0, n0, lane);
    SWAA_UNROLL for (int mt = 0; mt < kMTiles; ++mt)
      online_softmax<Traits>(s[mt], o[mt], st[mt], scale_log2);
    pv_accumulate<Traits>(o, s, smem_v + stage * Traits::kSmemKVElems, lane);
    stage = stage + 1 == kStages ? 0 : stage + 1;
    next_stage = next_stage + 1 == kStages ? 0 : next_stage + 1;
  }
  SWAA_UNROLL for (int mt = 0; mt < kMTiles; ++mt)
    store_output<Traits>(bp, p.o_row_stride, o[mt], st[mt], float(p.scale),
                         warp_row0 + mt * kMmaM, lane);
}

}  // namespace swaa::cuda
