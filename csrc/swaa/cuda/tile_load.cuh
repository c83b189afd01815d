// Tile library, part 1 of 3: global -> shared memory. The cp.async tile loader, the K/V source the
// forward, dQ and decode kernels stream, and the one ring pipeline all four kernels stream their
// tiles through. Same source on the GPU (nvcc) and on the CPU through the SIMT emulator.
#pragma once
#include <cstdint>

#include "../params.h"
#include "../sequence.h"
#include "kernel_traits.h"

namespace swaa::cuda {

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

// The keys and values a block streams: one KV head of one sequence (GQA: never repeated).
template <typename Traits>
struct KVSource {
  using Element = typename Traits::Element;
  const Element* k;  // row 0
  const Element* v;
  int64_t k_row_stride, v_row_stride;
  int64_t len_k;  // rows at or past it are zero-filled

  // K and V rows [n0, n0 + kRows) into the K and V tiles of one ring stage.
  template <int kRows>
  __device__ __forceinline__ void load(Element* smem_k, Element* smem_v, int64_t n0) const {
    load_tile_async<Traits, kRows>(smem_k, k, k_row_stride, n0, len_k);
    load_tile_async<Traits, kRows>(smem_v, v, v_row_stride, n0, len_k);
  }
};

template <typename Traits>
__device__ __forceinline__ KVSource<Traits> kv_source(const AttentionParams& p,
                                                      const Sequence& seq, int64_t h_kv) {
  using Element = typename Traits::Element;
  return {static_cast<const Element*>(p.k) + seq.k_offset(p, h_kv),
          static_cast<const Element*>(p.v) + seq.v_offset(p, h_kv), p.k_row_stride,
          p.v_row_stride, seq.len_k};
}

// The cp.async ring every kernel streams its tiles through: kStages shared-memory stages, one
// commit group per tile, tile t in stage t % kStages (kept as running counters: no remainder).
// The kernel first commits its own group, the tiles it keeps for the whole loop (Q, or K and V),
// then:
//   CopyRing<kStages> ring;
//   ring.start(n_tiles, load);              // tiles 0 .. kStages - 2 in flight
//   ring.wait_for_resident();               // only if the loop reads the kernel's own group
//   for (int t = 0; t < n_tiles; ++t) {
//     ring.next_tile(t, n_tiles, load);     // tile t has landed; tile t + kStages - 1 issued
//     ... read stage ring.stage ...
//     ring.advance();
//   }
// load(stage, t) issues tile t's copies into `stage` without committing. Every tile, in range or
// not, commits one group (empty past the end), so the waits below count the same for every
// block, and the last trips leave nothing in flight: a block exits with no copies pending.
template <int kStages>
struct CopyRing {
  static_assert(kStages >= 2, "the ring needs a stage in flight and one in use");
  int stage = 0;               // tile t's stage
  int refill = kStages - 1;    // the stage tile t + kStages - 1 goes to

  template <typename Load>
  __device__ __forceinline__ void start(int n_tiles, Load&& load) const {
    for (int t = 0; t < kStages - 1; ++t) {
      if (t < n_tiles) load(t, t);
      simt::cp_async_commit();
    }
  }
  // The group committed before start() has landed, for every thread of the block.
  __device__ __forceinline__ static void wait_for_resident() {
    simt::cp_async_wait<kStages - 1>();
    __syncthreads();
  }
  // Tile t has landed, and every warp is done with the stage tile t + kStages - 1 reuses (the one
  // tile t - 1 used), which is refilled here.
  template <typename Load>
  __device__ __forceinline__ void next_tile(int t, int n_tiles, Load&& load) const {
    simt::cp_async_wait<kStages - 2>();
    __syncthreads();
    if (t + kStages - 1 < n_tiles) load(refill, t + kStages - 1);
    simt::cp_async_commit();
  }
  __device__ __forceinline__ void advance() {
    stage = stage + 1 == kStages ? 0 : stage + 1;
    refill = refill + 1 == kStages ? 0 : refill + 1;
  }
};

}  // namespace swaa::cuda
