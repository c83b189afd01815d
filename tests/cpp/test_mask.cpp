// Exhaustive check of mask.h: the block ranges the kernels visit must cover every visible
// (query, key) pair, visit each block at most once and no block without a visible pair, and `tile_fully_visible` must never claim a
// tile that holds a hidden pair. The 32-bit tile form of the rule (TileRule) must agree with
// `visible` on every pair of a tile, including origins and rules far beyond 32 bits, and the
// per-tile-index forms of tile_fully_visible (block_visibility over key tiles,
// query_block_visibility over query tiles) must equal it exactly. VisitOrder must visit the
// blocks of both ranges in order.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "expect.h"
#include "swaa/mask.h"

using namespace swaa;


static std::vector<int> visit_counts(const TwoRanges& r, int64_t n_blocks) {
  std::vector<int> counts(n_blocks, 0);
  for (const Range& range : {r.first, r.second}) {
    for (int64_t b = range.begin; b < range.end; ++b) {
      if (b >= 0 && b < n_blocks) counts[b]++;
    }
  }
  return counts;
}

// block_visibility(rule, m0, m1, bn).fully_visible(b) == tile_fully_visible on the unclipped
// tile [b bn, (b + 1) bn), as the key loops call it, for b in [0, n_blocks).
static void check_block_visibility(const MaskRule& rule, int64_t m0, int64_t m1, int64_t bn,
                                   int64_t n_blocks) {
  const BlockVisibility bv = block_visibility(rule, m0, m1, bn);
  for (int64_t b = 0; b < n_blocks; ++b)
    EXPECT(bv.fully_visible(int32_t(b)) == rule.tile_fully_visible(m0, m1, b * bn, b * bn + bn),
           "block_visibility disagrees on tile %lld of rows [%lld, %lld) (w=%lld s=%lld ff=%lld "
           "offset=%lld)", (long long)b, (long long)m0, (long long)m1, (long long)rule.window,
           (long long)rule.sinks, (long long)rule.full_from, (long long)rule.offset);
}

// query_block_visibility(rule, n0, n1, bm).fully_visible(b) == tile_fully_visible on the
// unclipped query tile [b bm, (b + 1) bm), as the dK/dV loop calls it, for b in [0, n_blocks).
static void check_query_block_visibility(const MaskRule& rule, int64_t n0, int64_t n1, int64_t bm,
                                         int64_t n_blocks) {
  const QueryBlockVisibility qv = query_block_visibility(rule, n0, n1, bm);
  for (int64_t b = 0; b < n_blocks; ++b)
    EXPECT(qv.fully_visible(int32_t(b)) == rule.tile_fully_visible(b * bm, b * bm + bm, n0, n1),
           "query_block_visibility disagrees on tile %lld of keys [%lld, %lld) (w=%lld s=%lld "
           "ff=%lld offset=%lld)", (long long)b, (long long)n0, (long long)n1,
           (long long)rule.window, (long long)rule.sinks, (long long)rule.full_from,
           (long long)rule.offset);
}

// VisitOrder(r).block(t) for t < n_visits is `first` then `second`, each in order.
static void check_visit_order(const TwoRanges& r) {
  std::vector<int64_t> expected;
  for (const Range& range : {r.first, r.second})
    for (int64_t b = range.begin; b < range.end; ++b) expected.push_back(b);
  const VisitOrder order(r);
  EXPECT(order.n_visits == int32_t(expected.size()), "VisitOrder counts %d visits, not %zu",
         order.n_visits, expected.size());
  for (int32_t t = 0; t < order.n_visits && t < int32_t(expected.size()); ++t)
    EXPECT(order.block(t) == expected[t], "VisitOrder visit %d is block %d, not %lld", t,
           order.block(t), (long long)expected[t]);
}

