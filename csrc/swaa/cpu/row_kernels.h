// The decode row kernels (vec_math.h: row_scores, row_accumulate) built for one instruction set
// each: row_kernels.inc compiled by row_kernels_avx2.cpp and row_kernels_avx512.cpp. Only
// vec_math.cpp calls them, after checking cpu_isa() and the head dim (a multiple of the width).
#pragma once
#include <cstdint>

#include "element.h"

namespace swaa::cpu {
#define SWAA_DECLARE_ROW_KERNELS(isa)                                                          \
  namespace isa {                                                                              \
  template <typename S>                                                                        \
  void row_scores(const float* q, int64_t rows, const S* k, int64_t ldk, int64_t cols,         \
                  int64_t d, float* scores, int64_t lds);                                      \
  template <typename S>                                                                        \
  void row_accumulate(const float* p, int64_t ldp, int64_t rows, const S* v, int64_t ldv,      \
                      int64_t cols, int64_t d, float* acc);                                    \
  }
SWAA_DECLARE_ROW_KERNELS(avx2)
SWAA_DECLARE_ROW_KERNELS(avx512)
#undef SWAA_DECLARE_ROW_KERNELS
}  // namespace swaa::cpu
