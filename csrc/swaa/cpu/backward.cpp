// CPU backward, deterministic (no atomics): P is recomputed from the saved LSE.
//   pass 1, per (sequence, KV head, query block): dQ = scale * dS . K over the visible key blocks
//   pass 2, per (sequence, KV head, key block): dV = P^T . dO, dK = scale * dS^T . Q over the
//           query blocks that see the key block
// with dS = P * (dP - delta), dP = dO . V^T and delta = rowsum(dO * O) - dLSE. As in the forward,
// both passes pack the rows of the query heads that share a KV head (GQA) into one tile.
#include <vector>

#include "kernels.h"
#include "tile_ops.h"
#include "vec_math.h"
#include "work_items.h"

namespace swaa::cpu {
namespace {

template <typename T>
struct BackwardScratch {
  BackwardScratch(int64_t rows, int64_t head_dim)
      : q(rows * head_dim), d_o(rows * head_dim), lse(rows), delta(rows),
        probs(rows * kBlockN), grad_scores(rows * kBlockN),
        acc_a(std::max(rows, kBlockN) * head_dim), acc_b(kBlockN * head_dim) {}
  std::vector<T> q;            // (rows, D): scale * q of the group's heads, packed
  std::vector<T> d_o;          // (rows, D): dO, packed like q
  std::vector<T> lse;          // (rows,)
  std::vector<T> delta;        // (rows,)
  std::vector<T> probs;        // (rows, kBlockN): P
  std::vector<T> grad_scores;  // (rows, kBlockN): dP, then dS
  std::vector<T> acc_a;        // dQ (rows, D) in pass 1; dK (kBlockN, D) in pass 2
  std::vector<T> acc_b;        // dV (kBlockN, D) in pass 2
};

// Gathers query rows [m0, m0 + rows) of the heads sharing KV head hk into the packed tiles
// (packed row g * rows + r is row m0 + r of head hk * group + g).
template <typename T>
void pack_group(const AttentionBackwardParams& p, const Sequence& seq, int64_t hk, int64_t m0,
                int64_t rows, BackwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  const int64_t group = p.group_size();
  for (int64_t g = 0; g < group; ++g) {
    const int64_t h = hk * group + g;
    const T* q = static_cast<const T*>(p.q) + seq.q_offset(p, h) + m0 * p.q_row_stride;
    const T* d_o = static_cast<const T*>(p.d_o) + seq.do_offset(p, h) + m0 * p.do_row_stride;
    pack_rows(rows, D, T(p.scale), q, p.q_row_stride, st.q.data() + g * rows * D);
    pack_rows(rows, D, T(1), d_o, p.do_row_stride, st.d_o.data() + g * rows * D);
    const int64_t row = seq.lse_offset(p, h) + m0;  // delta shares lse's layout
    std::copy_n(static_cast<const T*>(p.lse) + row, rows, st.lse.data() + g * rows);
    std::copy_n(static_cast<const T*>(p.delta) + row, rows, st.delta.data() + g * rows);
  }
}

// Recompute one tile for the packed rows: probs <- exp(scale * q . k^T - lse) (0 where masked),
// grad_scores <- probs * (dO . v^T - delta).
template <typename T>
void tile_probs_and_grads(const AttentionBackwardParams& p, const MaskRule& rule, int64_t m0,
                          int64_t rows, int64_t n0, int64_t cols, const T* k, const T* v,
                          BackwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  const int64_t packed = p.group_size() * rows;
  T* probs = st.probs.data();
  T* grads = st.grad_scores.data();
  packed_scores<T>(rule, p.group_size(), m0, rows, n0, cols, D, st.q.data(), k, p.k_row_stride,
                   probs, kBlockN);
  gemm_abt<T>(packed, cols, D, T(1), st.d_o.data(), D, v, p.v_row_stride, T(0), grads, kBlockN);
  for (int64_t r = 0; r < packed; ++r) {
    exp_shifted(probs + r * kBlockN, cols, st.lse[r]);  // exp(-inf) = 0 for masked keys
    softmax_grad_row(probs + r * kBlockN, grads + r * kBlockN, cols, st.delta[r]);
  }
}

template <typename T>
void grad_query_block(const AttentionBackwardParams& p, const Sequence& seq, int64_t hk,
                      int64_t block, BackwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  const int64_t group = p.group_size();
  const int64_t m0 = block * kBlockM;
  const int64_t rows = std::min(kBlockM, seq.len_q - m0);
  const MaskRule& rule = seq.rule;
  const T* k = static_cast<const T*>(p.k) + seq.k_offset(p, hk);
  const T* v = static_cast<const T*>(p.v) + seq.v_offset(p, hk);
  pack_group(p, seq, hk, m0, rows, st);
  std::fill(st.acc_a.begin(), st.acc_a.end(), T(0));

  const TwoRanges ranges = key_blocks(rule, m0, m0 + rows, kBlockN, seq.len_k);
  for (const Range& range : {ranges.first, ranges.second}) {
    for (int64_t nb = range.begin; nb < range.end; ++nb) {
      const int64_t n0 = nb * kBlockN;
      const int64_t cols = std::min(kBlockN, seq.len_k - n0);
      tile_probs_and_grads<T>(p, rule, m0, rows, n0, cols, k + n0 * p.k_row_stride,
                              v + n0 * p.v_row_stride, st);
      // dQ <- dQ + scale * dS . k
      gemm_ab<T>(group * rows, D, cols, T(p.scale), st.grad_scores.data(), kBlockN,
                 k + n0 * p.k_row_stride, p.k_row_stride, T(1), st.acc_a.data(), D);
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    T* dq = static_cast<T*>(p.dq) + seq.dq_offset(p, hk * group + g) + m0 * p.dq_row_stride;
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(st.acc_a.data() + (g * rows + r) * D, D, dq + r * p.dq_row_stride);
    }
  }
}

template <typename T>
void grad_key_block(const AttentionBackwardParams& p, const Sequence& seq, int64_t hk,
                    int64_t block, BackwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  const int64_t n0 = block * kBlockN;
  const int64_t cols = std::min(kBlockN, seq.len_k - n0);
  const MaskRule& rule = seq.rule;
  const T* k = static_cast<const T*>(p.k) + seq.k_offset(p, hk) + n0 * p.k_row_stride;
  const T* v = static_cast<const T*>(p.v) + seq.v_offset(p, hk) + n0 * p.v_row_stride;
  std::fill(st.acc_a.begin(), st.acc_a.end(), T(0));
  std::fill(st.acc_b.begin(), st.acc_b.end(), T(0));

  // Key blocks nobody sees keep zero gradients: the ranges are empty.
  const TwoRanges ranges = query_blocks(rule, n0, n0 + cols, kBlockM, seq.len_q);
  for (const Range& range : {ranges.first, ranges.second}) {
    for (int64_t mb = range.begin; mb < range.end; ++mb) {
      const int64_t m0 = mb * kBlockM;
      const int64_t rows = std::min(kBlockM, seq.len_q - m0);
      const int64_t packed = p.group_size() * rows;
      pack_group(p, seq, hk, m0, rows, st);
      tile_probs_and_grads<T>(p, rule, m0, rows, n0, cols, k, v, st);
      // dV <- dV + P^T . dO ; dK <- dK + dS^T . (scale * q)
      gemm_atb<T>(cols, D, packed, T(1), st.probs.data(), kBlockN, st.d_o.data(), D, T(1),
                  st.acc_b.data(), D);
      gemm_atb<T>(cols, D, packed, T(1), st.grad_scores.data(), kBlockN, st.q.data(), D, T(1),
                  st.acc_a.data(), D);
    }
  }
  T* dk = static_cast<T*>(p.dk) + seq.dk_offset(p, hk) + n0 * p.dk_row_stride;
  T* dv = static_cast<T*>(p.dv) + seq.dv_offset(p, hk) + n0 * p.dv_row_stride;
  for (int64_t c = 0; c < cols; ++c) {
    std::copy_n(st.acc_a.data() + c * D, D, dk + c * p.dk_row_stride);
    std::copy_n(st.acc_b.data() + c * D, D, dv + c * p.dv_row_stride);
  }
}

// Runs `fn(p, seq, hk, block, scratch)` over every (sequence, KV head, block) in parallel;
// `blocks_of(seq)` is the number of blocks per head of a sequence.
template <typename T, typename BlocksOf, typename Fn>
void parallel_over_blocks(const AttentionBackwardParams& p, BlocksOf blocks_of, Fn fn) {
  const WorkItems items(p, p.heads_kv, blocks_of);
#pragma omp parallel if (worth_parallel(p))
  {
    BackwardScratch<T> scratch(p.group_size() * kBlockM, p.head_dim);
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < items.size(); ++i) {
      const WorkItem item = items[i];
      fn(p, Sequence(p, item.b), item.head, item.block, scratch);
    }
  }
}

}  // namespace

template <typename T>
void backward(const AttentionBackwardParams& p) {
  use_single_threaded_blas();
  parallel_over_blocks<T>(
      p, [](const Sequence& s) { return ceil_div(s.len_q, kBlockM); }, grad_query_block<T>);
  parallel_over_blocks<T>(
      p, [](const Sequence& s) { return ceil_div(s.len_k, kBlockN); }, grad_key_block<T>);
}

template void backward<float>(const AttentionBackwardParams&);
template void backward<double>(const AttentionBackwardParams&);

}  // namespace swaa::cpu
