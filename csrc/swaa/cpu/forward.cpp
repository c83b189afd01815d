// CPU forward: tiled online softmax over the sink and window key blocks only.
// One work item = (sequence, KV head, block of kBlockM query positions) for all the query heads
// that share the KV head (GQA): their rows are packed into one (group * kBlockM, D) tile, so each K/V
// tile feeds one large product instead of `group` small ones. OpenMP runs items in parallel
// (torch.set_num_threads sets the same OpenMP runtime's thread count).
#include <numeric>
#include <vector>

#include "kernels.h"
#include "tile_ops.h"
#include "vec_math.h"
#include "work_items.h"

namespace swaa::cpu {
namespace {

// Per-thread scratch for one work item, allocated once per parallel region.
template <typename T>
struct ForwardScratch {
  ForwardScratch(int64_t rows, int64_t head_dim)
      : q(rows * head_dim), scores(rows * kBlockN), acc(rows * head_dim), row_max(rows),
        row_sum(rows) {}
  std::vector<T> q;        // (rows, D): the group's query rows, times the softmax scale
  std::vector<T> scores;   // (rows, kBlockN): scores, then probabilities
  std::vector<T> acc;      // (rows, D): unnormalised output
  std::vector<T> row_max;  // running max of each row's scores
  std::vector<T> row_sum;  // running sum of exp(score - row_max)
};

// Online softmax step for one tile: move each row's running state to the new row max (skipped
// when the max did not change), turn scores into probabilities in place, add them to the sums.
template <typename T>
void online_softmax_step(int64_t rows, int64_t cols, int64_t head_dim, ForwardScratch<T>& st) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    T* s = st.scores.data() + r * kBlockN;
    const T new_max = std::max(st.row_max[r], row_max(s, cols));
    if (new_max == neg_inf) {  // nothing visible in this row yet
      std::fill(s, s + cols, T(0));
      continue;
    }
    const T sum = exp_shifted_sum(s, cols, new_max);
    if (new_max != st.row_max[r]) {
      const T rescale = std::exp(st.row_max[r] - new_max);  // exp(-inf) = 0 on the first tile
      st.row_sum[r] *= rescale;
      scale_row(st.acc.data() + r * head_dim, head_dim, rescale);
      st.row_max[r] = new_max;
    }
    st.row_sum[r] += sum;
  }
}

template <typename T>
void forward_block(const AttentionParams& p, const Sequence& seq, int64_t hk, int64_t block,
                   ForwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  const int64_t group = p.group_size();
  const int64_t m0 = block * kBlockM;
  const int64_t rows = std::min(kBlockM, seq.len_q - m0);  // per head
  const int64_t packed = group * rows;                      // packed row g * rows + r: head g
  const MaskRule& rule = seq.rule;
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  // Paged keys: tiles narrow to a divisor of the page size, so that every tile's rows lie in
  // one page, at one row stride.
  const int64_t block_n = p.block_table != nullptr ? std::gcd(kBlockN, p.page_size) : kBlockN;

  // q_packed <- scale * q of the group's heads
  for (int64_t g = 0; g < group; ++g) {
    const T* q = static_cast<const T*>(p.q) + seq.q_offset(p, hk * group + g) + m0 * p.q_row_stride;
    pack_rows(rows, D, T(p.scale), q, p.q_row_stride, st.q.data() + g * rows * D);
  }
  std::fill(st.row_max.begin(), st.row_max.end(), -std::numeric_limits<T>::infinity());
  std::fill(st.row_sum.begin(), st.row_sum.end(), T(0));
  std::fill(st.acc.begin(), st.acc.begin() + packed * D, T(0));

  const TwoRanges ranges = key_blocks(rule, m0, m0 + rows, block_n, seq.len_k);
  for (const Range& range : {ranges.first, ranges.second}) {
    for (int64_t nb = range.begin; nb < range.end; ++nb) {
      const int64_t n0 = nb * block_n;
      const int64_t cols = std::min(block_n, seq.len_k - n0);
      // s <- q_packed . k^T, then -inf where not visible
      packed_scores<T>(rule, group, m0, rows, n0, cols, D, st.q.data(),
                       k + seq.k_row_offset(p, hk, n0), p.k_row_stride, st.scores.data(),
                       kBlockN);
      online_softmax_step(packed, cols, D, st);
      // acc <- acc + P . v
      gemm_ab<T>(packed, D, cols, T(1), st.scores.data(), kBlockN,
                 v + seq.v_row_offset(p, hk, n0), p.v_row_stride, T(1), st.acc.data(), D);
    }
  }

  // out <- acc / row_sum; lse <- row_max + log(row_sum). Every row sees itself, so row_sum > 0.
  for (int64_t g = 0; g < group; ++g) {
    const int64_t h = hk * group + g;
    T* out = static_cast<T*>(p.o) + seq.o_offset(p, h) + m0 * p.o_row_stride;
    T* lse = static_cast<T*>(p.lse) + seq.lse_offset(p, h) + m0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pr = g * rows + r;
      const T inv_sum = T(1) / st.row_sum[pr];
      for (int64_t d = 0; d < D; ++d) out[r * p.o_row_stride + d] = st.acc[pr * D + d] * inv_sum;
      lse[r] = st.row_max[pr] + std::log(st.row_sum[pr]);
    }
  }
}

}  // namespace

template <typename T>
void forward(const AttentionParams& p) {
  use_single_threaded_blas();
  // (sequence, KV head, query block) over every sequence.
  const WorkItems items(p, p.heads_kv,
                        [](const Sequence& s) { return ceil_div(s.len_q, kBlockM); });
  // Dynamic schedule: blocks at or past full_from cost more than window blocks.
#pragma omp parallel if (worth_parallel(p))
  {
    ForwardScratch<T> scratch(p.group_size() * kBlockM, p.head_dim);
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < items.size(); ++i) {
      const WorkItem item = items[i];
      forward_block<T>(p, Sequence(p, item.b), item.head, item.block, scratch);
    }
  }
}

template void forward<float>(const AttentionParams&);
template void forward<double>(const AttentionParams&);

}  // namespace swaa::cpu