// The same far from the small cases: 64-bit windows, sinks and full_from, tile indices near 2^31.
static int64_t check_block_visibility_far() {
  int64_t cases = 0;
  const int64_t big = int64_t(1) << 40;
  for (int64_t window : {int64_t(1), int64_t(4096), big, INT64_MAX})
    for (int64_t sinks : {int64_t(0), int64_t(64), big})
      for (int64_t full_from : {int64_t(0), int64_t(3) << 33, INT64_MAX})
        for (int64_t offset : {int64_t(0), (int64_t(1) << 31) * 64 - 128, -int64_t(100)})
          for (int64_t m0 : {int64_t(0), int64_t(1) << 36}) {
            const MaskRule rule{window, sinks, full_from, offset};
            const BlockVisibility bv = block_visibility(rule, m0, m0 + 32, 64);
            for (int64_t b : {int64_t(0), int64_t(1), int64_t(63), (int64_t(1) << 25) + 7,
                              int64_t(INT32_MAX) - 1, int64_t(INT32_MAX)}) {
              EXPECT(bv.fully_visible(int32_t(b)) ==
                         rule.tile_fully_visible(m0, m0 + 32, b * 64, b * 64 + 64),
                     "block_visibility disagrees far out: b=%lld w=%lld s=%lld ff=%lld off=%lld "
                     "m0=%lld", (long long)b, (long long)window, (long long)sinks,
                     (long long)full_from, (long long)offset, (long long)m0);
              const int64_t n0 = m0 + offset - 8;  // keys around the rows' diagonal
              const QueryBlockVisibility qv = query_block_visibility(rule, n0, n0 + 16, 32);
              EXPECT(qv.fully_visible(int32_t(b)) ==
                         rule.tile_fully_visible(b * 32, b * 32 + 32, n0, n0 + 16),
                     "query_block_visibility disagrees far out: b=%lld w=%lld s=%lld ff=%lld "
                     "off=%lld n0=%lld", (long long)b, (long long)window, (long long)sinks,
                     (long long)full_from, (long long)offset, (long long)n0);
              ++cases;
            }
          }
  return cases;
}

static void check_case(int64_t lq, int64_t lk, int64_t window, int64_t sinks, int64_t full_from,
                       int64_t bm, int64_t bn) {
  const MaskRule rule{window, sinks, full_from, lk - lq};
  const int64_t mblocks = ceil_div(lq, bm), nblocks = ceil_div(lk, bn);
  for (int64_t mb = 0; mb < mblocks; ++mb) {
    const int64_t m0 = mb * bm, m1 = min64(m0 + bm, lq);
    const std::vector<int> counts = visit_counts(key_blocks(rule, m0, m1, bn, lk), nblocks);
    check_visit_order(key_blocks(rule, m0, m1, bn, lk));
    check_block_visibility(rule, m0, m1, bn, nblocks + 2);
    for (int64_t nb = 0; nb < nblocks; ++nb) {
      const int64_t n0 = nb * bn, n1 = min64(n0 + bn, lk);
      bool any = false, all = true;
      for (int64_t i = m0; i < m1; ++i)
        for (int64_t j = n0; j < n1; ++j) {
          any |= rule.visible(i, j);
          all &= rule.visible(i, j);
          const TwoRanges keys = rule.row_keys(i);
          const bool in_keys = (j >= keys.first.begin && j < keys.first.end) ||
                               (j >= keys.second.begin && j < keys.second.end);
          EXPECT(in_keys == rule.visible(i, j), "row_keys(%lld) disagrees with visible at key %lld",
                 (long long)i, (long long)j);
        }
      EXPECT(counts[nb] <= 1, "key block %lld visited %d times (lq=%lld lk=%lld w=%lld s=%lld ff=%lld)",
             (long long)nb, counts[nb], (long long)lq, (long long)lk, (long long)window,
             (long long)sinks, (long long)full_from);
      EXPECT(!any || counts[nb] == 1, "visible key block %lld of query block %lld skipped "
             "(lq=%lld lk=%lld w=%lld s=%lld ff=%lld)", (long long)nb, (long long)mb,
             (long long)lq, (long long)lk, (long long)window, (long long)sinks, (long long)full_from);
      EXPECT(any || counts[nb] == 0, "key block %lld visited by query block %lld, which sees "
             "none of it (lq=%lld lk=%lld w=%lld s=%lld ff=%lld)", (long long)nb, (long long)mb,
             (long long)lq, (long long)lk, (long long)window, (long long)sinks, (long long)full_from);
      EXPECT(!rule.tile_fully_visible(m0, m1, n0, n1) || all,
             "tile (%lld, %lld) claimed fully visible", (long long)mb, (long long)nb);
    }
  }
  // Backward: query blocks that see each key block.
  for (int64_t nb = 0; nb < nblocks; ++nb) {
    const int64_t n0 = nb * bn, n1 = min64(n0 + bn, lk);
    const std::vector<int> counts = visit_counts(query_blocks(rule, n0, n1, bm, lq), mblocks);
    check_visit_order(query_blocks(rule, n0, n1, bm, lq));
    // The dK/dV loop tests per warp, a slice of the block's keys (unclipped); and the block.
    for (int64_t key0 = n0; key0 < n0 + bn; key0 += 4)
      check_query_block_visibility(rule, key0, key0 + 4, bm, mblocks + 2);
    check_query_block_visibility(rule, n0, n1, bm, mblocks + 2);
    for (int64_t mb = 0; mb < mblocks; ++mb) {
      const int64_t m0 = mb * bm, m1 = min64(m0 + bm, lq);
      bool any = false;
      for (int64_t i = m0; i < m1; ++i)
        for (int64_t j = n0; j < n1; ++j) any |= rule.visible(i, j);
      EXPECT(counts[mb] <= 1, "query block %lld visited %d times", (long long)mb, counts[mb]);
      EXPECT(!any || counts[mb] == 1, "query block %lld seeing key block %lld skipped "
             "(lq=%lld lk=%lld w=%lld s=%lld ff=%lld)", (long long)mb, (long long)nb,
             (long long)lq, (long long)lk, (long long)window, (long long)sinks, (long long)full_from);
      EXPECT(any || counts[mb] == 0, "query block %lld visited for key block %lld, of which it "
             "sees nothing (lq=%lld lk=%lld w=%lld s=%lld ff=%lld)", (long long)mb, (long long)nb,
             (long long)lq, (long long)lk, (long long)window, (long long)sinks, (long long)full_from);
    }
  }
}

