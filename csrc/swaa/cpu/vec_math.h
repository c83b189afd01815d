// Row kernels of the online softmax, vectorised: AVX2 + FMA when the CPU has them (chosen at run
// time, so the library builds without -mavx2), a scalar loop otherwise and for double.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace swaa::cpu {

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
// sum_i a[i] * b[i]: one score of a tile with only a few query rows (decode).
float dot(const float* a, const float* b, int64_t n);
// y <- y + a * x: one value row into an output row (decode).
void axpy(float* y, float a, const float* x, int64_t n);

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
inline double dot(const double* a, const double* b, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}
inline void axpy(double* y, double a, const double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace swaa::cpu
