// CPU backward, deterministic (no atomics): P is recomputed from the saved LSE.
//   pass 1, per (batch, query head, query block): dQ = scale * dS . K over the visible key blocks
//   pass 2, per (batch, kv head, key block):      dV = P^T . dO, dK = scale * dS^T . Q over the
//           query blocks of every query head of the group that see the key block
// with dS = P * (dP - delta), dP = dO . V^T and delta = rowsum(dO * O) - dLSE.
#include <vector>

#include "kernels.h"
#include "tile_ops.h"

namespace swaa::cpu {
namespace {

template <typename T>
struct BackwardScratch {
  explicit BackwardScratch(int64_t head_dim)
      : probs(kBlockM * kBlockN), grad_scores(kBlockM * kBlockN),
        acc_a(std::max(kBlockM, kBlockN) * head_dim),
        acc_b(kBlockN * head_dim) {}
  std::vector<T> probs;        // (kBlockM, kBlockN): P
  std::vector<T> grad_scores;  // (kBlockM, kBlockN): dP, then dS
  std::vector<T> acc_a;        // dQ (kBlockM, D) in pass 1; dK (kBlockN, D) in pass 2
  std::vector<T> acc_b;        // dV (kBlockN, D) in pass 2
};

// Pointers of one (batch, query head) slice, rows starting at m0.
template <typename T>
struct QuerySlice {
  const T* q;
  const T* d_o;
  const T* lse;
  const T* delta;
};

template <typename T>
QuerySlice<T> query_slice(const AttentionBackwardParams& p, int64_t b, int64_t h, int64_t m0) {
  const int64_t row = (b * p.heads_q + h) * p.len_q + m0;
  return {static_cast<const T*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride +
              m0 * p.q_row_stride,
          static_cast<const T*>(p.d_o) + b * p.do_batch_stride + h * p.do_head_stride +
              m0 * p.do_row_stride,
          static_cast<const T*>(p.lse) + row, static_cast<const T*>(p.delta) + row};
}

// Recompute one tile: probs <- exp(scale * q.k^T - lse) (0 where masked),
// grad_scores <- probs * (dO.v^T - delta).
template <typename T>
void tile_probs_and_grads(const AttentionBackwardParams& p, const MaskRule& rule, int64_t m0,
                          int64_t rows, int64_t n0, int64_t cols, const QuerySlice<T>& qs,
                          const T* k, const T* v, BackwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  T* probs = st.probs.data();
  T* grads = st.grad_scores.data();
  masked_scores<T>(rule, m0, rows, n0, cols, D, T(p.scale), qs.q, p.q_row_stride, k,
                   p.k_row_stride, probs, kBlockN);
  // grads <- dO . v^T
  gemm_abt<T>(rows, cols, D, T(1), qs.d_o, p.do_row_stride, v, p.v_row_stride, T(0), grads,
              kBlockN);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * kBlockN + c;
      probs[i] = std::exp(probs[i] - qs.lse[r]);  // exp(-inf) = 0 for masked keys
      grads[i] = probs[i] * (grads[i] - qs.delta[r]);
    }
  }
}

template <typename T>
void grad_query_block(const AttentionBackwardParams& p, int64_t b, int64_t h, int64_t block,
                      BackwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  const int64_t hk = h / p.group_size();
  const int64_t m0 = block * kBlockM;
  const int64_t rows = std::min(kBlockM, p.len_q - m0);
  const MaskRule rule = p.rule(b);
  const QuerySlice<T> qs = query_slice<T>(p, b, h, m0);
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
  std::fill(st.acc_a.begin(), st.acc_a.end(), T(0));

  const TwoRanges ranges = key_blocks(rule, m0, m0 + rows, kBlockN, p.len_k);
  for (const Range& range : {ranges.first, ranges.second}) {
    for (int64_t nb = range.begin; nb < range.end; ++nb) {
      const int64_t n0 = nb * kBlockN;
      const int64_t cols = std::min(kBlockN, p.len_k - n0);
      tile_probs_and_grads<T>(p, rule, m0, rows, n0, cols, qs, k + n0 * p.k_row_stride,
                              v + n0 * p.v_row_stride, st);
      // dQ <- dQ + scale * dS . k
      gemm_ab<T>(rows, D, cols, T(p.scale), st.grad_scores.data(), kBlockN,
                 k + n0 * p.k_row_stride, p.k_row_stride, T(1), st.acc_a.data(), D);
    }
  }
  T* dq = static_cast<T*>(p.dq) + ((b * p.heads_q + h) * p.len_q + m0) * D;
  std::copy(st.acc_a.begin(), st.acc_a.begin() + rows * D, dq);
}

