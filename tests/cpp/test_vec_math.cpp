// The float row kernels of the CPU softmax (AVX2 path on this machine, scalar elsewhere) against
// double-precision std::exp: relative error, exp(-inf) == 0 exactly, every tail length 0..19.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "swaa/cpu/vec_math.h"

using namespace swaa::cpu;

static bool check(bool ok, const char* what, int n) {
  if (!ok) std::printf("FAIL %s (n=%d)\n", what, n);
  return ok;
}

int main() {
  std::mt19937 gen(0);
  std::uniform_real_distribution<float> dist(-90.0f, 0.0f);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  bool ok = true;
  for (int n = 0; n < 20; ++n) {
    std::vector<float> x(n), original(n), dp(n);
    for (int i = 0; i < n; ++i) original[i] = x[i] = (i % 5 == 3) ? neg_inf : dist(gen);
    const float shift = n ? -0.5f : 0.0f;
    double max_ref = -INFINITY, sum_ref = 0;
    for (float v : original) max_ref = std::fmax(max_ref, v);
    ok &= check(n == 0 || row_max(x.data(), n) == float(max_ref), "row_max", n);
    const float sum = exp_shifted_sum(x.data(), n, shift);
    for (int i = 0; i < n; ++i) {
      const double ref = std::exp(double(original[i]) - shift);
      sum_ref += ref;
      if (original[i] == neg_inf) {
        ok &= check(x[i] == 0.0f, "exp(-inf) == 0", n);
      } else if (ref > 1.2e-38) {  // normal results: a few ulp
        ok &= check(std::fabs(x[i] - ref) <= 4e-7 * ref, "exp relative error", n);
      } else {
        ok &= check(x[i] <= 1.2e-38f, "exp underflow", n);
      }
    }
    ok &= check(std::fabs(sum - sum_ref) <= 1e-6 * std::fmax(sum_ref, 1e-30), "sum", n);
    std::vector<float> y(x);
    exp_shifted(y.data(), n, 0.0f);  // exp of values in [0, 1]: no sum variant
    for (int i = 0; i < n; ++i) {
      ok &= check(std::fabs(y[i] - std::exp(double(x[i]))) <= 4e-7 * std::exp(double(x[i])),
                  "exp_shifted", n);
    }
    for (int i = 0; i < n; ++i) dp[i] = float(i) - 3.0f;
    softmax_grad_row(x.data(), dp.data(), n, 0.25f);
    for (int i = 0; i < n; ++i) {
      ok &= check(dp[i] == x[i] * ((float(i) - 3.0f) - 0.25f), "softmax_grad_row", n);
    }
    const std::vector<float> before(y);
    scale_row(y.data(), n, 0.5f);
    for (int i = 0; i < n; ++i) ok &= check(y[i] == 0.5f * before[i], "scale_row", n);
  }
  std::printf(ok ? "vec_math ok\n" : "vec_math FAILED\n");
  return ok ? 0 : 1;
}
