// What every CUDA kernel's shape is made of, in one place: the tensor-core mma and its element
// types (ElementOps), the swizzled shared-memory tile layout all kernels share (TileTraits), and
// the tile shapes of each kernel per head dim, with the register and shared-memory budget each is
// derived from (ForwardTraits, DecodeTraits, BackwardKVTraits, BackwardQTraits). Every size a
// kernel uses is derived here; the kernels have no literals. What nvcc makes of these budgets
// (registers, spills, SASS per mma) is measured by `make sass-report`: docs/sass-report.md.
#pragma once
#include <cstdint>
#include <cstring>

#include "../simt/simt.h"
#include "decode_plan.h"

namespace swaa::cuda {

// exp(x) = exp2(x * log2(e)): the softmax runs on exp2, which is one instruction on the GPU.
inline constexpr float kLog2e = 1.4426950408889634f;

// One m16n8k16 tile: 16 rows (M), 8 columns (N), 16 deep (K); fragments per the PTX ISA.
inline constexpr int kMmaM = 16;
inline constexpr int kMmaN = 8;
inline constexpr int kMmaK = 16;
inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullWarpMask = 0xffffffffu;

template <typename Element>
struct ElementOps;

template <>
struct ElementOps<__half> {
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2], const float (&c)[4]) {
    simt::mma_m16n8k16_f16(d, a, b, c);
  }
  // Two floats -> (lo, hi) halves of one register, round to nearest.
  static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    uint32_t r;
    std::memcpy(&r, &h, sizeof(r));
    return r;
  }
};

template <>
struct ElementOps<__nv_bfloat16> {
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2], const float (&c)[4]) {
    simt::mma_m16n8k16_bf16(d, a, b, c);
  }
  static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t r;
    std::memcpy(&r, &h, sizeof(r));
    return r;
  }
};

// What every kernel's tiles share: the element type, the thread count, the head dim and the
// swizzled shared-memory layout of a (rows, kHeadDim) tile. Any whole number of warps works
// (the SIMT layer runs any 1-D block of a multiple of 32 threads, up to 1024).
template <typename Element_, int kHeadDim_, int kNWarps_>
struct TileTraits {
  using Element = Element_;
  using Ops = ElementOps<Element>;
  static_assert(sizeof(Element) == 2, "the tensor-core path takes 16-bit elements");

  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * kWarpSize;
  static constexpr int kRowsPerWarp = kMmaM;  // each warp owns one m16 tile of the block's rows
  static constexpr int kDSteps = kHeadDim / kMmaK;  // k-steps of a product over the head dim
  static constexpr int kDTiles = kHeadDim / kMmaN;  // n-tiles of a (16, kHeadDim) accumulator
  static_assert(kHeadDim % (2 * kMmaN) == 0, "ldmatrix.x4 loads n-tiles in pairs");

  // Shared-memory tiles are row-major with 16-byte chunks XOR-swizzled by (row % 8): the 8 rows
  // one ldmatrix reads then hit 8 different bank groups instead of one.
  static constexpr int kChunkElems = 16 / sizeof(Element);
  static constexpr int kChunksPerRow = kHeadDim / kChunkElems;
  static constexpr int kSwizzleRows = 8;
  static_assert(kChunksPerRow >= kSwizzleRows, "the swizzle needs 8 chunks per row");

  static __device__ __forceinline__ int smem_offset(int row, int col) {
    const int chunk = (col / kChunkElems) ^ (row % kSwizzleRows);
    return row * kHeadDim + chunk * kChunkElems + col % kChunkElems;
  }
  // The XOR only permutes chunks inside aligned groups of kSwizzleRows, so for whole multiples
  // smem_offset(row + 8 r, col + kSwizzleSpan c) == smem_offset(row, col) + 8 r kHeadDim +
  // kSwizzleSpan c: a lane computes a few offsets once and reaches every ldmatrix address of a
  // tile by compile-time steps (the key loop then does no swizzle arithmetic).
  static constexpr int kSwizzleSpan = kSwizzleRows * kChunkElems;   // elements
  static constexpr int kStepsPerSpan = kSwizzleSpan / kMmaK;        // 16-wide column steps
  static_assert(kHeadDim % kSwizzleSpan == 0, "the head dim is whole swizzle groups");
};