template <typename T>
void grad_key_block(const AttentionBackwardParams& p, int64_t b, int64_t hk, int64_t block,
                    BackwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  const int64_t n0 = block * kBlockN;
  const int64_t cols = std::min(kBlockN, p.len_k - n0);
  const MaskRule rule = p.rule(b);
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride +
               n0 * p.k_row_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride +
               n0 * p.v_row_stride;
  std::fill(st.acc_a.begin(), st.acc_a.end(), T(0));
  std::fill(st.acc_b.begin(), st.acc_b.end(), T(0));

  // Key blocks nobody sees keep zero gradients: the ranges are empty.
  const TwoRanges ranges = query_blocks(rule, n0, n0 + cols, kBlockM, p.len_q);
  for (int64_t h = hk * p.group_size(); h < (hk + 1) * p.group_size(); ++h) {
    for (const Range& range : {ranges.first, ranges.second}) {
      for (int64_t mb = range.begin; mb < range.end; ++mb) {
        const int64_t m0 = mb * kBlockM;
        const int64_t rows = std::min(kBlockM, p.len_q - m0);
        const QuerySlice<T> qs = query_slice<T>(p, b, h, m0);
        tile_probs_and_grads<T>(p, rule, m0, rows, n0, cols, qs, k, v, st);
        // dV <- dV + P^T . dO ; dK <- dK + scale * dS^T . q
        gemm_atb<T>(cols, D, rows, T(1), st.probs.data(), kBlockN, qs.d_o, p.do_row_stride,
                    T(1), st.acc_b.data(), D);
        gemm_atb<T>(cols, D, rows, T(p.scale), st.grad_scores.data(), kBlockN, qs.q,
                    p.q_row_stride, T(1), st.acc_a.data(), D);
      }
    }
  }
  const int64_t offset = ((b * p.heads_kv + hk) * p.len_k + n0) * D;
  std::copy(st.acc_a.begin(), st.acc_a.begin() + cols * D, static_cast<T*>(p.dk) + offset);
  std::copy(st.acc_b.begin(), st.acc_b.begin() + cols * D, static_cast<T*>(p.dv) + offset);
}

// Runs `fn(b, h, block, scratch)` over every (batch, head, block) in parallel.
template <typename T, typename Fn>
void parallel_over_blocks(const AttentionBackwardParams& p, int64_t heads, int64_t blocks,
                          Fn fn) {
  const int64_t items = p.batch * heads * blocks;
#pragma omp parallel
  {
    BackwardScratch<T> scratch(p.head_dim);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      fn(p, item / (heads * blocks), (item / blocks) % heads, item % blocks, scratch);
    }
  }
}

}  // namespace

template <typename T>
void backward(const AttentionBackwardParams& p) {
  use_single_threaded_blas();
  parallel_over_blocks<T>(p, p.heads_q, ceil_div(p.len_q, kBlockM), grad_query_block<T>);
  parallel_over_blocks<T>(p, p.heads_kv, ceil_div(p.len_k, kBlockN), grad_key_block<T>);
}

template void backward<float>(const AttentionBackwardParams&);
template void backward<double>(const AttentionBackwardParams&);

}  // namespace swaa::cpu
