// The CUDA forward kernel's own source in SIMT host mode, against the naive double loop, under
// every emulator mode. Built plainly (ctest) and with ASan + UBSan (`make ctest-asan`), which
// catches out-of-bounds loads and stores that a wrong answer might not show.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "swaa/cuda/forward_switch.h"  // first: the SIMT layer precedes every CUDA header
#include "swaa/cuda/forward_launch.cuh"
#include "naive_attention.h"

namespace swaa::cuda {
#define SWAA_FORWARD_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  template cudaError_t run_forward<ELEMENT, HEAD_DIM>(const AttentionParams&, cudaStream_t);
#include "swaa/cuda/instantiations/forward_list.inc"
#undef SWAA_FORWARD_INSTANTIATION
}  // namespace swaa::cuda

using namespace swaa;
using swaa::testing::Problem;

template <typename Element>
static double rounded(double x) {
  return double(float(Element(float(x))));
}

// Runs one problem on the emulated kernel; returns the max error of output and LSE against the
// naive loop on the same rounded inputs, relative to the tolerance of the element type.
template <typename Element>
static bool run(const Problem& pr, cuda::Dtype dtype, double tol, simt::Mode mode) {
  std::mt19937 gen(7);
  std::normal_distribution<double> normal;
  auto randn = [&](int64_t n) {
    std::vector<double> x(n);
    for (auto& e : x) e = rounded<Element>(normal(gen));
    return x;
  };
  const int64_t nq = pr.b * pr.hq * pr.lq * pr.d, nk = pr.b * pr.hkv * pr.lk * pr.d;
  const std::vector<double> q = randn(nq), k = randn(nk), v = randn(nk), d_o(nq, 0.0);
  std::vector<double> o(nq), lse(pr.b * pr.hq * pr.lq), dq(nq, 0), dk(nk, 0), dv(nk, 0);
  swaa::testing::naive(pr, q, k, v, d_o, o, lse, dq, dk, dv);

  auto to_elements = [](const std::vector<double>& x) {
    std::vector<Element> e(x.size());
    for (size_t i = 0; i < x.size(); ++i) e[i] = Element(float(x[i]));
    return e;
  };
  const std::vector<Element> qe = to_elements(q), ke = to_elements(k), ve = to_elements(v);
  std::vector<Element> oe(nq);
  std::vector<float> lse_e(lse.size());
  std::vector<int64_t> full_from(pr.b, pr.full_from);

  AttentionParams p{};
  p.q = qe.data(), p.k = ke.data(), p.v = ve.data(), p.o = oe.data(), p.lse = lse_e.data();
  p.q_row_stride = p.k_row_stride = p.v_row_stride = p.o_row_stride = pr.d;
  p.q_head_stride = p.o_head_stride = pr.lq * pr.d;
  p.k_head_stride = p.v_head_stride = pr.lk * pr.d;
  p.q_batch_stride = p.o_batch_stride = pr.hq * pr.lq * pr.d;
  p.k_batch_stride = p.v_batch_stride = pr.hkv * pr.lk * pr.d;
  p.batch = pr.b, p.heads_q = pr.hq, p.heads_kv = pr.hkv, p.len_q = pr.lq, p.len_k = pr.lk;
  p.head_dim = pr.d, p.window = pr.window, p.sinks = pr.sinks, p.full_from = full_from.data();
  p.scale = 1.0 / std::sqrt(double(pr.d));

  simt::set_mode(mode, 11);
  const cudaError_t err = cuda::forward(p, dtype, cudaStream_t{});
  double err_o = 0, err_lse = 0;
  for (int64_t i = 0; i < nq; ++i) err_o = std::fmax(err_o, std::fabs(float(oe[i]) - o[i]));
  for (size_t i = 0; i < lse.size(); ++i) err_lse = std::fmax(err_lse, std::fabs(lse_e[i] - lse[i]));
  const bool ok = err == cudaSuccess && err_o < tol && err_lse < 1e-3;
  std::printf("%s mode=%d D=%lld lq=%lld lk=%lld hq=%lld hkv=%lld w=%lld s=%lld ff=%lld: "
              "out %.1e lse %.1e\n", ok ? "ok  " : "FAIL", int(mode), (long long)pr.d,
              (long long)pr.lq, (long long)pr.lk, (long long)pr.hq, (long long)pr.hkv,
              (long long)pr.window, (long long)pr.sinks, (long long)pr.full_from, err_o, err_lse);
  return ok;
}

int main() {
  // {b, hq, hkv, lq, lk, d, window (normalised: lk = full), sinks, full_from}
  const Problem problems[] = {
      {1, 2, 1, 65, 65, 64, 17, 5, 65},    // ragged, window inside one tile, GQA 2
      {1, 1, 1, 1, 150, 128, 40, 3, 150},  // decode row, sinks past the window start
      {2, 2, 2, 70, 100, 64, 100, 0, 100},  // full causal, Lq < Lk
      {1, 4, 1, 40, 40, 128, 2, 9, 30},    // window 2, full_from inside, MQA
  };
  const simt::Mode modes[] = {simt::Mode::Default, simt::Mode::Random, simt::Mode::WarpSerial,
                              simt::Mode::RaceCheck};
  int passed = 0, failed = 0;
  for (const simt::Mode mode : modes) {
    for (const Problem& pr : problems) {
      const bool a = run<__half>(pr, cuda::Dtype::fp16, 4e-3, mode);
      const bool b = run<__nv_bfloat16>(pr, cuda::Dtype::bf16, 3e-2, mode);
      passed += a + b;
      failed += !a + !b;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
