// CPU forward: tiled online softmax over the sink and window key blocks only.
// One work item = (sequence, KV head, block of kBlockM query positions, key split) for all the
// query heads that share the KV head (GQA): their rows are packed into one (group * kBlockM, D)
// tile, so each K/V tile feeds one product instead of `group` small ones (BLAS for many rows,
// row kernels for a few, tile_ops.h). Decode items over long key ranges are split
// across threads (split_plan.h) and merged by LSE. OpenMP runs items in parallel
// (torch.set_num_threads sets the same OpenMP runtime's thread count).
//
// Templated on the element type S of q, k, v and o: float and double are computed as
// themselves; bf16 / fp16 (a paged KV cache in the model's dtype) in float32, each K/V tile
// converted as it is visited (in registers by the row kernels, into a buffer for BLAS), or for
// bf16 multiplied as it is on AMX where the CPU has it (amx_tiles.h).
#include <omp.h>

#include <memory>
#include <optional>
#include <vector>

#include "amx_tiles.h"
#include "kernels.h"
#include "split_plan.h"
#include "tile_ops.h"
#include "vec_math.h"
#include "work_items.h"

namespace swaa::cpu {
namespace {

static_assert(kBlockN <= AmxScratch::kMaxCols, "a key tile is one AMX step (amx_attend)");

// Per-thread scratch for one work item, kept by each thread across calls (thread_scratch).
// With AMX (bf16 K/V, amx_tiles.h) the query rows of an AMX work item are kept in bf16,
// unscaled; the tile products and the softmax work on whole 16-row blocks, so acc and the
// running max and sum are padded to a multiple of 16 rows.
template <typename T>
struct ForwardScratch {
  ForwardScratch(int64_t rows, int64_t head_dim, int64_t max_tile, bool convert_kv, bool use_amx)
      : lds(max_tile), q(rows * head_dim),
        scores(rows * max_tile),
        acc((use_amx ? amx_padded_rows(rows) : rows) * head_dim),
        row_max(use_amx ? amx_padded_rows(rows) : rows), row_sum(row_max.size()),
        kv_tile(convert_kv && !use_amx ? kBlockN * head_dim : 0),
        q_bf16(use_amx ? amx_padded_rows(rows) * head_dim : 0) {
    if (use_amx) amx.emplace(rows, head_dim);
  }
  int64_t lds;             // row stride of scores: the widest key tile
  std::vector<T> q;        // (rows, D): the group's query rows, times the softmax scale
  std::vector<T> scores;   // (rows, lds): scores, then probabilities
  std::vector<T> acc;      // (rows, D): unnormalised output
  std::vector<T> row_max;  // running max of each row's scores
  std::vector<T> row_sum;  // running sum of exp(score - row_max)
  std::vector<T> kv_tile;  // (kBlockN, D): a converted K or V tile (16-bit elements, BLAS path)
  std::vector<bf16> q_bf16;          // AMX: (padded rows, D) query rows as given
  std::optional<AmxScratch> amx;     // AMX: the repacked operands of a key tile
  bool amx_item = false;             // the current work item runs on AMX tiles
};

// The calling thread's scratch, kept across calls: a decode step calls the op once per layer,
// and allocating (and zeroing) the scratch each time cost as much as a short decode item's
// math. Rebuilt only when a call needs more room, or the other kind of products, than the
// last one built (every size grows with each argument; lds may exceed max_tile).
template <typename T>
ForwardScratch<T>& thread_scratch(int64_t rows, int64_t head_dim, int64_t max_tile,
                                  bool convert_kv, bool use_amx) {
  struct Kept {
    std::unique_ptr<ForwardScratch<T>> scratch;
    int64_t rows = 0, head_dim = 0, max_tile = 0;
    bool convert_kv = false, use_amx = false;
  };
  thread_local Kept kept;
  const bool fits = kept.scratch != nullptr && rows <= kept.rows && head_dim <= kept.head_dim &&
                    max_tile <= kept.max_tile && (convert_kv <= kept.convert_kv) &&
                    use_amx == kept.use_amx;
  if (!fits) {
    kept.rows = std::max(rows, kept.rows), kept.head_dim = std::max(head_dim, kept.head_dim);
    kept.max_tile = std::max(max_tile, kept.max_tile);
    kept.convert_kv = convert_kv || kept.convert_kv, kept.use_amx = use_amx;
    kept.scratch.reset();  // (free the old buffers first)
    kept.scratch = std::make_unique<ForwardScratch<T>>(kept.rows, kept.head_dim, kept.max_tile,
                                                       kept.convert_kv, use_amx);
  }
  return *kept.scratch;
}

// The query rows of head g of the group into the scratch (packed row g * rows + r).
template <typename T, typename S>
void pack_queries(const AttentionParams& p, int64_t g, int64_t rows, const S* q,
                  ForwardScratch<T>& st) {
  const int64_t D = p.head_dim;
  if constexpr (std::is_same_v<S, bf16>) {
    if (st.amx_item) {  // the scale is applied to the scores
      for (int64_t r = 0; r < rows; ++r)
        std::copy(q + r * p.q_row_stride, q + r * p.q_row_stride + D, &st.q_bf16[(g * rows + r) * D]);
      return;
    }
  }
  pack_rows(rows, D, T(p.scale), q, p.q_row_stride, st.q.data() + g * rows * D);
}

// The 32-key segments of the key tile [n0, n0 + cols) for the AMX products: with the amx
// layout in place, in their pages (in_page(n)); else in the scratch the caller repacks into
// (in_scratch(first key)). nullptr past the tile, or where no query row of the item sees a key
// (`seen`: its 32-key blocks), since that page may be freed.
template <typename InPage, typename InScratch>
void amx_segments(const AttentionParams& p, const TwoRanges& seen, int64_t n0, int64_t cols,
                  InPage in_page, InScratch in_scratch, const bf16* (&out)[kAmxSegments]) {
  for (int64_t i = 0; i < kAmxSegments; ++i) {
    const int64_t n = n0 + i * kAmxPairBlock, b = n / kAmxPairBlock;
    const bool is_seen = (b >= seen.first.begin && b < seen.first.end) ||
                         (b >= seen.second.begin && b < seen.second.end);
    if (!p.amx_layout) {
      out[i] = in_scratch(i * kAmxPairBlock);
    } else {
      out[i] = n < n0 + cols && is_seen ? in_page(n) : nullptr;
    }
  }
}

// The columns of the key tile [n0, n0 + cols) that query row i sees: its sink and window
// ranges, clamped to the tile.
inline TwoRanges visible_columns(const MaskRule& rule, int64_t i, int64_t n0, int64_t cols) {
  const TwoRanges keys = rule.row_keys(i);
  const auto clamp = [&](const Range& r) {
    return Range{std::clamp<int64_t>(r.begin - n0, 0, cols), std::clamp<int64_t>(r.end - n0, 0, cols)};
  };
  return {clamp(keys.first), clamp(keys.second)};
}

// The online-softmax step of an AMX work item (bf16 K/V) over the key tile [n0, n0 + cols) of
// KV head hk (amx_attend): the tile's keys and values repacked into the scratch unless the cache
// is in the amx layout, and the columns each packed row sees (seen: the 32-key blocks the
// item's rows see).
void amx_tile_step(const AttentionParams& p, const Sequence& seq, int64_t hk, int64_t group,
                   int64_t m0, int64_t rows, int64_t n0, int64_t cols, const TwoRanges& seen,
                   ForwardScratch<float>& st) {
  const bf16* k = static_cast<const bf16*>(p.k);
  const bf16* v = static_cast<const bf16*>(p.v);
  AmxScratch& amx = *st.amx;
  const int64_t D = p.head_dim;
  const int64_t chunk_stride = 16 * (p.amx_layout ? p.page_size : AmxScratch::kMaxCols);
  const auto key_in_page = [&](int64_t n) {
    const int64_t t = n % p.page_size;
    return k + seq.k_row_offset(p, hk, n - t) + amx_key_offset(t, 0, D);
  };
  const auto key_in_scratch = [&](int64_t t) { return amx.k.data() + amx_key_offset(t, 0, D); };
  const auto value_in_page = [&](int64_t n) {
    const int64_t t = n % p.page_size;
    return v + seq.v_row_offset(p, hk, n - t) + amx_value_offset(t, 0, p.page_size);
  };
  const auto value_in_scratch = [&](int64_t t) {
    return amx.v.data() + amx_value_offset(t, 0, AmxScratch::kMaxCols);
  };
  const bf16 *key_segments[kAmxSegments], *value_blocks[kAmxSegments];
  amx_segments(p, seen, n0, cols, key_in_page, key_in_scratch, key_segments);
  amx_segments(p, seen, n0, cols, value_in_page, value_in_scratch, value_blocks);
  if (!p.amx_layout) {
    amx_pack_keys(cols, D, k + seq.k_row_offset(p, hk, n0), p.k_row_stride, amx.k.data());
    amx_pack_values(cols, D, v + seq.v_row_offset(p, hk, n0), p.v_row_stride, amx.v.data());
  }
  // Row r of every head of the group sees the same columns.
  const bool whole = seq.rule.tile_fully_visible(m0, m0 + rows, n0, n0 + cols);
  for (int64_t r = 0; r < rows; ++r) {
    const TwoRanges in_tile =
        whole ? TwoRanges{{0, cols}, {0, 0}} : visible_columns(seq.rule, m0 + r, n0, cols);
    const uint64_t bits = column_bits(in_tile.first.begin, in_tile.first.end) |
                          column_bits(in_tile.second.begin, in_tile.second.end);
    for (int64_t g = 0; g < group; ++g) amx.visible[g * rows + r] = bits;
  }
  std::fill(amx.visible.begin() + group * rows, amx.visible.end(), 0);  // padding rows
  amx_attend(group * rows, cols, D, st.q_bf16.data(), key_segments, value_blocks, chunk_stride,
             float(p.scale), st.row_max.data(), st.row_sum.data(), st.acc.data(), amx);
}

// s <- scale * q_packed . k^T for the key tile [n0, n0 + cols) of KV head hk.
template <typename T, typename S>
void tile_scores_of(const AttentionParams& p, const Sequence& seq, int64_t hk, int64_t n0,
                    int64_t rows, int64_t cols, ForwardScratch<T>& st) {
  const S* k = static_cast<const S*>(p.k);
  tile_scores<T>(rows, cols, p.head_dim, st.q.data(), k + seq.k_row_offset(p, hk, n0),
                 p.k_row_stride, st.scores.data(), st.lds, &st.kv_tile);
}

// acc <- acc + P . v for the key tile [n0, n0 + cols) (P: the probabilities in st.scores).
template <typename T, typename S>
void tile_accumulate_of(const AttentionParams& p, const Sequence& seq, int64_t hk, int64_t n0,
                        int64_t rows, int64_t cols, ForwardScratch<T>& st) {
  const S* v = static_cast<const S*>(p.v);
  tile_accumulate<T>(rows, cols, p.head_dim, st.scores.data(), st.lds,
                     v + seq.v_row_offset(p, hk, n0), p.v_row_stride, st.acc.data(), &st.kv_tile);
}

// The columns [begin, end) of the key tile [n0, n0 + cols) that hold all of query row i's
// visible keys (the hull of its sink and window ranges; masked columns inside stay -inf).
inline Range visible_hull(const MaskRule& rule, int64_t i, int64_t n0, int64_t cols) {
  const TwoRanges in_tile = visible_columns(rule, i, n0, cols);
  int64_t begin = cols, end = 0;
  for (const Range& r : {in_tile.first, in_tile.second}) {
    if (!r.empty()) begin = min64(begin, r.begin), end = max64(end, r.end);
  }
  return {begin, end};
}

// Online softmax step for one tile of the rows of `group` heads (packed as mask_packed's):
// move each row's running state to the new row max (skipped when the max did not change),
// turn scores into probabilities in place, add them to the sums. On a tile that straddles an
// edge of the rule, the max and exp run over each row's visible hull only (its other columns
// become 0): a window's edge tiles are mostly columns a row cannot see.
template <typename T>
void online_softmax_step(const MaskRule& rule, int64_t group, int64_t m0, int64_t rows,
                         int64_t n0, int64_t cols, int64_t head_dim, ForwardScratch<T>& st) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const bool whole = rule.tile_fully_visible(m0, m0 + rows, n0, n0 + cols);
  for (int64_t pr = 0; pr < group * rows; ++pr) {
    T* s = st.scores.data() + pr * st.lds;
    const Range hull = whole ? Range{0, cols} : visible_hull(rule, m0 + pr % rows, n0, cols);
    if (hull.empty()) {  // the row sees no key of this tile
      std::fill(s, s + cols, T(0));
      continue;
    }
    std::fill(s, s + hull.begin, T(0));
    std::fill(s + hull.end, s + cols, T(0));
    const T new_max = std::max(st.row_max[pr], row_max(s + hull.begin, hull.end - hull.begin));
    if (new_max == neg_inf) {  // nothing visible in this row yet (-inf scores)
      std::fill(s + hull.begin, s + hull.end, T(0));
      continue;
    }
    const T sum = exp_shifted_sum(s + hull.begin, hull.end - hull.begin, new_max);
    if (new_max != st.row_max[pr]) {
      const T rescale = std::exp(st.row_max[pr] - new_max);  // exp(-inf) = 0 on the first tile
      st.row_sum[pr] *= rescale;
      scale_row(st.acc.data() + pr * head_dim, head_dim, rescale);
      st.row_max[pr] = new_max;
    }
    st.row_sum[pr] += sum;
  }
}

// Where a work item writes: o and lse (lse may be null: nobody asked), or with several splits
// its split's partial rows.
template <typename T>
struct Partials {
  const SplitPlan& plan;
  std::vector<T> o;    // (plan.partial_rows, D), normalised by the split's own sum
  std::vector<T> lse;  // (plan.partial_rows,), -inf where the split saw no key of the row
};

template <typename T, typename S>
void forward_item(const AttentionParams& p, const Sequence& seq, int64_t hk, int64_t block,
                  int64_t split, Partials<T>& parts, ForwardScratch<T>& st,
                  AmxTiles& amx_tiles) {
  const int64_t D = p.head_dim;
  const int64_t group = p.group_size();
  const int64_t m0 = block * kBlockM;
  const int64_t rows = std::min(kBlockM, seq.len_q - m0);  // per head
  const int64_t packed = group * rows;                      // packed row g * rows + r: head g
  const MaskRule& rule = seq.rule;
  const S* k = static_cast<const S*>(p.k);
  const S* v = static_cast<const S*>(p.v);
  const int64_t block_n = key_tile_width(p);

  // A few rows (decode) take the row kernels, unless the cache is in the amx layout: repacking
  // a key tile for AMX costs more than it saves on so few rows.
  st.amx_item = st.amx.has_value() && (p.amx_layout || packed >= kVectorRows);
  if (st.amx_item) amx_tiles.configure(packed);
  // q_packed <- q of the group's heads
  for (int64_t g = 0; g < group; ++g) {
    pack_queries(p, g, rows,
                 static_cast<const S*>(p.q) + seq.q_offset(p, hk * group + g) + m0 * p.q_row_stride,
                 st);
  }
  std::fill(st.row_max.begin(), st.row_max.end(), -std::numeric_limits<T>::infinity());
  std::fill(st.row_sum.begin(), st.row_sum.end(), T(0));
  std::fill(st.acc.begin(), st.acc.begin() + packed * D, T(0));

  // This split's share of the visited key tiles (all of them with one split).
  const TwoRanges tiles = key_blocks(rule, m0, m0 + rows, block_n, seq.len_k);
  // The 32-key blocks the rows see: the AMX products skip the others (amx_segments).
  const TwoRanges seen = key_blocks(rule, m0, m0 + rows, kAmxPairBlock, seq.len_k);
  const int64_t visits = visited_count(tiles), splits = parts.plan.splits[seq.b];
  const int64_t t_end = (split + 1) * visits / splits;
  for (int64_t t = split * visits / splits; t < t_end; ++t) {
    const int64_t n0 = nth_visited(tiles, t) * block_n;
    const int64_t cols = std::min(block_n, seq.len_k - n0);
    if (t + 1 < t_end) {  // the next tile may be in another page: start its loads now
      const int64_t next = nth_visited(tiles, t + 1) * block_n;
      const int64_t next_cols = std::min(block_n, seq.len_k - next);
      if (p.amx_layout) {
        // The keys' 16-key groups are contiguous like rows, a 32-key segment per page; the
        // values are spread over the page's dim chunks, and prefetching those measured slower
        // than not.
        for (int64_t n = next; n < next + next_cols; n += kAmxPairBlock) {
          prefetch_rows(k + seq.k_row_offset(p, hk, n), D, std::min(kAmxPairBlock, next + next_cols - n), D);
        }
      } else {
        prefetch_rows(k + seq.k_row_offset(p, hk, next), p.k_row_stride, next_cols, D);
        prefetch_rows(v + seq.v_row_offset(p, hk, next), p.v_row_stride, next_cols, D);
      }
    }
    if constexpr (std::is_same_v<S, bf16>) {
      if (st.amx_item) {
        amx_tile_step(p, seq, hk, group, m0, rows, n0, cols, seen, st);
        continue;
      }
    }
    // s <- scale * q_packed . k^T, then -inf where not visible
    tile_scores_of<T, S>(p, seq, hk, n0, packed, cols, st);
    mask_packed(rule, group, m0, rows, n0, cols, st.scores.data(), st.lds);
    online_softmax_step(rule, group, m0, rows, n0, cols, D, st);
    // acc <- acc + P . v
    tile_accumulate_of<T, S>(p, seq, hk, n0, packed, cols, st);
  }

  // out <- acc / row_sum; lse <- row_max + log(row_sum). Every row sees itself, so with one
  // split row_sum > 0; a split may see no key of a row (row_sum 0: lse -inf, output 0).
  for (int64_t g = 0; g < group; ++g) {
    const int64_t h = hk * group + g;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pr = g * rows + r;
      const T sum = st.row_sum[pr];
      const T inv_sum = sum > T(0) ? T(1) / sum : T(0);
      const T lse = sum > T(0) ? st.row_max[pr] + std::log(sum)
                               : -std::numeric_limits<T>::infinity();
      const T* acc = st.acc.data() + pr * D;
      if (splits > 1) {
        const int64_t row = parts.plan.partial_row(p, seq, split, h, m0 + r);
        for (int64_t d = 0; d < D; ++d) parts.o[row * D + d] = acc[d] * inv_sum;
        parts.lse[row] = lse;
        continue;
      }
      S* out = static_cast<S*>(p.o) + seq.o_offset(p, h) + (m0 + r) * p.o_row_stride;
      scale_into(acc, inv_sum, D, out);
      if (p.lse != nullptr) static_cast<T*>(p.lse)[seq.lse_offset(p, h) + m0 + r] = lse;
    }
  }
}

