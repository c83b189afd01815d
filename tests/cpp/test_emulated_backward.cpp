// The CUDA backward kernels' own source in SIMT host mode, against the naive double loop, under
// every emulator mode: the emulated forward gives out and LSE, delta = rowsum(dO * out), the
// backward gives dQ, dK, dV. Gradient buffers start as NaN, so an element no thread writes fails;
// dK/dV of keys no query sees must be exactly zero; two random schedules must agree bit for bit. Built plainly (ctest) and with ASan + UBSan
// (`make ctest-asan`).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <random>
#include <vector>

#include "swaa/cuda/backward_switch.h"  // first: the SIMT layer precedes every CUDA header
#include "swaa/cuda/emulated_instantiations.h"
#include "naive_attention.h"

using namespace swaa;
using swaa::testing::Problem;

template <typename Element>
static std::vector<Element> to_elements(const std::vector<double>& x) {
  std::vector<Element> e(x.size());
  for (size_t i = 0; i < x.size(); ++i) e[i] = Element(float(x[i]));
  return e;
}

// max |kernel - reference| / max(1, max |reference|); `bad` counts elements the kernel left
// unwritten (NaN) and, where `unseen` is given, elements of rows nobody sees that are not 0.
template <typename Element>
static double relative_error(const std::vector<Element>& got, const std::vector<double>& ref,
                             int64_t d, const std::vector<bool>* unseen, int& bad) {
  double err = 0, scale = 1;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = float(got[i]);
    if (!std::isfinite(g) || (unseen && (*unseen)[i / d] && g != 0.0)) ++bad;
    err = std::fmax(err, std::fabs(g - ref[i]));
    scale = std::fmax(scale, std::fabs(ref[i]));
  }
  return err / scale;
}

// Per (batch, KV head, key): true when no query row sees the key (every batch row shares
// full_from here).
static std::vector<bool> unseen_keys(const Problem& pr) {
  const MaskRule rule{pr.window, pr.sinks, pr.full_from, pr.lk - pr.lq};
  std::vector<bool> unseen(pr.b * pr.hkv * pr.lk, true);
  for (int64_t j = 0; j < pr.lk; ++j) {
    bool seen = false;
    for (int64_t i = 0; i < pr.lq; ++i) seen = seen || rule.visible(i, j);
    for (int64_t bh = 0; bh < pr.b * pr.hkv; ++bh) unseen[bh * pr.lk + j] = !seen;
  }
  return unseen;
}