// ---- Forward (forward_kernel.cuh) ---------------------------------------------------------------
// Shape of the work (sm_80-style, FlashAttention-2 layout):
//   - one thread block owns kBlockM = 128 query rows of one (batch, query head); each of its 4
//     warps owns kRowsPerWarp = 32 of them, as kMTiles = 2 m16n8k16 M tiles, so the softmax
//     statistics of a row live in the 4 lanes of one quad and never cross warps;
//   - Q is loaded once to shared memory; K/V tiles of kBlockN keys stream through a kStages-deep
//     cp.async ring; every K or V fragment a warp reads from shared memory feeds the MMAs of
//     both its m-tiles, which halves the shared-memory bytes per FLOP of one m-tile per warp;
//   - S = Q K^T and O += P V run on mma.sync m16n8k16 with float accumulators; P is rounded to
//     the input type in registers and fed straight back as the A operand (no shared memory).
//
// Per-thread fragment registers, for both m-tiles: Q = 2 * kQRegisterSteps * 4 (the first
// kQRegisterSteps 16-wide slices of the head dim stay in registers; the rest are re-read from
// the shared Q tile per key tile), S = 2 * kBlockN/8 * 4, O = 2 * kHeadDim/8 * 4.
//   D=64,  kBlockN=64, all 4 Q steps:    Q 32 + S 64 + O 64  = 160.
//   D=128, kBlockN=32, 4 of 8 Q steps:   Q 32 + S 32 + O 128 = 192; re-reading the other half
//   of Q costs 4 KiB of ldmatrix per warp and tile (0.047 shared-memory bytes per FLOP with the
//   cp.async writes instead of 0.039). At 255 registers ptxas is erratic: with nvcc 13.0, every
//   other count of Q steps in registers spilled on sm_80 or sm_90; 4 fits both (make sass-check
//   fails on any spill). A 64-key tile would need S 64 + O 128 before any of Q.
// Shared memory: Q tile + kStages * (K tile + V tile), kRows x kHeadDim 2-byte elements each
// (+1 KiB the hardware reserves per block). sm_80 has 164 KiB per SM, sm_90 228 KiB:
//   D=64,  2 stages: 16 KiB + 2 * 16 KiB = 48 KiB: 3 blocks per SM on sm_80, 4 on sm_90.
//   D=128, 3 stages: 32 KiB + 3 * 16 KiB = 80 KiB: 2 blocks per SM on sm_80 and sm_90; the
//                    third stage hides load latency when few warps are resident. Over the 48 KiB
//                    default, so it needs the opt-in, which simt::launch sets once per kernel.
// Registers: any count up to 255 gives 2 blocks (8 warps) per SM (4 warps x 32 lanes x 256 =
// 32K of the 64K per SM): the occupancy of both head dims, by registers; the measured counts are
// in docs/sass-report.md. The trade-off against one m-tile per warp (16 rows, 64-row blocks:
// 3 blocks = 12 warps per SM at D=64, 2 = 8 at D=128): at D=64 a third fewer resident warps,
// for half the shared-memory bytes per FLOP (0.078 -> 0.039) and fewer SASS instructions per MMA
// in the key loop (docs/sass-report.md); at D=128 the same 8 warps.
template <typename Element_, int kHeadDim_, int kBlockN_, int kStages_, int kMTiles_,
          int kQRegisterSteps_>