// Merges the splits of query i of head h: lse = log sum_s exp(lse_s), o = sum_s exp(lse_s - lse) o_s.
template <typename T, typename S>
void merge_splits(const AttentionParams& p, const Sequence& seq, int64_t h, int64_t i,
                  const Partials<T>& parts, std::vector<T>& acc) {
  const int64_t D = p.head_dim, splits = parts.plan.splits[seq.b];
  T max_lse = -std::numeric_limits<T>::infinity();
  for (int64_t s = 0; s < splits; ++s)
    max_lse = std::max(max_lse, parts.lse[parts.plan.partial_row(p, seq, s, h, i)]);
  T sum = 0;
  std::fill(acc.begin(), acc.begin() + D, T(0));
  for (int64_t s = 0; s < splits; ++s) {
    const int64_t row = parts.plan.partial_row(p, seq, s, h, i);
    const T weight = std::exp(parts.lse[row] - max_lse);  // 0 for a split that saw nothing
    sum += weight;
    if (weight != T(0)) axpy(acc.data(), weight, parts.o.data() + row * D, D);
  }
  // Every row sees itself, so some split saw a key: max_lse is finite and sum >= 1.
  S* out = static_cast<S*>(p.o) + seq.o_offset(p, h) + i * p.o_row_stride;
  scale_into(acc.data(), T(1) / sum, D, out);
  if (p.lse != nullptr) static_cast<T*>(p.lse)[seq.lse_offset(p, h) + i] = max_lse + std::log(sum);
}

}  // namespace