// Runs one problem under `mode` (seeded); appends dQ, dK, dV to `grads` when given.
template <typename Element>
static bool run(const Problem& pr, cuda::Dtype dtype, double tol, simt::Mode mode,
                uint64_t seed = 11, std::vector<float>* grads = nullptr) {
  std::mt19937 gen(7);
  std::normal_distribution<double> normal;
  auto randn = [&](int64_t n) {
    std::vector<double> x(n);
    for (auto& e : x) e = double(float(Element(float(normal(gen)))));
    return x;
  };
  const int64_t nq = pr.b * pr.hq * pr.lq * pr.d, nk = pr.b * pr.hkv * pr.lk * pr.d;
  const int64_t rows = pr.b * pr.hq * pr.lq;
  const std::vector<double> q = randn(nq), k = randn(nk), v = randn(nk), d_o = randn(nq);
  std::vector<double> o(nq), lse(rows), dq(nq, 0), dk(nk, 0), dv(nk, 0);
  swaa::testing::naive(pr, q, k, v, d_o, o, lse, dq, dk, dv);

  const std::vector<Element> qe = to_elements<Element>(q), ke = to_elements<Element>(k),
                             ve = to_elements<Element>(v), doe = to_elements<Element>(d_o);
  const Element nan = Element(std::numeric_limits<float>::quiet_NaN());
  std::vector<Element> oe(nq), dqe(nq, nan), dke(nk, nan), dve(nk, nan);
  std::vector<float> lse_e(rows), delta(rows);
  std::vector<int64_t> full_from(pr.b, pr.full_from);

  AttentionBackwardParams p{};
  p.q = qe.data(), p.k = ke.data(), p.v = ve.data(), p.o = oe.data(), p.lse = lse_e.data();
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
  p.d_o = doe.data(), p.delta = delta.data();
  p.dq = dqe.data(), p.dk = dke.data(), p.dv = dve.data();

  simt::set_mode(mode, seed);
  const cudaError_t fwd = cuda::forward(p, dtype, cudaStream_t{});
  // delta = rowsum(dO * O) from the kernel's own (rounded) output, as the torch boundary does.
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (int64_t x = 0; x < pr.d; ++x) acc += float(doe[r * pr.d + x]) * float(oe[r * pr.d + x]);
    delta[r] = float(acc);
  }
  const cudaError_t bwd = cuda::backward(p, dtype, cudaStream_t{});
  int bad = 0;
  const std::vector<bool> unseen = unseen_keys(pr);
  const double err_q = relative_error(dqe, dq, pr.d, nullptr, bad),
               err_k = relative_error(dke, dk, pr.d, &unseen, bad),
               err_v = relative_error(dve, dv, pr.d, &unseen, bad);
  const bool ok = fwd == cudaSuccess && bwd == cudaSuccess && bad == 0 && err_q < tol &&
                  err_k < tol && err_v < tol;
  if (grads) {
    for (const auto* g : {&dqe, &dke, &dve})
      for (const Element& x : *g) grads->push_back(float(x));
  }
  std::printf("%s mode=%d D=%lld lq=%lld lk=%lld hq=%lld hkv=%lld w=%lld s=%lld ff=%lld: "
              "dq %.1e dk %.1e dv %.1e, %d unwritten or unseen but nonzero\n", ok ? "ok  " : "FAIL",
              int(mode), (long long)pr.d, (long long)pr.lq, (long long)pr.lk, (long long)pr.hq,
              (long long)pr.hkv, (long long)pr.window, (long long)pr.sinks,
              (long long)pr.full_from, err_q, err_k, err_v, bad);
  return ok;
}

int main() {
  // {b, hq, hkv, lq, lk, d, window (normalised: lk = full), sinks, full_from}
  const Problem problems[] = {
      {1, 2, 1, 65, 65, 64, 17, 5, 65},     // ragged, window inside one tile, GQA 2
      {1, 1, 1, 1, 300, 128, 20, 3, 300},   // decode row: keys 3..279 are seen by nobody
      {2, 2, 2, 70, 100, 64, 100, 0, 100},  // full causal, Lq < Lk
      {1, 4, 1, 40, 40, 128, 2, 9, 30},     // window 2, full_from inside, MQA
  };
  const simt::Mode modes[] = {simt::Mode::Default, simt::Mode::Random, simt::Mode::WarpSerial,
                              simt::Mode::RaceCheck};
  int passed = 0, failed = 0;
  auto count = [&](auto&& check) {
    bool ok = false;
    try {
      ok = check();
    } catch (const std::exception& e) {  // the emulator found a bug (race, deadlock, ...)
      std::printf("FAIL %s\n", e.what());
    }
    passed += ok;
    failed += !ok;
  };
  for (const simt::Mode mode : modes) {
    for (const Problem& pr : problems) {
      count([&] { return run<__half>(pr, cuda::Dtype::fp16, 1e-2, mode); });
      count([&] { return run<__nv_bfloat16>(pr, cuda::Dtype::bf16, 5e-2, mode); });
    }
  }
  // Deterministic: two random schedules give bitwise-equal gradients (no float atomics).
  for (const Problem& pr : problems) {
    count([&] {
      std::vector<float> a, b;
      const bool ok = run<__half>(pr, cuda::Dtype::fp16, 1e-2, simt::Mode::Random, 1, &a) &&
                      run<__half>(pr, cuda::Dtype::fp16, 1e-2, simt::Mode::Random, 2, &b);
      const bool same = std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
      std::printf("%s two random schedules give bitwise-equal gradients\n", same ? "ok  " : "FAIL");
      return ok && same;
    });
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
