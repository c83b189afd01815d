// The CUDA forward kernels' own source (the tile kernel and the split-KV decode kernel with its
// combine step), with K/V packed and paged, in SIMT host mode, against the naive double loop,
// under every emulator mode. Built plainly (ctest) and with ASan + UBSan (`make ctest-asan`), which
// catches out-of-bounds loads and stores that a wrong answer might not show.
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "swaa/cuda/forward_switch.h"  // first: the SIMT layer precedes every CUDA header
#include "swaa/cuda/emulated_instantiations.h"
#include "naive_attention.h"

using namespace swaa;
using swaa::testing::Problem;

template <typename Element>
static double rounded(double x) {
  return double(float(Element(float(x))));
}

// K and V of a dense problem moved into a paged cache (num_pages, Hkv, page_size, D): batch row
// b's pages in shuffled order, one NaN page between any two used ones, NaN rows past Lk and NaN
// in every key no query sees (the kernels may not read those: params.h), so a read of a row
// the rule or the table does not name shows as NaN; the block table is sized exactly, so ASan
// sees a read past it.
template <typename Element>
struct PagedCopy {
  std::vector<Element> k, v;
  std::vector<int32_t> table;
  int64_t pages_per_row, num_pages;
  PagedCopy(const Problem& pr, const std::vector<Element>& k_rows,
            const std::vector<Element>& v_rows, int64_t page_size, std::mt19937& gen) {
    pages_per_row = ceil_div(pr.lk, page_size);
    num_pages = 2 * pr.b * pages_per_row + 1;
    std::vector<int32_t> order(pr.b * pages_per_row);
    for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(2 * i + 1);  // odd pages
    std::shuffle(order.begin(), order.end(), gen);
    table = order;
    const int64_t page_elems = pr.hkv * page_size * pr.d;
    k.assign(num_pages * page_elems, Element(NAN));
    v.assign(num_pages * page_elems, Element(NAN));
    const MaskRule rule{pr.window, pr.sinks, pr.full_from, pr.lk - pr.lq};
    std::vector<bool> seen(pr.lk, false);
    for (int64_t i = 0; i < pr.lq; ++i)
      for (int64_t n = 0; n < pr.lk; ++n) seen[n] = seen[n] || rule.visible(i, n);
    for (int64_t b = 0; b < pr.b; ++b)
      for (int64_t h = 0; h < pr.hkv; ++h)
        for (int64_t n = 0; n < pr.lk; ++n)
          for (int64_t c = 0; c < pr.d && seen[n]; ++c) {
            const int64_t page = table[b * pages_per_row + n / page_size];
            const int64_t to = page * page_elems + (h * page_size + n % page_size) * pr.d + c;
            const int64_t from = ((b * pr.hkv + h) * pr.lk + n) * pr.d + c;
            k[to] = k_rows[from], v[to] = v_rows[from];
          }
  }
};

