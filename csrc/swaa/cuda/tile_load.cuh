// Tile library, part 1 of 3: global -> shared memory. The cp.async tile loader, the K/V source the
// forward, dQ and decode kernels stream, and the one ring pipeline all four kernels stream their
// tiles through. Same source on the GPU (nvcc) and on the CPU through the SIMT emulator.
#pragma once
#include <cstdint>
#include <type_traits>

#include "../params.h"
#include "../sequence.h"
#include "kernel_traits.h"

namespace swaa::cuda {

// Asynchronous copies of kRows-row tiles of one (len, kHeadDim) matrix into swizzled shared
// tiles; rows at or past `len` are zero-filled (cp.async reads no byte of them). Each thread
// copies the same 16-byte column of rows r, r + kRowStep, ...: a compile-time trip count, and
// since kRowStep is a multiple of the swizzle period its shared offsets differ by a constant.
// Per copy: one 32 x 32 -> 64-bit multiply-add (row index times the row stride in bytes, onto
// the thread's column), a 32-bit compare and the copy. (Holding the thread's offsets across a
// loop instead costs registers that ptxas then buys back by spilling, in the forward, or
// recomputing.)
template <typename Traits, int kRows>
struct TileCopy {
  using Element = typename Traits::Element;
  static constexpr int kPerThread = kRows * Traits::kChunksPerRow / Traits::kNThreads;
  static constexpr int kRowStep = Traits::kNThreads / Traits::kChunksPerRow;
  static_assert(kRows * Traits::kChunksPerRow % Traits::kNThreads == 0 &&
                    Traits::kNThreads % Traits::kChunksPerRow == 0,
                "every thread copies whole chunks of the same column");
  static_assert(kPerThread == 1 || kRowStep % Traits::kSwizzleRows == 0,
                "a thread's rows must share one swizzle");

  const Element* gmem;  // row 0
  int row_bytes;        // row stride in bytes: below 2^31 (the torch boundary checks)
  int len;              // lengths are below 2^31

  __device__ __forceinline__ TileCopy(const Element* gmem_, int64_t row_stride_, int64_t len_)
      : gmem(gmem_), row_bytes(int(row_stride_ * int64_t(sizeof(Element)))), len(int(len_)) {}

  // Rows [row0, row0 + kRows) into `smem`. A row past `len` is copied with src-size 0: its
  // address is formed but never read. Each address is one 32 x 32 -> 64-bit multiply-add.
  __device__ __forceinline__ void load(Element* smem, int64_t row0) const {
    const int row = threadIdx.x / Traits::kChunksPerRow;
    const int col = (threadIdx.x % Traits::kChunksPerRow) * Traits::kChunkElems;
    const int first = int(row0) + row;
    const char* from = reinterpret_cast<const char*>(gmem + col) + int64_t(first) * row_bytes;
    Element* to = smem + Traits::smem_offset(row, col);
    const int rows_left = len - first;  // this thread's i-th row is in range iff
    for (int i = 0; i < kPerThread; ++i)  // i * kRowStep < rows_left
      simt::cp_async_16(to + i * kRowStep * Traits::kHeadDim,
                        from + int64_t(i * kRowStep) * row_bytes, i * kRowStep < rows_left);
  }
};

// One tile, once.
template <typename Traits, int kRows>
__device__ __forceinline__ void load_tile_async(typename Traits::Element* smem,
                                                const typename Traits::Element* gmem,
                                                int64_t row_stride, int64_t row0, int64_t len) {
  TileCopy<Traits, kRows>(gmem, row_stride, len).load(smem, row0);
}

// The keys and values a block streams: one KV head of one sequence (GQA: never repeated).
template <typename Traits, int kRows>
struct KVSource {
  using Element = typename Traits::Element;
  TileCopy<Traits, kRows> k, v;

  // K and V rows [n0, n0 + kRows) into the K and V tiles of one ring stage.
  __device__ __forceinline__ void load(Element* smem_k, Element* smem_v, int64_t n0) const {
    k.load(smem_k, n0);
    v.load(smem_v, n0);
  }
  __device__ __forceinline__ int64_t len_k() const { return k.len; }
};

// The same from a paged cache (params.h): key n of the sequence is row n % page_size of page
// pages[n / page_size]. Each thread looks its rows' pages up once per tile for K and V together.
// Rows past `len`, and rows of the gap [gap_begin, gap_end) between the sinks and the window
// that no query of the sequence sees, read no table entry and no cache byte (src-size 0: zeros):
// their pages may hold anything, NaN included (a freed page, vLLM's null block), and a zero row
// adds 0 to P.V where the masked probability is 0. A template variant of the kernels
// (kv_source's kPaged), so the packed kernels' loops do not carry the lookups.
template <typename Traits, int kRows>
struct PagedKVSource {
  using Element = typename Traits::Element;
  using Copy = TileCopy<Traits, kRows>;  // its thread-to-chunk mapping