struct ForwardTraitsBase : TileTraits<Element_, kHeadDim_, /*kNWarps=*/4> {
  using Base = TileTraits<Element_, kHeadDim_, 4>;
  using typename Base::Element;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kMTiles = kMTiles_;                  // m16 tiles per warp
  static constexpr int kRowsPerWarp = kMTiles * kMmaM;      // (TileTraits': one m-tile)
  static constexpr int kBlockM = Base::kNWarps * kRowsPerWarp;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  static_assert(kStages >= 2, "the cp.async ring needs a stage in flight and one in use");
  static constexpr int kQRegisterSteps = kQRegisterSteps_;  // Q slices held in registers
  static_assert(kMTiles >= 1 && kQRegisterSteps >= 0 && kQRegisterSteps <= Base::kDSteps);

  // Fragment counts per warp.
  static constexpr int kNTiles = kBlockN / kMmaN;  // n-tiles of S (8 keys each)
  static_assert(kBlockN % (2 * kMmaN) == 0, "ldmatrix.x4 loads n-tiles in pairs");

  static constexpr int kSmemQElems = kBlockM * kHeadDim;
  static constexpr int kSmemKVElems = kBlockN * kHeadDim;  // one K (or V) stage
  static constexpr size_t kSmemQBytes = kSmemQElems * sizeof(Element);
  static constexpr size_t kSmemKVBytes = 2 * kStages * kSmemKVElems * sizeof(Element);
  static constexpr size_t kSmemBytes = kSmemQBytes + kSmemKVBytes;
};

template <typename Element, int kHeadDim>
struct ForwardTraits;

// Shapes per head dim; the reasoning is in the comment above.
template <typename Element>
struct ForwardTraits<Element, 64>
    : ForwardTraitsBase<Element, 64, /*kBlockN=*/64, /*kStages=*/2, /*kMTiles=*/2,
                        /*kQRegisterSteps=*/4> {};

template <typename Element>
struct ForwardTraits<Element, 128>
    : ForwardTraitsBase<Element, 128, /*kBlockN=*/32, /*kStages=*/3, /*kMTiles=*/2,
                        /*kQRegisterSteps=*/4> {};

// ---- Decode (decode_kernel.cuh) -------------------------------------------------------------------
// The forward's loop with one m-tile per warp and Q held in registers: a block's 64 rows are
// packed (query head, query) pairs instead of one head's queries (at most 16 queries x 8 heads of
// a GQA group, usually far fewer: a second m-tile would mostly be empty), and its key loop is one
// split of the key range. Decode is bound by reading K/V from memory, so its key tiles are twice
// the forward's (decode_plan.h's decode_block_n: 128 keys at D=64, 64 at D=128, as FlashAttention's
// split-KV kernel): half the barriers, ring turns and O rescales per key, larger copies in
// flight. Registers: S 4 * kBlockN/8 + O kHeadDim/8 * 4 + Q kHeadDim/16 * 4 = 64 + 32 + 16 (D=64),
// 32 + 64 + 32 (D=128). Shared memory: Q + 2 stages of K and V = 8 + 64 KiB (D=64), 16 + 64 KiB
// (D=128): 2 blocks per SM on sm_80 and sm_90. The combine step is one warp per query row
// (kCombineWarps per block).
template <typename Element, int kHeadDim>
struct DecodeTraits
    : ForwardTraitsBase<Element, kHeadDim, decode_block_n(kHeadDim), kDecodeStages,
                        /*kMTiles=*/1, /*kQRegisterSteps=*/kHeadDim / kMmaK> {
  using Base = ForwardTraitsBase<Element, kHeadDim, decode_block_n(kHeadDim), kDecodeStages, 1,
                                 kHeadDim / kMmaK>;
  static_assert(Base::kBlockM == kDecodeBlockRows, "decode_plan.h sizes row groups by kBlockM");
  // decode_plan.h's kDecodeBlocksPerSm; also the register budget (__launch_bounds__): left free,
  // ptxas aims at 3 blocks for D=64 and spills.
  static constexpr int kMinBlocksPerSm = kDecodeBlocksPerSm;
  static constexpr int kCombineWarps = 4;
  static constexpr int kCombineThreads = kCombineWarps * kWarpSize;
  static constexpr int kCombinePairsPerLane = kHeadDim / (2 * kWarpSize);  // 2 columns per pair
  static_assert(kHeadDim % (2 * kWarpSize) == 0, "a warp merges whole rows, 2 columns a lane");
};

