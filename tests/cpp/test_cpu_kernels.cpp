// The CPU kernels against a naive double-precision loop, without Python or torch: forward
// output and LSE, and the backward's dQ/dK/dV, on ragged GQA shapes with sinks and full_from.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "naive_attention.h"
#include "swaa/cpu/kernels.h"

using namespace swaa;
using swaa::testing::max_abs_diff;
using swaa::testing::naive;
using swaa::testing::Problem;

static bool run(const Problem& pr) {
  std::mt19937 gen(42);
  std::normal_distribution<double> normal;
  auto randn = [&](int64_t n) {
    std::vector<double> x(n);
    for (auto& e : x) e = normal(gen);
    return x;
  };
  const int64_t nq = pr.b * pr.hq * pr.lq * pr.d, nk = pr.b * pr.hkv * pr.lk * pr.d;
  const std::vector<double> q = randn(nq), k = randn(nk), v = randn(nk), d_o = randn(nq);
  std::vector<double> o(nq), lse(pr.b * pr.hq * pr.lq), dq(nq, 0), dk(nk, 0), dv(nk, 0);
  naive(pr, q, k, v, d_o, o, lse, dq, dk, dv);

  std::vector<int64_t> full_from(pr.b, pr.full_from);
  AttentionBackwardParams p{};
  std::vector<double> o2(nq), lse2(lse.size()), dq2(nq), dk2(nk), dv2(nk), delta(lse.size());
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.o = o2.data(), p.lse = lse2.data();
  p.q_row_stride = p.k_row_stride = p.v_row_stride = p.o_row_stride = p.do_row_stride = pr.d;
  p.q_head_stride = p.o_head_stride = p.do_head_stride = pr.lq * pr.d;
  p.k_head_stride = p.v_head_stride = pr.lk * pr.d;
  p.q_batch_stride = p.o_batch_stride = p.do_batch_stride = pr.hq * pr.lq * pr.d;
  p.k_batch_stride = p.v_batch_stride = pr.hkv * pr.lk * pr.d;
  p.lse_batch_stride = pr.hq * pr.lq, p.lse_head_stride = pr.lq;
  p.dq_row_stride = p.dk_row_stride = p.dv_row_stride = pr.d;
  p.dq_head_stride = pr.lq * pr.d, p.dq_batch_stride = pr.hq * pr.lq * pr.d;
  p.dk_head_stride = p.dv_head_stride = pr.lk * pr.d;
  p.dk_batch_stride = p.dv_batch_stride = pr.hkv * pr.lk * pr.d;
  p.batch = pr.b, p.heads_q = pr.hq, p.heads_kv = pr.hkv, p.len_q = pr.lq, p.len_k = pr.lk;
  p.head_dim = pr.d, p.window = pr.window, p.sinks = pr.sinks, p.full_from = full_from.data();
  p.scale = 1.0 / std::sqrt(double(pr.d));
  cpu::forward<double>(p);
  for (size_t r = 0; r < delta.size(); ++r) {
    delta[r] = 0;
    for (int64_t x = 0; x < pr.d; ++x) delta[r] += o2[r * pr.d + x] * d_o[r * pr.d + x];
  }
  p.d_o = d_o.data(), p.delta = delta.data(), p.dq = dq2.data(), p.dk = dk2.data(),
  p.dv = dv2.data();
  cpu::backward<double>(p);
  const double errs[] = {max_abs_diff(o, o2), max_abs_diff(lse, lse2), max_abs_diff(dq, dq2),
                         max_abs_diff(dk, dk2), max_abs_diff(dv, dv2)};
  bool ok = true;
  for (double e : errs) ok &= e < 1e-9;
  std::printf("%s lq=%lld lk=%lld hq=%lld hkv=%lld w=%lld s=%lld ff=%lld: o %.1e lse %.1e dq %.1e "
              "dk %.1e dv %.1e\n", ok ? "ok  " : "FAIL", (long long)pr.lq, (long long)pr.lk,
              (long long)pr.hq, (long long)pr.hkv, (long long)pr.window, (long long)pr.sinks,
              (long long)pr.full_from, errs[0], errs[1], errs[2], errs[3], errs[4]);
  return ok;
}

int main() {
  const Problem problems[] = {
      {2, 4, 2, 130, 130, 16, 17, 5, 130},   // ragged window + sinks
      {1, 2, 1, 1, 300, 8, 40, 3, 300},      // decode row
      {1, 8, 1, 70, 200, 8, 200, 0, 200},    // MQA, full causal, Lq < Lk
      {2, 2, 2, 150, 150, 8, 20, 70, 120},   // sinks past the window, full_from inside
      {1, 1, 1, 65, 65, 4, 1, 0, 65},        // window 1
  };
  int failed = 0;
  for (const Problem& pr : problems) failed += !run(pr);
  std::printf("%d passed, %d failed\n", int(std::size(problems)) - failed, failed);
  return failed == 0 ? 0 : 1;
}
