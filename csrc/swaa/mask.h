// The one visibility rule (docs/architecture.md, "The masking rule") and the block ranges derived from it.
// Every kernel (CPU, CUDA forward/backward/decode, emulated) calls this header; the Python
// reference (swaa_ext/reference.py) mirrors `visible` line for line.
//
//   query row i of Lq, key column j of Lk, bottom-right aligned: p = i + (Lk - Lq)
//   visible(i, j) = j <= p && (p - j < window || j < sinks || p >= full_from)
//
// `window` counts keys including the query itself (HF convention). "No window" is encoded by the
// torch boundary as window = Lk (then p - j < window always holds), so kernels have no special case.
#pragma once
#include <climits>
#include <cstdint>

#if defined(__CUDACC__)
#define SWAA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SWAA_HOST_DEVICE inline
#endif

namespace swaa {

SWAA_HOST_DEVICE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
SWAA_HOST_DEVICE int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
SWAA_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Half-open range [begin, end) of block indices (or of rows/keys).
struct Range {
  int64_t begin;
  int64_t end;
  SWAA_HOST_DEVICE bool empty() const { return end <= begin; }
};

// Two disjoint, ordered ranges: visiting `first` then `second` touches each block once.
struct TwoRanges {
  Range first;
  Range second;
};

// The rule for one batch row (full_from may differ per row).
struct MaskRule {
  int64_t window;     // >= 1; window >= Lk means full causal attention
  int64_t sinks;      // >= 0; keys [0, sinks) are always visible (causality permitting)
  int64_t full_from;  // queries at absolute position >= full_from see every earlier key
  int64_t offset;     // Lk - Lq: absolute position of query row 0

  SWAA_HOST_DEVICE bool visible(int64_t i, int64_t j) const {
    const int64_t p = i + offset;
    return j <= p && (p - j < window || j < sinks || p >= full_from);
  }

  // The keys row i sees as two ranges, the sinks [0, sink_end) and the window [begin, i + offset]
  // (all earlier keys at or past full_from): `visible` per row, for masking a row at a time.
  SWAA_HOST_DEVICE TwoRanges row_keys(int64_t i) const {
    const int64_t p = i + offset;
    const int64_t begin = p >= full_from ? 0 : max64(p - window + 1, 0);
    return {{0, min64(sinks, p + 1)}, {begin, p + 1}};
  }

  // True when every (row, key) pair of the tile rows [m0, m1) x keys [n0, n1) is visible, so
  // the tile can skip masking. Conservative: false only costs the mask evaluation.
  SWAA_HOST_DEVICE bool tile_fully_visible(int64_t m0, int64_t m1, int64_t n0, int64_t n1) const {
    const int64_t p_min = m0 + offset;
    const int64_t p_max = m1 - 1 + offset;
    const bool causal_ok = n1 - 1 <= p_min;
    const bool window_ok = p_max - n0 < window || n1 <= sinks || p_min >= full_from;
    return causal_ok && window_ok;
  }
};

// floor(a / b) for b > 0 (C++ division truncates towards zero); no overflow for any a.
SWAA_HOST_DEVICE int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : (a + 1) / b - 1;
}
SWAA_HOST_DEVICE int32_t clamp_to_int32(int64_t x) {
  return int32_t(x < INT32_MIN ? INT32_MIN : x > INT32_MAX ? INT32_MAX : x);
}

// `tile_fully_visible` along a visiting order, as thresholds on the block index b worked out
// once: a loop then tests a 32-bit index against three numbers per tile instead of the 64-bit
// rule. Every kernel's loop uses it, in one of two forms:
//   - block_visibility: fixed rows [m0, m1), key tiles [b block, (b + 1) block) (forward, dQ,
//     decode);
//   - query_block_visibility: fixed keys [n0, n1), query tiles [b block, (b + 1) block) (dK/dV).
// Exactly equal to tile_fully_visible for 0 <= b < 2^31 (tests/cpp/test_mask.cpp).
struct BlockVisibility {
  int32_t causal_last;   // b <= causal_last: the tile's last key is at or before every row
  int32_t window_after;  // b > window_after: the tile's first key is in every row's window
  // Pairs the window does not apply to: b <= exempt_last, or every b when exempt_all. Key tiles:
  // the tile's keys are all sinks / every row is at or past full_from; query tiles: the other way.
  int32_t exempt_last;
  bool exempt_all;