// ---- Backward (backward_kernel.cuh) -------------------------------------------------------------
// Two kernels, so that every gradient element has exactly one writer (deterministic, no atomics):
//   dK/dV: one block = kBlockN keys of one (batch, KV head), kRowsPerWarp = 16 keys per warp, so
//          the key gradients accumulate in registers; it streams query tiles of kBlockM rows of
//          every query head of the GQA group through a kStages-deep ring (Q, dO, LSE, delta).
//          The products are transposed (S^T = K Q^T, dP^T = V dO^T), which puts P^T and dS^T in
//          accumulator layout, i.e. already the A operand of dV += P^T dO and dK += dS^T Q.
//   dQ:    one block = kBlockM query rows of one (batch, query head), like the forward; it streams
//          K/V tiles of kBlockN keys and accumulates dQ += dS K in registers.
// Per-thread fragment registers (float accumulators held across the loop, 4 per 8-wide n-tile):
//   dK/dV: dK + dV = 2 * kHeadDim/8 * 4; S^T + dP^T = 2 * kBlockM/8 * 4; K and V rows: the
//          first kKVRegisterSteps 16-wide slices held for the whole kernel (4 per slice of
//          each), the rest re-read from shared memory one slice at a time (4) on every query tile.
//     D=64,  8 warps, kBlockM=64, all 4 slices held: 64 + 64 + 32 = 160.
//     D=128, 8 warps, kBlockM=64, 2 of 8 held:       128 + 64 + 16 + 4 = 212 (ptxas spills
//     from 4 held: the 255-register cap).
//   Shared-memory reads per warp and query tile: Q and dO twice each (the B operand of S^T and
//   dP^T, then of dK and dV), 8 kBlockM kHeadDim bytes for 128 kBlockM kHeadDim FLOPs: 0.0625
//   B/FLOP, A100's 128 B/clk over 2048 FLOP/clk. Each K or V slice not held adds 16 rows x 16
//   columns (one ldmatrix.x4, 512 bytes) a tile, which the larger D=128 query tile halves per FLOP.
//   dQ:    Q and dO fragments 2 * kHeadDim/16 * 4, dQ kHeadDim/8 * 4, S + dP 2 * kBlockN/8 * 4.
//     D=64,  kBlockN=64: 32 + 32 + 64 = 128.             D=128, kBlockN=32: 64 + 64 + 32 = 160.
// Shared memory (derived below; sm_80 164 KiB per SM, sm_90 228 KiB):
//   dK/dV: K + V tiles + kStages * (Q + dO tiles + LSE + delta rows).
//     D=64:  2 * 16 KiB + 2 * (2 * 8 KiB + 0.5 KiB) = 65 KiB; D=128: 2 * 32 KiB + 2 * (2 * 16 KiB +
//     0.5 KiB) = 129 KiB: one or two blocks (8 / 16 warps) per SM by shared memory.
//   dQ:    Q + dO tiles + kStages * (K + V tiles): D=64 16 + 2 * 16 = 48 KiB, D=128 32 + 2 * 16 =
//          64 KiB, as the forward's occupancy.
// LSE and delta rows go through the ring with 4-byte cp.async copies (a 16-byte copy would need
// len_q % 4 == 0).
template <typename Element_, int kHeadDim_, int kNWarps_, int kBlockM_, int kStages_,
          int kKVRegisterSteps_>
struct BackwardKVTraitsBase : TileTraits<Element_, kHeadDim_, kNWarps_> {
  using Base = TileTraits<Element_, kHeadDim_, kNWarps_>;
  using typename Base::Element;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockN = Base::kNWarps * Base::kRowsPerWarp;  // keys per block
  static constexpr int kBlockM = kBlockM_;                            // query rows per tile
  static constexpr int kStages = kStages_;
  static_assert(kStages >= 2, "the cp.async ring needs a stage in flight and one in use");
  static constexpr int kQTiles = kBlockM / kMmaN;  // n-tiles of S^T (8 queries each)
  static_assert(kBlockM % (2 * kMmaN) == 0, "ldmatrix.x4 loads n-tiles in pairs");
  // 16-wide slices of the head dim of the warp's K and V rows held in registers for the kernel
  static constexpr int kKVRegisterSteps = kKVRegisterSteps_;