// Runs one problem on the emulated tile kernel (num_splits 0) or decode kernel with num_splits
// key splits, with K/V packed or (page_size > 0) read from a PagedCopy; returns the max error of
// output and LSE against the naive loop on the same rounded inputs, relative to the tolerance
// of the element type.
template <typename Element>
static bool run(const Problem& pr, cuda::Dtype dtype, double tol, simt::Mode mode,
                int64_t num_splits = 0, int64_t page_size = 0) {
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
  p.lse_batch_stride = pr.hq * pr.lq, p.lse_head_stride = pr.lq;
  p.batch = pr.b, p.heads_q = pr.hq, p.heads_kv = pr.hkv, p.len_q = pr.lq, p.len_k = pr.lk;
  p.head_dim = pr.d, p.window = pr.window, p.sinks = pr.sinks, p.full_from = full_from.data();
  p.scale = 1.0 / std::sqrt(double(pr.d));
  std::unique_ptr<PagedCopy<Element>> paged;
  if (page_size > 0) {
    paged = std::make_unique<PagedCopy<Element>>(pr, ke, ve, page_size, gen);
    p.k = paged->k.data(), p.v = paged->v.data();
    p.k_batch_stride = p.v_batch_stride = pr.hkv * page_size * pr.d;  // the page stride
    p.k_head_stride = p.v_head_stride = page_size * pr.d;
    p.block_table = paged->table.data();
    p.block_table_stride = paged->pages_per_row, p.page_size = page_size;
  }

  simt::set_mode(mode, 11);
  cudaError_t err;
  std::vector<float> o_partial, lse_partial;  // sized exactly, so ASan sees any overrun
  if (num_splits == 0) {
    err = cuda::forward(p, dtype, cudaStream_t{});
  } else {
    DecodeParams dp{};
    static_cast<AttentionParams&>(dp) = p;
    dp.num_splits = num_splits;
    dp.row_groups = ceil_div(p.group_size() * p.len_q, cuda::kDecodeBlockRows);
    dp.partial_split_stride = int64_t(lse.size());
    if (num_splits > 1) {
      o_partial.resize(num_splits * lse.size() * pr.d);
      lse_partial.resize(num_splits * lse.size());
      dp.o_partial = o_partial.data(), dp.lse_partial = lse_partial.data();
    }
    err = cuda::decode(dp, dtype, cudaStream_t{});
  }
  double err_o = 0, err_lse = 0;
  for (int64_t i = 0; i < nq; ++i)
    err_o = testing::max_error(err_o, std::fabs(float(oe[i]) - o[i]));
  for (size_t i = 0; i < lse.size(); ++i)
    err_lse = testing::max_error(err_lse, std::fabs(lse_e[i] - lse[i]));
  const bool ok = err == cudaSuccess && err_o < tol && err_lse < 1e-3;
  std::printf("%s %s%s mode=%d D=%lld lq=%lld lk=%lld hq=%lld hkv=%lld w=%lld s=%lld ff=%lld: "
              "out %.1e lse %.1e\n", ok ? "ok  " : "FAIL", num_splits ? "decode" : "tiles ",
              page_size ? " paged" : "", int(mode), (long long)pr.d,
              (long long)pr.lq, (long long)pr.lk, (long long)pr.hq, (long long)pr.hkv,
              (long long)pr.window, (long long)pr.sinks, (long long)pr.full_from, err_o, err_lse);
  return ok;
}

