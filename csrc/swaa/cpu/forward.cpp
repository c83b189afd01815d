// CPU forward: tiled online softmax over the sink and window key blocks only.
// One work item = (batch, query head, block of kBlockM query rows); OpenMP runs items in
// parallel (torch.set_num_threads sets the same OpenMP runtime's thread count).
#include <vector>

#include "kernels.h"
#include "tile_ops.h"

namespace swaa::cpu {
namespace {

// Per-thread scratch for one query block, allocated once per parallel chunk.
template <typename T>
struct ForwardScratch {
  explicit ForwardScratch(int64_t head_dim)
      : scores(kBlockM * kBlockN), acc(kBlockM * head_dim), row_max(kBlockM), row_sum(kBlockM) {}
  std::vector<T> scores;   // (kBlockM, kBlockN): scores, then probabilities
  std::vector<T> acc;      // (kBlockM, D): unnormalised output
  std::vector<T> row_max;  // running max of each row's scores
  std::vector<T> row_sum;  // running sum of exp(score - row_max)
};

// Online softmax step for one tile: rescale the running state to the new row max, turn scores
// into probabilities in place, and fold them into the running sums.
template <typename T>
void online_softmax_step(int64_t rows, int64_t cols, int64_t head_dim, ForwardScratch<T>& st) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    T* s = st.scores.data() + r * kBlockN;
    const T tile_max = *std::max_element(s, s + cols);
    const T new_max = std::max(st.row_max[r], tile_max);
    if (new_max == neg_inf) {  // nothing visible in this row yet
      std::fill(s, s + cols, T(0));
      continue;
    }
    const T rescale = std::exp(st.row_max[r] - new_max);  // exp(-inf) = 0 on the first tile
    T sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      s[c] = std::exp(s[c] - new_max);
      sum += s[c];
    }
    st.row_sum[r] = st.row_sum[r] * rescale + sum;
    st.row_max[r] = new_max;
    T* acc = st.acc.data() + r * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) acc[d] *= rescale;
  }
}

template <typename T>
void forward_query_block(const AttentionParams& p, int64_t b, int64_t h, int64_t block,
                         ForwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  const int64_t hk = h / p.group_size();
  const int64_t m0 = block * kBlockM;
  const int64_t rows = std::min(kBlockM, p.len_q - m0);
  const MaskRule rule = p.rule(b);
  const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride +
               m0 * p.q_row_stride;
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;

  std::fill(st.row_max.begin(), st.row_max.end(), -std::numeric_limits<T>::infinity());
  std::fill(st.row_sum.begin(), st.row_sum.end(), T(0));
  std::fill(st.acc.begin(), st.acc.end(), T(0));

  const TwoRanges ranges = key_blocks(rule, m0, m0 + rows, kBlockN, p.len_k);
  for (const Range& range : {ranges.first, ranges.second}) {
    for (int64_t nb = range.begin; nb < range.end; ++nb) {
      const int64_t n0 = nb * kBlockN;
      const int64_t cols = std::min(kBlockN, p.len_k - n0);
      // s <- scale * q . k^T (masked on edge tiles)
      masked_scores<T>(rule, m0, rows, n0, cols, D, T(p.scale), q, p.q_row_stride,
                       k + n0 * p.k_row_stride, p.k_row_stride, st.scores.data(), kBlockN);
      online_softmax_step(rows, cols, D, st);
      // acc <- acc + P . v
      gemm_ab<T>(rows, D, cols, T(1), st.scores.data(), kBlockN, v + n0 * p.v_row_stride,
                 p.v_row_stride, T(1), st.acc.data(), D);
    }
  }

  // out <- acc / row_sum; lse <- row_max + log(row_sum). Every row sees itself, so row_sum > 0.
  T* out = static_cast<T*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride +
           m0 * p.o_row_stride;
  T* lse = static_cast<T*>(p.lse) + (b * p.heads_q + h) * p.len_q + m0;
  for (int64_t r = 0; r < rows; ++r) {
    const T inv_sum = T(1) / st.row_sum[r];
    for (int64_t d = 0; d < D; ++d) out[r * p.o_row_stride + d] = st.acc[r * D + d] * inv_sum;
    lse[r] = st.row_max[r] + std::log(st.row_sum[r]);
  }
}

}  // namespace

template <typename T>
void forward(const AttentionParams& p) {
  use_single_threaded_blas();
  const int64_t q_blocks = ceil_div(p.len_q, kBlockM);
  const int64_t items = p.batch * p.heads_q * q_blocks;
  // Dynamic schedule: blocks at or past full_from cost more than window blocks.
#pragma omp parallel
  {
    ForwardScratch<T> scratch(p.head_dim);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t block = item % q_blocks;
      const int64_t h = (item / q_blocks) % p.heads_q;
      const int64_t b = item / (q_blocks * p.heads_q);
      forward_query_block<T>(p, b, h, block, scratch);
    }
  }
}

template void forward<float>(const AttentionParams&);
template void forward<double>(const AttentionParams&);

}  // namespace swaa::cpu