  SWAA_HOST_DEVICE bool fully_visible(int32_t b) const {
    return b <= causal_last && (b > window_after || b <= exempt_last || exempt_all);
  }
};

SWAA_HOST_DEVICE BlockVisibility block_visibility(const MaskRule& rule, int64_t m0, int64_t m1,
                                                  int64_t block) {
  const int64_t p_min = m0 + rule.offset, p_max = m1 - 1 + rule.offset;
  // (b + 1) block - 1 <= p_min;  p_max - b block < window;  (b + 1) block <= sinks.
  return BlockVisibility{clamp_to_int32(floor_div(p_min + 1, block) - 1),
                         clamp_to_int32(floor_div(p_max - rule.window, block)),
                         clamp_to_int32(floor_div(rule.sinks, block) - 1),
                         p_min >= rule.full_from};
}

// For query tiles the three conditions bound b from the other side, so the test holds on the
// mirrored index -b, where each takes the key-tile form above.
struct QueryBlockVisibility {
  BlockVisibility mirrored;
  SWAA_HOST_DEVICE bool fully_visible(int32_t b) const { return mirrored.fully_visible(-b); }
};

SWAA_HOST_DEVICE QueryBlockVisibility query_block_visibility(const MaskRule& rule, int64_t n0,
                                                             int64_t n1, int64_t block) {
  // Positions and rule terms past 2^62 change no answer for |b| < 2^31 and tiles < 2^20: capping
  // them keeps the sums below from overflowing.
  constexpr int64_t kFar = int64_t(1) << 62;
  const int64_t window = min64(rule.window, kFar), full_from = min64(rule.full_from, kFar);
  // With p(b) = b block + offset: n1 - 1 <= p(b);  p(b) + block - 1 - n0 < window;
  // p(b) >= full_from. Each as -b <= x or -b > x.
  return {BlockVisibility{clamp_to_int32(floor_div(rule.offset + 1 - n1, block)),
                          clamp_to_int32(-floor_div(window - block + n0 - rule.offset, block) - 1),
                          clamp_to_int32(floor_div(rule.offset - full_from, block)),
                          n1 <= rule.sinks}};
}

// The visiting order of two block ranges in 32 bits: visit t is block(t), `first` then `second`
// (key_blocks: the sink blocks, then the window blocks). Visit counts and block indices are
// below a sequence length over a tile size, so 32 bits hold them: three registers instead of four
// 64-bit values carried through a kernel's loop.
struct VisitOrder {
  int32_t first_begin, n_first, second_begin;
  int32_t n_visits;

  SWAA_HOST_DEVICE explicit VisitOrder(const TwoRanges& blocks)
      : first_begin(int32_t(blocks.first.begin)),
        n_first(int32_t(blocks.first.end - blocks.first.begin)),
        second_begin(int32_t(blocks.second.begin)),
        n_visits(int32_t((blocks.first.end - blocks.first.begin) +
                         (blocks.second.end - blocks.second.begin))) {}
  SWAA_HOST_DEVICE int32_t block(int32_t t) const {
    return t < n_first ? first_begin + t : second_begin + (t - n_first);
  }
};

// The rule on one tile in 32-bit arithmetic, relative to the tile's first row i0 and first key
// j0 (MaskRule::at): tile.visible(di, dj) == rule.visible(i0 + di, j0 + dj) for every
// 0 <= di, dj < kTileRuleSpan. The offsets are clamped to +-kTileRuleSpan * 2, which changes
// no comparison in that range. The kernels' edge tiles use it instead of the 64-bit rule.
inline constexpr int32_t kTileRuleSpan = 1 << 20;

struct TileRule {
  int32_t diag;      // causal:      dj <= di + diag          (diag = p(i0) - j0)
  int32_t band;      // in window:   dj > di + band           (band = diag - window)
  int32_t sinks;     // a sink:      dj < sinks               (sinks - j0)
  int32_t full_row;  // full row:    di >= full_row           (full_from - p(i0))

  // Bitwise, not short-circuit: four compares and no branch in an unrolled tile loop.
  SWAA_HOST_DEVICE bool visible(int32_t di, int32_t dj) const {
    return (dj <= di + diag) & ((dj > di + band) | (dj < sinks) | (di >= full_row));
  }
};