// A packed varlen batch (cu_seqlens, (total, H, D) rows, LSE (Hq, total_q)): every sequence
// against the naive loop on its own rows, including empty ones and one past the query tile.
template <typename Element>
static bool run_varlen(cuda::Dtype dtype, double tol, simt::Mode mode) {
  const int64_t hq = 2, hkv = 1, d = 64, window = 17, sinks = 5;
  const std::pair<int64_t, int64_t> lens[] = {{0, 0}, {1, 1}, {65, 65}, {30, 70}, {0, 9}};
  const int64_t n = int64_t(std::size(lens));
  std::vector<int32_t> cu_q{0}, cu_k{0};
  int64_t max_q = 0, max_k = 0;
  for (const auto& [lq, lk] : lens) {
    cu_q.push_back(int32_t(cu_q.back() + lq));
    cu_k.push_back(int32_t(cu_k.back() + lk));
    max_q = std::max(max_q, lq), max_k = std::max(max_k, lk);
  }
  const int64_t tq = cu_q.back(), tk = cu_k.back();
  std::mt19937 gen(3);
  std::normal_distribution<double> normal;
  auto randn = [&](int64_t count) {
    std::vector<double> x(count);
    for (auto& e : x) e = rounded<Element>(normal(gen));
    return x;
  };
  const std::vector<double> q = randn(tq * hq * d), k = randn(tk * hkv * d),
                            v = randn(tk * hkv * d);
  auto to_elements = [](const std::vector<double>& x) {
    std::vector<Element> e(x.size());
    for (size_t i = 0; i < x.size(); ++i) e[i] = Element(float(x[i]));
    return e;
  };
  const std::vector<Element> qe = to_elements(q), ke = to_elements(k), ve = to_elements(v);
  std::vector<Element> oe(q.size());
  std::vector<float> lse_e(hq * tq);
  std::vector<int64_t> full_from(n, tk);  // never

  AttentionParams p{};
  p.q = qe.data(), p.k = ke.data(), p.v = ve.data(), p.o = oe.data(), p.lse = lse_e.data();
  p.q_row_stride = p.o_row_stride = hq * d, p.q_head_stride = p.o_head_stride = d;
  p.k_row_stride = p.v_row_stride = hkv * d, p.k_head_stride = p.v_head_stride = d;
  p.lse_head_stride = tq;  // every batch stride stays 0
  p.batch = n, p.heads_q = hq, p.heads_kv = hkv, p.len_q = max_q, p.len_k = max_k, p.head_dim = d;
  p.cu_seqlens_q = cu_q.data(), p.cu_seqlens_k = cu_k.data();
  p.window = window, p.sinks = sinks, p.full_from = full_from.data();
  p.scale = 1.0 / std::sqrt(double(d));
  simt::set_mode(mode, 5);
  const cudaError_t err = cuda::forward(p, dtype, cudaStream_t{});

  double err_o = 0, err_lse = 0;
  for (int64_t s = 0; s < n; ++s) {
    const auto [lq, lk] = lens[s];
    if (lq == 0) continue;
    // This sequence's rows as a dense (1, H, L, D) problem.
    auto gather = [&](const std::vector<double>& x, int64_t begin, int64_t len, int64_t heads) {
      std::vector<double> y(heads * len * d);
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t r = 0; r < len; ++r)
          for (int64_t c = 0; c < d; ++c)
            y[(h * len + r) * d + c] = x[((begin + r) * heads + h) * d + c];
      return y;
    };
    const swaa::testing::Problem pr{1, hq, hkv, lq, lk, d, std::min(window, lk), sinks, lk};
    const std::vector<double> qs = gather(q, cu_q[s], lq, hq), ks = gather(k, cu_k[s], lk, hkv),
                              vs = gather(v, cu_k[s], lk, hkv), dos(qs.size(), 0.0);
    std::vector<double> os(qs.size()), lses(hq * lq), dqs(qs.size()), dks(ks.size()),
        dvs(ks.size());
    swaa::testing::naive(pr, qs, ks, vs, dos, os, lses, dqs, dks, dvs);
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t r = 0; r < lq; ++r) {
        const int64_t row = cu_q[s] + r;
        for (int64_t c = 0; c < d; ++c)
          err_o = testing::max_error(err_o, std::fabs(float(oe[(row * hq + h) * d + c]) -
                                             os[(h * lq + r) * d + c]));
        err_lse =
            testing::max_error(err_lse, std::fabs(lse_e[h * tq + row] - lses[h * lq + r]));
      }
    }
  }
  const bool ok = err == cudaSuccess && err_o < tol && err_lse < 1e-3;
  std::printf("%s mode=%d varlen (0,0) (1,1) (65,65) (30,70) (0,9): out %.1e lse %.1e\n",
              ok ? "ok  " : "FAIL", int(mode), err_o, err_lse);
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
  // Decode problems (len_q <= 16), each with one split, three, and more splits than key tiles.
  const Problem decode_problems[] = {
      {1, 8, 1, 1, 700, 128, 40, 3, 700},   // GQA 8, sinks, long Lk
      {2, 8, 2, 16, 300, 64, 50, 4, 290},   // 4 x 16 packed rows, full_from inside the queries
      {1, 4, 1, 5, 200, 64, 200, 0, 200},   // full causal
  };
  const int64_t decode_splits[] = {1, 3, 40};
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
    for (const Problem& pr : decode_problems) {
      for (const int64_t splits : decode_splits) {
        const bool a = run<__half>(pr, cuda::Dtype::fp16, 4e-3, mode, splits);
        const bool b = run<__nv_bfloat16>(pr, cuda::Dtype::bf16, 3e-2, mode, splits);
        passed += a + b;
        failed += !a + !b;
      }
    }
    // Paged K/V: pages smaller than a key tile, not dividing it, and larger; tiles and decode.
    // The chunk and both decode problems leave keys no query sees (NaN in the cache).
    const Problem chunk{2, 2, 1, 70, 300, 64, 30, 4, 300};  // a prompt chunk after 230 keys
    const std::pair<Problem, int64_t> paged[] = {{problems[0], 16}, {problems[2], 48},
                                                 {problems[3], 128}, {chunk, 16},
                                                 {decode_problems[0], 32}, {decode_problems[1], 24}};
    for (const auto& [pr, page_size] : paged) {
      const int64_t splits = pr.lq <= cuda::kDecodeMaxQueries ? 3 : 0;
      const bool a = run<__half>(pr, cuda::Dtype::fp16, 4e-3, mode, splits, page_size);
      const bool b = run<__nv_bfloat16>(pr, cuda::Dtype::bf16, 3e-2, mode, splits, page_size);
      passed += a + b;
      failed += !a + !b;
    }
    const bool a = run_varlen<__half>(cuda::Dtype::fp16, 4e-3, mode);
    const bool b = run_varlen<__nv_bfloat16>(cuda::Dtype::bf16, 3e-2, mode);
    passed += a + b;
    failed += !a + !b;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
