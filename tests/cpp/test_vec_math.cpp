// The float row kernels of the CPU softmax (AVX-512, AVX2 or scalar: SWAA_CPU_ISA picks) against
// double-precision std::exp: relative error, exp(-inf) == 0 exactly, every tail length 0..19.
// The decode row kernels (row_scores, row_accumulate) against a double loop for float, bf16 and
// fp16 keys / values: head dims with and without a 64-column block and the scalar fallback
// (d % 8 != 0), key counts 0..9 (the four-key blocks and their tail), 1..3 rows. The output
// row store (scale_into) against from_compute, bit for bit.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "swaa/cpu/element.h"
#include "swaa/cpu/vec_math.h"

using namespace swaa::cpu;

static bool check(bool ok, const char* what, int n) {
  if (!ok) std::printf("FAIL %s (n=%d)\n", what, n);
  return ok;
}

// Element e of type S holding (approximately) x, and its exact value as a double.
template <typename S>
static double exact(S e) {
  return double(to_compute(e));
}

template <typename S>
static bool check_row_kernels(const char* name, double tol) {
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  bool ok = true;
  for (int d : {8, 16, 64, 72, 96, 128, 5}) {
    for (int cols = 0; cols < 10; ++cols) {
      for (int rows = 1; rows <= 3; ++rows) {
        const int ldk = d + 3, lds = 11;  // strided key rows and score rows
        std::vector<float> q(rows * d), p(rows * lds), acc(rows * d), scores(rows * lds, -1);
        std::vector<S> k(cols * ldk), v(cols * ldk);
        for (auto& x : q) x = normal(gen);
        for (auto& x : k) x = from_compute<S>(normal(gen));
        for (auto& x : v) x = from_compute<S>(normal(gen));
        for (auto& x : p) x = std::fabs(normal(gen));
        for (auto& x : acc) x = normal(gen);
        std::vector<float> acc0(acc);
        row_scores(q.data(), rows, k.data(), ldk, cols, d, scores.data(), lds);
        row_accumulate(p.data(), lds, rows, v.data(), ldk, cols, d, acc.data());
        for (int r = 0; r < rows; ++r) {
          for (int c = 0; c < cols; ++c) {
            double ref = 0, mag = 0;
            for (int i = 0; i < d; ++i) {
              ref += double(q[r * d + i]) * exact(k[c * ldk + i]);
              mag += std::fabs(double(q[r * d + i]) * exact(k[c * ldk + i]));
            }
            ok &= check(std::fabs(scores[r * lds + c] - ref) <= tol * 8 * mag + 1e-30, name, d);
          }
          for (int c = cols; c < lds; ++c) ok &= check(scores[r * lds + c] == -1, name, d);
          for (int i = 0; i < d; ++i) {
            double ref = acc0[r * d + i], mag = std::fabs(ref);
            for (int c = 0; c < cols; ++c) {
              ref += double(p[r * lds + c]) * exact(v[c * ldk + i]);
              mag += std::fabs(double(p[r * lds + c]) * exact(v[c * ldk + i]));
            }
            ok &= check(std::fabs(acc[r * d + i] - ref) <= tol * 8 * mag + 1e-30, name, d);
          }
        }
      }
    }
  }
  return ok;
}

// scale_into (an output row) gives from_compute's bits for a * x: rounding ties either way,
// NaN, infinities, values past the format's range; every length 0..40 (vectors and tails).
template <typename S>
static bool check_scale_into(const char* name) {
  std::mt19937 gen(2);
  std::normal_distribution<float> normal;
  bool ok = true;
  for (int n = 0; n <= 40; ++n) {
    std::vector<float> x(n);
    for (int i = 0; i < n; ++i) {
      float v = normal(gen) * (i % 7 == 0 ? 1e5f : 1.0f);
      uint32_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      if (i % 5 == 1) bits = (bits & 0xffff0000u) | 0x8000u;  // a tie for bf16
      if (i % 5 == 2) bits = (bits & 0xfffe0000u) | 0x18000u;  // a tie, odd upper half
      std::memcpy(&v, &bits, sizeof v);
      if (i == 3) v = std::numeric_limits<float>::quiet_NaN();
      if (i == 4) v = -std::numeric_limits<float>::infinity();
      if (i == 6) v = 7e4f;  // past fp16's range: inf
      x[i] = v;
    }
    std::vector<S> out(n + 1), expected(n + 1);
    out[n] = expected[n] = from_compute<S>(123.0f);  // (one past the row: untouched)
    scale_into(x.data(), 0.5f, n, out.data());
    for (int i = 0; i < n; ++i) expected[i] = from_compute<S>(0.5f * x[i]);
    ok &= check(std::memcmp(out.data(), expected.data(), (n + 1) * sizeof(S)) == 0, name, n);
  }
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
  ok &= check_row_kernels<float>("float", 1e-6);
  ok &= check_row_kernels<bf16>("bf16", 1e-6);  // inputs are exact in bf16: only rounding of sums
  ok &= check_row_kernels<fp16>("fp16", 1e-6);
  ok &= check_scale_into<float>("scale_into float");
  ok &= check_scale_into<bf16>("scale_into bf16");
  ok &= check_scale_into<fp16>("scale_into fp16");
  const char* isa[] = {"scalar", "avx2", "avx512", "amx"};
  std::printf("vec_math (%s) %s\n", isa[int(cpu_isa())], ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