  // The caches, strides (V shares K's: the boundary checks), page size and block table are read
  // where the kernel's parameters live (constant memory) at each tile rather than held in
  // registers through the loop: the forward kernel has none to spare.
  const AttentionParams* p;
  int b, h_kv;  // sequence (its block-table row) and KV head
  int len;
  int gap_begin, gap_end;  // keys no query sees (gap_begin == gap_end: none)

  __device__ __forceinline__ void load(Element* smem_k, Element* smem_v, int64_t n0) const {
    const int row = threadIdx.x / Traits::kChunksPerRow;
    const int col = (threadIdx.x % Traits::kChunksPerRow) * Traits::kChunkElems;
    const int smem = Traits::smem_offset(row, col);
    const int rows_left = len - int(n0) - row;
    const int page_size = int(p->page_size);
    const int32_t* pages = block_table_row(*p, b);
    const Element* k = static_cast<const Element*>(p->k) + h_kv * p->k_head_stride + col;
    const Element* v = static_cast<const Element*>(p->v) + h_kv * p->k_head_stride + col;
    // Key n = n0 + row + i kRowStep sits at row in_page of table entry `entry`: one division per
    // tile, then steps of kRowStep (one wrap at most for pages of kRowStep keys or more).
    int n = int(n0) + row;
    int entry = n / page_size, in_page = n - entry * page_size;
    SWAA_NO_UNROLL for (int i = 0; i < Copy::kPerThread; ++i) {
      if (i > 0) {
        n += Copy::kRowStep, in_page += Copy::kRowStep;
        while (in_page >= page_size) in_page -= page_size, ++entry;
      }
      const bool in_range = i * Copy::kRowStep < rows_left &&
                            unsigned(n - gap_begin) >= unsigned(gap_end - gap_begin);
      // Pages and rows are non-negative and below 2^31: unsigned 32-bit products, one wide.
      const uint32_t page = in_range ? uint32_t(pages[entry]) : 0u;
      const uint64_t offset = uint64_t(page) * uint64_t(p->k_batch_stride) +
                              uint32_t(in_page) * uint32_t(p->k_row_stride);
      const int to = smem + i * Copy::kRowStep * Traits::kHeadDim;
      simt::cp_async_16(smem_k + to, k + offset, in_range);
      simt::cp_async_16(smem_v + to, v + offset, in_range);
    }
  }
  __device__ __forceinline__ int64_t len_k() const { return len; }
};

template <typename Traits, int kRows, bool kPaged>
using KVSourceOf =
    std::conditional_t<kPaged, PagedKVSource<Traits, kRows>, KVSource<Traits, kRows>>;

// The K/V source of one (sequence, KV head): packed rows, or (kPaged) pages through the block
// table, whose presence the launcher checked (params.block_table != nullptr).
template <typename Traits, int kRows, bool kPaged = false>
__device__ __forceinline__ KVSourceOf<Traits, kRows, kPaged> kv_source(const AttentionParams& p,
                                                                      const Sequence& seq,
                                                                      int64_t h_kv) {
  using Element = typename Traits::Element;
  if constexpr (kPaged) {
    const TwoRanges seen = key_ranges(seq.rule, 0, max64(seq.len_q, 1));
    const int64_t gap_begin = seen.second.empty() ? seq.len_k : seen.first.end;
    const int64_t gap_end = seen.second.empty() ? seq.len_k : seen.second.begin;
    return {&p, int(seq.b), int(h_kv), int(seq.len_k), int(gap_begin),
            int(max64(gap_end, gap_begin))};
  } else {
    const auto* k = static_cast<const Element*>(p.k) + seq.k_offset(p, h_kv);
    const auto* v = static_cast<const Element*>(p.v) + seq.v_offset(p, h_kv);
    return {{k, p.k_row_stride, seq.len_k}, {v, p.v_row_stride, seq.len_k}};
  }
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
    if constexpr (kStages == 2) {  // the compiler cannot know the stages are 0 and 1
      stage ^= 1;
      refill ^= 1;
    } else {
      stage = stage + 1 == kStages ? 0 : stage + 1;
      refill = refill + 1 == kStages ? 0 : refill + 1;
    }
  }
};

}  // namespace swaa::cuda