template <typename S>
void forward(const AttentionParams& p) {
  using T = compute_t<S>;
  use_single_threaded_blas();
  const bool parallel = worth_parallel(p);
  const SplitPlan plan = plan_splits(p, parallel ? omp_get_max_threads() : 1);
  Partials<T> parts{plan, std::vector<T>(plan.partial_rows * p.head_dim),
                    std::vector<T>(plan.partial_rows)};
  // (sequence, KV head, query block x split) over every sequence; a split sequence has one
  // query block.
  const WorkItems items(p, p.heads_kv, [&](const Sequence& s) {
    return ceil_div(s.len_q, kBlockM) * plan.splits[s.b];
  });
  // (sequence, query head, query) rows to merge, over the split sequences only.
  const WorkItems merges(p, p.heads_q, [&](const Sequence& s) {
    return plan.splits[s.b] > 1 ? s.len_q : 0;
  });
#pragma omp parallel if (parallel)
  {
    // Rows of the largest work item: a decode step (len_q 1) needs `group` rows, not 64 per head.
    const int64_t rows = p.group_size() * std::max<int64_t>(1, std::min(kBlockM, p.len_q));
    const bool use_amx = std::is_same_v<S, bf16> && amx_head_dim(p.head_dim) && amx_usable();
    const int64_t max_tile = key_tile_width(p);
    ForwardScratch<T>& scratch =
        thread_scratch<T>(rows, p.head_dim, max_tile, !std::is_same_v<S, T>, use_amx);
    AmxTiles amx_tiles;  // (released when the thread's items are done)
    // Dynamic schedule: blocks at or past full_from cost more than window blocks.
#pragma omp for schedule(dynamic) nowait
    for (int64_t i = 0; i < items.size(); ++i) {
      const WorkItem item = items[i];
      const int64_t splits = plan.splits[item.b];
      forward_item<T, S>(p, Sequence(p, item.b), item.head, item.block / splits,
                         item.block % splits, parts, scratch, amx_tiles);
    }
    // Barriers only where there is something to merge (every split written before any merge):
    // a decode step runs this once per layer, and each barrier is a wait of every thread.
    if (merges.size() > 0) {
#pragma omp barrier
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < merges.size(); ++i) {
        const WorkItem row = merges[i];
        merge_splits<T, S>(p, Sequence(p, row.b), row.head, row.block, parts, scratch.acc);
      }
    }
  }  // (the region's end: its one barrier)
}

template void forward<float>(const AttentionParams&);
template void forward<double>(const AttentionParams&);
template void forward<bf16>(const AttentionParams&);
template void forward<fp16>(const AttentionParams&);

}  // namespace swaa::cpu