SWAA_HOST_DEVICE int32_t clamp_to_tile_span(int64_t x) {
  constexpr int64_t kLimit = 2 * int64_t(kTileRuleSpan);
  return int32_t(x < -kLimit ? -kLimit : x > kLimit ? kLimit : x);
}

SWAA_HOST_DEVICE TileRule tile_rule(const MaskRule& rule, int64_t i0, int64_t j0) {
  const int64_t p0 = i0 + rule.offset;
  return TileRule{clamp_to_tile_span(p0 - j0), clamp_to_tile_span(p0 - j0 - rule.window),
                  clamp_to_tile_span(rule.sinks - j0), clamp_to_tile_span(rule.full_from - p0)};
}

// Merge two ordered intervals of absolute indices into block ranges of size `block`, clipped to
// [0, n_blocks). The second range starts where the first ends when rounding makes them overlap.
SWAA_HOST_DEVICE TwoRanges to_block_ranges(Range a, Range b, int64_t block, int64_t n_blocks) {
  TwoRanges r;
  r.first = {max64(a.begin, 0) / block, min64(ceil_div(a.end, block), n_blocks)};
  if (r.first.empty()) r.first = {0, 0};
  r.second = {max64(b.begin, 0) / block, min64(ceil_div(b.end, block), n_blocks)};
  if (!r.first.empty()) r.second.begin = max64(r.second.begin, r.first.end);
  if (r.second.empty()) r.second = {r.first.end, r.first.end};
  return r;
}

// The keys that query rows [m0, m1) (m0 < m1) see, in two ordered ranges: the sinks, then the
// window. Rows at or past full_from see every key up to the diagonal: one interval, `first`.
SWAA_HOST_DEVICE TwoRanges key_ranges(const MaskRule& rule, int64_t m0, int64_t m1) {
  const int64_t p_min = m0 + rule.offset;
  const int64_t p_max = m1 - 1 + rule.offset;
  if (p_max >= rule.full_from) return {{0, p_max + 1}, {p_max + 1, p_max + 1}};
  const Range window = {max64(p_min - rule.window + 1, 0), p_max + 1};
  return {{0, min64(rule.sinks, window.begin)}, window};
}

// Key blocks that query rows [m0, m1) must visit: the sink blocks, then the window blocks.
SWAA_HOST_DEVICE TwoRanges key_blocks(const MaskRule& rule, int64_t m0, int64_t m1,
                                      int64_t block_n, int64_t lk) {
  const int64_t n_blocks = ceil_div(lk, block_n);
  if (m1 <= m0) return {{0, 0}, {0, 0}};
  const TwoRanges keys = key_ranges(rule, m0, m1);
  if (keys.first.empty()) return to_block_ranges(keys.second, {0, 0}, block_n, n_blocks);
  if (keys.second.empty()) return to_block_ranges(keys.first, {0, 0}, block_n, n_blocks);
  return to_block_ranges(keys.first, keys.second, block_n, n_blocks);
}

// Query blocks (of `block_m` rows) that see at least one key of [n0, n1), for the backward pass:
// the rows whose window reaches the block, then the rows at or past full_from. A block holding
// sinks is seen by every later row.
SWAA_HOST_DEVICE TwoRanges query_blocks(const MaskRule& rule, int64_t n0, int64_t n1,
                                        int64_t block_m, int64_t lq) {
  const int64_t n_blocks = ceil_div(lq, block_m);
  const int64_t lk = lq + rule.offset;
  if (n1 <= n0) return {{0, 0}, {0, 0}};
  // Absolute query positions p, converted to rows by subtracting the offset.
  const int64_t window_end = n0 < rule.sinks ? lk : min64(n1 - 1 + rule.window, lk);
  const Range window = {n0 - rule.offset, window_end - rule.offset};
  Range full = {max64(n0, rule.full_from) - rule.offset, lk - rule.offset};
  // No row at or past full_from: no block (rounding an empty [i, i) out would give block i / bm,
  // a visit to a query block that sees nothing of these keys).
  if (full.empty()) full = {0, 0};
  if (full.begin <= window.end) {
    const Range merged = {window.begin, max64(window.end, full.end)};
    return to_block_ranges(merged, {0, 0}, block_m, n_blocks);
  }
  return to_block_ranges(window, full, block_m, n_blocks);
}

}  // namespace swaa
