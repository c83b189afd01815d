// Tile shapes of the CUDA forward kernel, per head dim, and the element-type specific operations
// (tensor-core mma, packing two floats into one 32-bit register). Every size the kernel uses is
// derived here; the kernel has no literals.
//
// Shape of the work (sm_80-style, FlashAttention-2 layout):
//   - one thread block owns kBlockM query rows of one (batch, query head); each warp owns
//     kRowsPerWarp = 16 of them, i.e. one m16n8k16 M tile, so the softmax statistics of a row
//     live in the 4 lanes of one quad and never cross warps;
//   - Q is loaded once to shared memory and from there to registers (ldmatrix), for the whole
//     key loop; K/V tiles of kBlockN keys stream through a kStages-deep cp.async ring;
//   - S = Q K^T and O += P V run on mma.sync m16n8k16 with float accumulators; P is rounded to
//     the input type in registers and fed straight back as the A operand (no shared memory).
//
// Per-thread registers (fragments): Q = kHeadDim/16 * 4, S = kBlockN/8 * 4, O = kHeadDim/8 * 4.
//   D=64,  kBlockN=64: Q 16 + S 32 + O 32 =  80 fragment registers.
//   D=128, kBlockN=32: Q 32 + S 16 + O 64 = 112 fragment registers (a 64-key tile would add 16
//   and push the kernel towards 255 registers / spills).
// Shared memory: Q tile + kStages * (K tile + V tile), kRows x kHeadDim 2-byte elements each
// (+1 KiB the hardware reserves per block). sm_80 has 164 KiB per SM, sm_90 228 KiB:
//   D=64,  2 stages: 8 KiB + 2 * 16 KiB = 40 KiB, under the 48 KiB default (no opt-in); room for
//                    4 blocks per SM on sm_80, 5 on sm_90.
//   D=128, 3 stages: 16 KiB + 3 * 16 KiB = 64 KiB, room for 2 blocks on sm_80, 3 on sm_90; the
//                    third stage hides load latency when few warps are resident. Needs the opt-in
//                    to more than 48 KiB of dynamic shared memory, which simt::launch sets.
// Registers (measured, see forward_kernel.cuh): D=64 146, D=128 168 per thread, ~19K / ~21K per
// block, so 3 blocks per SM by registers. Occupancy = min of the two: D=64 3 blocks (12 warps);
// D=128 2 blocks (8 warps) on sm_80, 3 on sm_90. Forcing more with __launch_bounds__ min-blocks
// (4 for D=64, 3 for D=128) made ptxas spill, so the kernel states only its block size.
// Measured counts (nvcc -Xptxas -v) are recorded in forward_kernel.cuh.
#pragma once
#include <cstdint>
#include <cstring>

#include "../simt/simt.h"

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

template <typename Element_, int kHeadDim_, int kBlockN_, int kStages_>
struct ForwardTraitsBase {
  using Element = Element_;
  using Ops = ElementOps<Element>;
  static_assert(sizeof(Element) == 2, "the tensor-core path takes 16-bit elements");

  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kNWarps = 4;
  static constexpr int kNThreads = kNWarps * kWarpSize;
  static constexpr int kRowsPerWarp = kMmaM;
  static constexpr int kBlockM = kNWarps * kRowsPerWarp;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  static_assert(kStages >= 2, "the cp.async ring needs a stage in flight and one in use");

  // Fragment counts per warp.
  static constexpr int kDSteps = kHeadDim / kMmaK;   // k-steps of S = Q K^T
  static constexpr int kNTiles = kBlockN / kMmaN;    // n-tiles of S (8 keys each)
  static constexpr int kKeySteps = kBlockN / kMmaK;  // k-steps of O += P V
  static constexpr int kDTiles = kHeadDim / kMmaN;   // n-tiles of O (8 dims each)
  static_assert(kBlockN % (2 * kMmaN) == 0 && kHeadDim % (2 * kMmaN) == 0,
                "ldmatrix.x4 loads n-tiles in pairs");

  // Shared-memory tiles are row-major with 16-byte chunks XOR-swizzled by (row % 8): the 8 rows
  // one ldmatrix reads then hit 8 different bank groups instead of one.
  static constexpr int kChunkElems = 16 / sizeof(Element);
  static constexpr int kChunksPerRow = kHeadDim / kChunkElems;
  static constexpr int kSwizzleRows = 8;
  static_assert(kChunksPerRow >= kSwizzleRows, "the swizzle needs 8 chunks per row");

  static constexpr int kSmemQElems = kBlockM * kHeadDim;
  static constexpr int kSmemKVElems = kBlockN * kHeadDim;  // one K (or V) stage
  static constexpr size_t kSmemQBytes = kSmemQElems * sizeof(Element);
  static constexpr size_t kSmemKVBytes = 2 * kStages * kSmemKVElems * sizeof(Element);
  static constexpr size_t kSmemBytes = kSmemQBytes + kSmemKVBytes;

  static __device__ __forceinline__ int smem_offset(int row, int col) {
    const int chunk = (col / kChunkElems) ^ (row % kSwizzleRows);
    return row * kHeadDim + chunk * kChunkElems + col % kChunkElems;
  }
};

template <typename Element, int kHeadDim>
struct ForwardTraits;

// Shapes per head dim; the reasoning is in the header comment.
template <typename Element>
struct ForwardTraits<Element, 64>
    : ForwardTraitsBase<Element, 64, /*kBlockN=*/64, /*kStages=*/2> {};

template <typename Element>
struct ForwardTraits<Element, 128>
    : ForwardTraitsBase<Element, 128, /*kBlockN=*/32, /*kStages=*/3> {};

}  // namespace swaa::cuda