  static constexpr int kSmemKElems = kBlockN * kHeadDim;  // K, and V
  static constexpr int kSmemQElems = kBlockM * kHeadDim;  // one Q (or dO) stage
  static constexpr size_t kSmemKVBytes = 2 * kSmemKElems * sizeof(Element);
  static constexpr size_t kSmemQBytes = 2 * kStages * kSmemQElems * sizeof(Element);
  static constexpr size_t kSmemRowBytes = 2 * kStages * kBlockM * sizeof(float);  // LSE, delta
  static constexpr size_t kSmemBytes = kSmemKVBytes + kSmemQBytes + kSmemRowBytes;
};

template <typename Element_, int kHeadDim_, int kNWarps_, int kBlockN_, int kStages_,
          int kMinBlocksPerSm_>
struct BackwardQTraitsBase : TileTraits<Element_, kHeadDim_, kNWarps_> {
  using Base = TileTraits<Element_, kHeadDim_, kNWarps_>;
  using typename Base::Element;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = Base::kNWarps * Base::kRowsPerWarp;  // query rows per block
  static constexpr int kBlockN = kBlockN_;                            // keys per tile
  static constexpr int kStages = kStages_;
  static_assert(kStages >= 2, "the cp.async ring needs a stage in flight and one in use");
  static constexpr int kNTiles = kBlockN / kMmaN;  // n-tiles of S (8 keys each)
  static_assert(kBlockN % (2 * kMmaN) == 0, "ldmatrix.x4 loads n-tiles in pairs");
  // The resident blocks the kernel's register budget keeps (__launch_bounds__): left free, ptxas
  // spends registers the fragments do not need and a block fewer fits.
  static constexpr int kMinBlocksPerSm = kMinBlocksPerSm_;

  static constexpr int kSmemQElems = kBlockM * kHeadDim;  // Q, and dO
  static constexpr int kSmemKElems = kBlockN * kHeadDim;  // one K (or V) stage
  static constexpr size_t kSmemQBytes = 2 * kSmemQElems * sizeof(Element);
  static constexpr size_t kSmemKVBytes = 2 * kStages * kSmemKElems * sizeof(Element);
  static constexpr size_t kSmemBytes = kSmemQBytes + kSmemKVBytes;
};

template <typename Element, int kHeadDim>
struct BackwardKVTraits;
template <typename Element, int kHeadDim>
struct BackwardQTraits;

// Shapes per head dim; the reasoning is in the comment above.
template <typename Element>
struct BackwardKVTraits<Element, 64>
    : BackwardKVTraitsBase<Element, 64, /*kNWarps=*/8, /*kBlockM=*/64, /*kStages=*/2,
                           /*kKVRegisterSteps=*/4> {};
template <typename Element>
struct BackwardKVTraits<Element, 128>
    : BackwardKVTraitsBase<Element, 128, /*kNWarps=*/8, /*kBlockM=*/64, /*kStages=*/2,
                           /*kKVRegisterSteps=*/2> {};
template <typename Element>
struct BackwardQTraits<Element, 64>
    : BackwardQTraitsBase<Element, 64, /*kNWarps=*/4, /*kBlockN=*/64, /*kStages=*/2,
                          /*kMinBlocksPerSm=*/3> {};
template <typename Element>
struct BackwardQTraits<Element, 128>
    : BackwardQTraitsBase<Element, 128, /*kNWarps=*/4, /*kBlockN=*/32, /*kStages=*/2,
                          /*kMinBlocksPerSm=*/2> {};

}  // namespace swaa::cuda
