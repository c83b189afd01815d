// Row-major tile operations shared by the CPU forward and backward passes.
#pragma once
#include <cblas.h>  // OpenBLAS from the scipy-openblas32 wheel (symbols prefixed scipy_)

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../params.h"
#include "element.h"
#include "kernels.h"
#include "vec_math.h"

namespace swaa::cpu {

// The kernels parallelise over tiles themselves; each BLAS call must stay on its caller's thread.
inline void use_single_threaded_blas() {
  static const bool done = (scipy_openblas_set_num_threads(1), true);
  (void)done;
}

// Whether a problem is big enough to share among threads. Each parallel region wakes the other
// threads, which costs microseconds when they were just busy (a serving step: the model's own
// OpenMP matmuls run between attention calls) and can cost milliseconds on an idle or busy
// machine. A decode step of 4 requests over a 250-key window + 64 sinks (SmolLM2's 9 / 3 heads,
// 3 MFLOP) took 0.12 ms on one thread and 0.06 ms on two, and a whole vLLM decode step went from
// 63 to 53 ms (fp32, one run each of a one-off timing script), so the cut-off is 2 MFLOP (it was
// 16, and 32 before that, when decode ran a BLAS call per tile; the interleaved serving
// benchmark in docs/vllm.md measures the result).
inline bool worth_parallel(const AttentionParams& p) {
  constexpr double kMinParallelFlops = 2e6;
  int64_t keys = min64(p.len_k, p.window + p.sinks + kBlockM + kBlockN);  // per query row
  for (int64_t b = 0; b < p.batch; ++b) {
    // Rows past full_from see everything (nullptr: no row does).
    if (p.full_from != nullptr && p.full_from[b] < p.len_k) keys = p.len_k;
  }
  return 4.0 * double(p.batch * p.heads_q * p.len_q) * double(keys) * double(p.head_dim) >=
         kMinParallelFlops;
}

// Row-major tile products through BLAS; `ld*` are row strides in elements.
inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                 float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                 float beta, float* c, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                 double alpha, const double* a, int64_t lda, const double* b, int64_t ldb,
                 double beta, double* c, int64_t ldc) {
  scipy_cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// C[M][N] = alpha * A[M][K] . B[N][K]^T + beta * C
template <typename T>
inline void gemm_abt(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                     const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  gemm(CblasNoTrans, CblasTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// C[M][N] = alpha * A[M][K] . B[K][N] + beta * C
template <typename T>
inline void gemm_ab(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                    const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  gemm(CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// C[M][N] = alpha * A[K][M]^T . B[K][N] + beta * C
template <typename T>
inline void gemm_atb(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                     const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  gemm(CblasTrans, CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// s[r][c] <- -inf where query row m0 + r may not see key n0 + c: per row, the columns between
// its sinks and its window, and those past it.
template <typename T>
inline void apply_mask(const MaskRule& rule, int64_t m0, int64_t rows, int64_t n0, int64_t cols,
                       T* s, int64_t lds) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const auto column = [&](int64_t key) { return std::clamp<int64_t>(key - n0, 0, cols); };
  for (int64_t r = 0; r < rows; ++r) {
    const TwoRanges keys = rule.row_keys(m0 + r);
    T* row = s + r * lds;
    const int64_t gap_begin = column(keys.first.end), gap_end = column(keys.second.begin);
    if (gap_begin < gap_end) std::fill(row + gap_begin, row + gap_end, neg_inf);
    std::fill(row + column(keys.second.end), row + cols, neg_inf);
  }
}

// dst[r][d] <- alpha * src[r * ld_src + d]: gathers strided rows (of any element type) into a
// dense packed tile of the compute type.
template <typename T, typename S>
inline void pack_rows(int64_t rows, int64_t head_dim, T alpha, const S* src, int64_t ld_src,
                      T* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t d = 0; d < head_dim; ++d) {
      dst[r * head_dim + d] = alpha * T(to_compute(src[r * ld_src + d]));
    }
  }
}

// Asks the cache for `rows` rows of `head_dim` elements (row stride ld): a paged cache's next
// tile is in another page, where the hardware prefetcher has no stream to follow.
template <typename S>
inline void prefetch_rows(const S* rows, int64_t ld, int64_t count, int64_t head_dim) {
  constexpr int64_t kLine = 64;
  const int64_t row_bytes = head_dim * int64_t(sizeof(S));
  const char* first = reinterpret_cast<const char*>(rows);
  if (ld == head_dim) {  // the rows of a page are contiguous (vLLM's layout): one flat range
    for (int64_t b = 0; b < count * row_bytes; b += kLine) __builtin_prefetch(first + b);
    return;
  }
  for (int64_t r = 0; r < count; ++r) {
    for (int64_t b = 0; b < row_bytes; b += kLine) __builtin_prefetch(first + r * ld * sizeof(S) + b);
  }
}

// Below this many packed rows (decode: one query, or a few, times the query heads of a KV head)
// a tile's products are row kernels (vec_math.h) reading K/V in their own element type: a BLAS
// call per tile costs more than the arithmetic it does for so few rows.
constexpr int64_t kVectorRows = 16;

// Rows [0, cols) of a K or V tile as compute-type rows: in place when the elements are already
// the compute type, else converted into `buffer` (row stride D). Returns the rows and their
// stride.
template <typename T, typename S>
inline std::pair<const T*, int64_t> tile_rows(const S* rows, int64_t ld, int64_t cols,
                                              int64_t head_dim, std::vector<T>* buffer) {
  if constexpr (std::is_same_v<S, T>) {
    return {rows, ld};
  } else {
    pack_rows(cols, head_dim, T(1), rows, ld, buffer->data());
    return {buffer->data(), head_dim};
  }
}

// s[r][c] <- q[r] . k[c] for `rows` packed query rows and `cols` key rows (element type S).
// `buffer` (kBlockN * D) is needed when S is not the compute type and rows are many.
template <typename T, typename S>
inline void tile_scores(int64_t rows, int64_t cols, int64_t head_dim, const T* q, const S* k,
                        int64_t ldk, T* s, int64_t lds, std::vector<T>* buffer = nullptr) {
  if (rows < kVectorRows) {
    row_scores(q, rows, k, ldk, cols, head_dim, s, lds);
    return;
  }
  const auto [k_rows, ld] = tile_rows<T>(k, ldk, cols, head_dim, buffer);
  gemm_abt<T>(rows, cols, head_dim, T(1), q, head_dim, k_rows, ld, T(0), s, lds);
}

// acc[r] <- acc[r] + sum_c p[r][c] v[c]: the tile's probabilities times its value rows.
template <typename T, typename S>
inline void tile_accumulate(int64_t rows, int64_t cols, int64_t head_dim, const T* p,
                            int64_t ldp, const S* v, int64_t ldv, T* acc,
                            std::vector<T>* buffer = nullptr) {
  if (rows < kVectorRows) {
    row_accumulate(p, ldp, rows, v, ldv, cols, head_dim, acc);
    return;
  }
  const auto [v_rows, ld] = tile_rows<T>(v, ldv, cols, head_dim, buffer);
  gemm_ab<T>(rows, head_dim, cols, T(1), p, ldp, v_rows, ld, T(1), acc, head_dim);
}

// Masks the scores of one tile for the query rows of `group` heads packed head-major (packed row
// g * rows + r is query row m0 + r of head g) when the tile straddles an edge of the rule.
template <typename T>
inline void mask_packed(const MaskRule& rule, int64_t group, int64_t m0, int64_t rows, int64_t n0,
                        int64_t cols, T* s, int64_t lds) {
  if (!rule.tile_fully_visible(m0, m0 + rows, n0, n0 + cols)) {
    for (int64_t g = 0; g < group; ++g) apply_mask(rule, m0, rows, n0, cols, s + g * rows * lds, lds);
  }
}

// Scores of one tile for packed query rows: s <- q_packed . k^T, then -inf where not visible.
template <typename T>
inline void packed_scores(const MaskRule& rule, int64_t group, int64_t m0, int64_t rows,
                          int64_t n0, int64_t cols, int64_t head_dim, const T* q_packed,
                          const T* k, int64_t ldk, T* s, int64_t lds) {
  tile_scores<T>(group * rows, cols, head_dim, q_packed, k, ldk, s, lds);
  mask_packed(rule, group, m0, rows, n0, cols, s, lds);
}

}  // namespace swaa::cpu
