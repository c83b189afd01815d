// A naive double-precision sink + window attention (forward and backward) over contiguous
// (B, H, L, D) buffers: the C++ tests' oracle. It calls mask.h's `visible` per (query, key) pair
// and nothing else of the kernels.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "swaa/mask.h"

namespace swaa::testing {

struct Problem {
  int64_t b, hq, hkv, lq, lk, d, window, sinks, full_from;
};

// The larger of a running error and a new difference, NaN counting as infinite (std::fmax
// drops a NaN, which would let an output of NaN pass).
inline double max_error(double err, double diff) {
  return std::isnan(diff) ? INFINITY : std::fmax(err, diff);
}

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(a[i] - b[i]));
  return m;
}

// Naive dense forward + backward for one problem (contiguous layouts).
inline void naive(const Problem& pr, const std::vector<double>& q, const std::vector<double>& k,
                  const std::vector<double>& v, const std::vector<double>& d_o,
                  std::vector<double>& o, std::vector<double>& lse, std::vector<double>& dq,
                  std::vector<double>& dk, std::vector<double>& dv) {
  const double scale = 1.0 / std::sqrt(double(pr.d));
  const MaskRule rule{pr.window, pr.sinks, pr.full_from, pr.lk - pr.lq};
  std::vector<double> p(pr.lk), dp(pr.lk);
  for (int64_t b = 0; b < pr.b; ++b)
    for (int64_t h = 0; h < pr.hq; ++h) {
      const int64_t hk = h / (pr.hq / pr.hkv);
      const double* Q = &q[(b * pr.hq + h) * pr.lq * pr.d];
      const double* K = &k[(b * pr.hkv + hk) * pr.lk * pr.d];
      const double* V = &v[(b * pr.hkv + hk) * pr.lk * pr.d];
      for (int64_t i = 0; i < pr.lq; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < pr.lk; ++j) {
          double s = 0;
          for (int64_t x = 0; x < pr.d; ++x) s += Q[i * pr.d + x] * K[j * pr.d + x];
          p[j] = rule.visible(i, j) ? s * scale : -INFINITY;
          mx = std::fmax(mx, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < pr.lk; ++j) sum += std::exp(p[j] - mx);
        const int64_t row = (b * pr.hq + h) * pr.lq + i;
        lse[row] = mx + std::log(sum);
        for (int64_t j = 0; j < pr.lk; ++j) p[j] = std::exp(p[j] - lse[row]);
        double delta = 0;
        for (int64_t x = 0; x < pr.d; ++x) {
          double acc = 0;
          for (int64_t j = 0; j < pr.lk; ++j) acc += p[j] * V[j * pr.d + x];
          o[row * pr.d + x] = acc;
          delta += acc * d_o[row * pr.d + x];
        }
        for (int64_t j = 0; j < pr.lk; ++j) {
          double g = 0;
          for (int64_t x = 0; x < pr.d; ++x) g += d_o[row * pr.d + x] * V[j * pr.d + x];
          const double ds = p[j] * (g - delta);
          for (int64_t x = 0; x < pr.d; ++x) {
            dq[row * pr.d + x] += scale * ds * K[j * pr.d + x];
            dk[((b * pr.hkv + hk) * pr.lk + j) * pr.d + x] += scale * ds * Q[i * pr.d + x];
            dv[((b * pr.hkv + hk) * pr.lk + j) * pr.d + x] += p[j] * d_o[row * pr.d + x];
          }
        }
      }
    }
}

}  // namespace swaa::testing
