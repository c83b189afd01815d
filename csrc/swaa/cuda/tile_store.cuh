// Tile library, part 3 of 3: registers -> global memory. Every kernel's output (O, dK, dV, dQ,
// decode's per-split partial results) leaves through store_row. Same source on the GPU (nvcc) and
// on the CPU through the SIMT emulator.
#pragma once
#include <cstdint>
#include <type_traits>

#include "tile_math.cuh"

namespace swaa::cuda {

// Row half h of this lane's (16, kHeadDim) accumulator, times `scale`, into `row` (kHeadDim
// values): pairs packed into one 32-bit store of Element, or two float stores (decode's partial
// results, merged in float).
template <typename Traits, typename Out>
__device__ __forceinline__ void store_row(Out* row, const float (&acc)[Traits::kDTiles][4], int h,
                                          float scale, int lane) {
  for (int dt = 0; dt < Traits::kDTiles; ++dt) {
    const int col = dt * kMmaN + Accumulator::pair_col(lane);
    const float lo = acc[dt][2 * h] * scale, hi = acc[dt][2 * h + 1] * scale;
    if constexpr (std::is_same_v<Out, float>) {
      simt::st_global(row + col, lo);
      simt::st_global(row + col + 1, hi);
    } else {
      static_assert(std::is_same_v<Out, typename Traits::Element>);
      simt::st_global(reinterpret_cast<uint32_t*>(row + col), Traits::Ops::pack2(lo, hi));
    }
  }
}

// Rows row0 + [0, 16) of a (16, kHeadDim) accumulator, times `scale`, into a row-major output;
// rows at or past n_rows are not written.
template <typename Traits>
__device__ __forceinline__ void store_rows(typename Traits::Element* out, int64_t row_stride,
                                           const float (&acc)[Traits::kDTiles][4], float scale,
                                           int64_t row0, int64_t n_rows, int lane) {
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row0 + Accumulator::half_row(lane, h);
    if (row < n_rows) store_row<Traits>(out + row * row_stride, acc, h, scale, lane);
  }
}

}  // namespace swaa::cuda
