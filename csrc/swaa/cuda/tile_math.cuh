// Tile library, part 2 of 3: the math on fragments. The accumulator layout, the A operands of a
// product over the head dim (rows held in registers or re-read from shared memory), the two
// tensor-core products every kernel is built from (S = A K^T and O += P V), the edge-tile mask and
// the online softmax. Same source on the GPU (nvcc) and on the CPU through the SIMT emulator; all
// PTX goes through simt.h.
#pragma once
#include <cmath>
#include <cstdint>

#include "../mask.h"
#include "kernel_traits.h"

namespace swaa::cuda {

// The float accumulator of one m16n8 tile (PTX ISA, mma.m16n8k16): a lane holds 4 elements, two
// columns of two rows. Elements 2 h and 2 h + 1 lie on row half h (h = 0, 1).
struct Accumulator {
  static __device__ __forceinline__ int row(int lane, int e) { return half_row(lane, e / 2); }
  static __device__ __forceinline__ int col(int lane, int e) { return pair_col(lane) + e % 2; }
  // The row of half h, and the first of the two adjacent columns a lane holds.
  static __device__ __forceinline__ int half_row(int lane, int h) { return lane / 4 + h * 8; }
  static __device__ __forceinline__ int pair_col(int lane) { return 2 * (lane % 4); }
};

// This warp's rows of a shared tile as mma A fragments, read by ldmatrix on every get(): m-tile
// mt is rows warp * kRowsPerWarp + 16 mt + [0, 16), step ds the head dim's 16-wide slice ds.
template <typename Traits>
struct SharedRows {
  using Element = typename Traits::Element;
  const Element* smem;  // this lane's ldmatrix address of m-tile 0, column 0, minus the swizzle
  int offset[Traits::kStepsPerSpan];  // ...which these add, per 16-wide step of a swizzle span

  __device__ __forceinline__ SharedRows(const Element* tile, int warp, int lane) : smem(tile) {
    // ldmatrix.x4: lanes 0-15 address rows 0-15 at column 0, lanes 16-31 the same rows at column 8.
    const int row = warp * Traits::kRowsPerWarp + lane % 16;
    for (int c = 0; c < Traits::kStepsPerSpan; ++c)
      offset[c] = Traits::smem_offset(row, c * kMmaK + (lane / 16) * 8);
  }
  // Rows 16 mt + [0, 16) are whole swizzle groups below row 0: a constant step (kernel_traits.h).
  __device__ __forceinline__ void get(int mt, int ds, uint32_t (&a)[4]) const {
    simt::ldmatrix_x4(a, smem + offset[ds % Traits::kStepsPerSpan] +
                             (ds / Traits::kStepsPerSpan) * Traits::kSwizzleSpan +
                             mt * kMmaM * Traits::kHeadDim);
  }
};

// The A operand of products over the head dim: this warp's kMTiles m-tiles of a shared tile, the
// first kHeldSteps 16-wide slices of the head dim loaded to registers once (construct it when
// the tile has landed), the rest re-read by ldmatrix at every use. Each kernel's traits weigh the
// registers against the shared-memory bytes (kernel_traits.h): the forward's Q, the backward's
// K, V, Q and dO rows, decode's packed queries.
template <typename Traits, int kMTiles = 1, int kHeldSteps = Traits::kDSteps>
struct HeldRows {
  static_assert(kHeldSteps >= 0 && kHeldSteps <= Traits::kDSteps);
  uint32_t frag[kMTiles][kHeldSteps > 0 ? kHeldSteps : 1][4];
  SharedRows<Traits> shared;

  __device__ __forceinline__ HeldRows(const typename Traits::Element* tile, int warp, int lane)
      : shared(tile, warp, lane) {
    for (int mt = 0; mt < kMTiles; ++mt)
      for (int ds = 0; ds < kHeldSteps; ++ds) shared.get(mt, ds, frag[mt][ds]);
  }
  __device__ __forceinline__ void get(int mt, int ds, uint32_t (&a)[4]) const {
    if (ds < kHeldSteps) {
      for (int i = 0; i < 4; ++i) a[i] = frag[mt][ds][i];
    } else {
      shared.get(mt, ds, a);
    }
  }
};

// s[mt] <- A[mt] K^T for kMTiles m-tiles of A rows (`rows`: HeldRows or SharedRows) and one K
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

// One m-tile of A rows.
template <typename Traits, int kNTiles, typename Rows>
__device__ __forceinline__ void qk_scores(float (&s)[kNTiles][4], const Rows& rows,
                                          const typename Traits::Element* smem_k, int lane) {
  qk_scores<Traits>(*reinterpret_cast<float(*)[1][kNTiles][4]>(&s), rows, smem_k, lane);
}

// s[i][j] <- -inf where the rule hides key j from row i. Only for tiles on an edge of the rule,
// in 32-bit arithmetic relative to the tile (mask.h's TileRule).
// kMTiles m-tiles of rows row0 + 16 mt + [0, 16): one 32-bit rule for all of them.
template <int kMTiles, int kNTiles>
__device__ __forceinline__ void apply_mask(float (&s)[kMTiles][kNTiles][4], const MaskRule& rule,
                                           int64_t row0, int64_t n0, int lane) {
  const TileRule tile = tile_rule(rule, row0, n0);
  SWAA_UNROLL for (int mt = 0; mt < kMTiles; ++mt) {
    SWAA_UNROLL for (int nt = 0; nt < kNTiles; ++nt) {
      for (int e = 0; e < 4; ++e) {
        const int di = mt * kMmaM + Accumulator::row(lane, e);
        const int dj = nt * kMmaN + Accumulator::col(lane, e);
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

// Running softmax statistics of this lane's two rows (its accumulator row halves).
struct RowStats {
  float max[2];  // running max of raw scores (-inf before any visible key)
  float sum[2];  // this lane's share of sum(exp(scale * (s - max))); quad-reduced at the end

  // The natural-log LSE of row half h, given its quad-reduced sum (> 0).
  __device__ __forceinline__ float lse(int h, float row_sum, float scale) const {
    return max[h] * scale + logf(row_sum);
  }
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

}  // namespace swaa::cuda