// tile_rule(rule, i0, j0).visible(di, dj) == rule.visible(i0 + di, j0 + dj) on a 64 x 64 tile.
static void check_tile_rule(const MaskRule& rule, int64_t i0, int64_t j0) {
  const TileRule tile = tile_rule(rule, i0, j0);
  for (int32_t di = 0; di < 64; ++di)
    for (int32_t dj = 0; dj < 64; ++dj)
      EXPECT(tile.visible(di, dj) == rule.visible(i0 + di, j0 + dj),
             "tile rule at (%lld, %lld) + (%d, %d): w=%lld s=%lld ff=%lld off=%lld", (long long)i0,
             (long long)j0, di, dj, (long long)rule.window, (long long)rule.sinks,
             (long long)rule.full_from, (long long)rule.offset);
}

static int64_t check_tile_rules() {
  int64_t cases = 0;
  const int64_t big = int64_t(1) << 40;  // past int32: the clamping must keep the answers
  for (int64_t offset : {int64_t(0), int64_t(7), int64_t(100), big})
    for (int64_t window : {int64_t(1), int64_t(3), int64_t(40), int64_t(100), big, 4 * big})
      for (int64_t sinks : {int64_t(0), int64_t(5), int64_t(70), big})
        for (int64_t full_from : {int64_t(0), int64_t(90), int64_t(150), big, 4 * big})
          for (int64_t i0 : {int64_t(0), int64_t(32), int64_t(96), big - 40})
            for (int64_t j0 : {int64_t(0), int64_t(40), int64_t(64), int64_t(120), big})
              check_tile_rule(MaskRule{window, sinks, full_from, offset}, i0, j0), ++cases;
  return cases;
}

int main() {
  int64_t cases = check_tile_rules() + check_block_visibility_far();
  for (int64_t lk : {1, 2, 7, 16, 33, 64, 100}) {
    for (int64_t lq : {int64_t(1), lk / 2 + 1, lk}) {
      if (lq > lk) continue;
      for (int64_t window : {int64_t(1), int64_t(2), int64_t(5), int64_t(16), lk}) {
        for (int64_t sinks : {0, 1, 3, 8, 20}) {
          for (int64_t ff : {int64_t(0), int64_t(5), lk / 2, lk - 1, lk}) {
            for (auto [bm, bn] : {std::pair<int64_t, int64_t>{4, 4}, {8, 4}, {4, 16}, {16, 16}}) {
              check_case(lq, lk, window, sinks, ff, bm, bn);
              ++cases;
            }
          }
        }
      }
    }
  }
  std::printf("%lld cases, %d failures\n", (long long)cases, failures);
  return failures == 0 ? 0 : 1;
}
