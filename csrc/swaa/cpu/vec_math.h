// Row kernels of the online softmax, vectorised: AVX2 + FMA when the CPU has them (chosen at run
// time, so the library builds without -mavx2), a scalar loop otherwise and for double.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "element.h"

namespace swaa::cpu {

// Instruction sets the kernels are built for, in order. kAmx: AVX-512 plus the AMX-BF16 tile
// products for bf16 K/V (amx_tiles.h), when the OS grants this process the tile registers.
enum class Isa { kScalar, kAvx2, kAvx512, kAmx };
// The one the kernels use: the best this CPU has, or less when SWAA_CPU_ISA says so (scalar,
// avx2, avx512), read once per process (the tests run each path).
Isa cpu_isa();

// float: defined in vec_math.cpp (runtime dispatch).
float row_max(const float* x, int64_t n);
// x <- exp(x - shift) in place (exactly 0 for x = -inf); returns the sum of the new x.
float exp_shifted_sum(float* x, int64_t n, float shift);
// x <- exp(x - shift) in place, no sum (the backward's probabilities).
void exp_shifted(float* x, int64_t n, float shift);
// y <- a * y
void scale_row(float* y, int64_t n, float a);
// dp <- p * (dp - delta): the softmax backward's dS for one row.
void softmax_grad_row(const float* p, float* dp, int64_t n, float delta);
// y <- y + a * x
void axpy(float* y, float a, const float* x, int64_t n);
// out <- a * x in the element type S (float, bf16, fp16; rounded to nearest even, as
// from_compute): an output row.
template <typename S>
void scale_into(const float* x, float a, int64_t n, S* out);

// The two products of a tile with only a few query rows (decode), reading the key / value rows
// in their own element type S (float, bf16, fp16: converted in registers, never into a buffer).
// scores[r * lds + c] <- q[r] . k[c], for rows r < rows of q (row stride d) and c < cols of k
// (row stride ldk).
template <typename S>
void row_scores(const float* q, int64_t rows, const S* k, int64_t ldk, int64_t cols, int64_t d,
                float* scores, int64_t lds);
// acc[r] <- acc[r] + sum_c p[r * ldp + c] v[c], for r < rows of acc (row stride d).
template <typename S>
void row_accumulate(const float* p, int64_t ldp, int64_t rows, const S* v, int64_t ldv,
                    int64_t cols, int64_t d, float* acc);

// double: the scalar definitions (float64 is the precise path, not the fast one).
inline double row_max(const double* x, int64_t n) {
  return *std::max_element(x, x + n);
}
inline double exp_shifted_sum(double* x, int64_t n, double shift) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - shift));
  return sum;
}
inline void exp_shifted(double* x, int64_t n, double shift) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i] - shift);
}
inline void scale_row(double* y, int64_t n, double a) {
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}
inline void softmax_grad_row(const double* p, double* dp, int64_t n, double delta) {
  for (int64_t i = 0; i < n; ++i) dp[i] = p[i] * (dp[i] - delta);
}
inline void axpy(double* y, double a, const double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}
inline void scale_into(const double* x, double a, int64_t n, double* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a * x[i];
}
inline void row_scores(const double* q, int64_t rows, const double* k, int64_t ldk, int64_t cols,
                       int64_t d, double* scores, int64_t lds) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double sum = 0;
      for (int64_t i = 0; i < d; ++i) sum += q[r * d + i] * k[c * ldk + i];
      scores[r * lds + c] = sum;
    }
  }
}
inline void row_accumulate(const double* p, int64_t ldp, int64_t rows, const double* v,
                           int64_t ldv, int64_t cols, int64_t d, double* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) axpy(acc + r * d, p[r * ldp + c], v + c * ldv, d);
  }
}

}  // namespace swaa::cpu
