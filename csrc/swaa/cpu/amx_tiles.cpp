// AMX tile products (amx_tiles.h). Only the code between the target pragmas is compiled for AMX
// and AVX-512, inside an anonymous namespace; the headers above it and the entry points at the
// end (amx_tiles.h's declarations) are not, so no function this file shares with the others (an
// inline function of a header, a std:: template) can come out of it with instructions another
// CPU lacks.
#include "amx_tiles.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "exp512.h"
#include "vec_math.h"

namespace swaa::cpu {
namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();  // (computed outside the
}  // namespace                                                    //  AMX / AVX-512 code)
}  // namespace swaa::cpu

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")

namespace swaa::cpu {
namespace {

// Palette 1, every tile 64 bytes a row; the products and A tiles (tmm0-4) `rows` rows, the B
// tiles (tmm5, 6) 16.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
  TileConfig() = default;
  explicit TileConfig(int64_t a_rows) {
    for (int t = 0; t < 7; ++t) bytes_per_row[t] = 64, rows[t] = t < 5 ? a_rows : kAmxRows;
  }
};
void load_tile_config(int64_t rows) {
  // Kept in static memory: GCC treats ldtilecfg's operand as the first 8 bytes only and drops
  // the stores to the rest of a stack copy.
  static const auto configs = [] {
    std::array<TileConfig, kAmxRows + 1> all;
    for (int64_t r = 1; r <= kAmxRows; ++r) all[r] = TileConfig(r);
    return all;
  }();
  _tile_loadconfig(&configs[rows < kAmxRows ? rows : kAmxRows]);
}
void release_tiles() { _tile_release(); }

// Tile registers (GCC's intrinsics take them as literals): C products in tmm0-3, A in tmm4,
// B in tmm5 and tmm6. Every tile is 16 rows of 64 bytes; a B tile is 512 bf16.
constexpr int64_t kTile = 512;
constexpr int64_t kPairsPerRow = 16;  // bf16 pairs in a 64-byte tile row

// Mask of the first n of 16 lanes (n may be negative or past 16).
inline __mmask16 first_lanes(int64_t n) {
  return _cvtu32_mask16(n >= 16 ? 0xffffu : n > 0 ? (1u << n) - 1 : 0u);
}

// Two bf16 rows a, b of 32 dims as pairs (a[e], b[e]): dims [0, 16), then [16, 32).
inline __m512i pairs_low(__m512i a, __m512i b) {
  alignas(64) static const uint16_t kLow[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38,
                                                7, 39, 8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13,
                                                45, 14, 46, 15, 47};
  return _mm512_permutex2var_epi16(a, _mm512_load_si512(kLow), b);
}
inline __m512i pairs_high(__m512i a, __m512i b) {
  alignas(64) static const uint16_t kHigh[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53,
                                                 22, 54, 23, 55, 24, 56, 25, 57, 26, 58, 27, 59,
                                                 28, 60, 29, 61, 30, 62, 31, 63};
  return _mm512_permutex2var_epi16(a, _mm512_load_si512(kHigh), b);
}

// The pair block of a value tile holding keys [32 j, 32 j + 32) with only the first n < 32 of them
// kept: copied per chunk with the other keys' lanes zeroed (the probability there is 0, but
// 0 * NaN from a slot nobody wrote would not be). Returns the copy (chunk stride kTile).
const bf16* masked_pair_block(const bf16* block, int64_t chunk_stride, int64_t n, int64_t d,
                              bf16* out) {
  for (int64_t c = 0; c < d / 16; ++c) {
    for (int64_t r = 0; r < 16; ++r) {  // row r: keys 2r (even lanes) and 2r + 1 (odd lanes)
      const __mmask32 keep = 2 * r + 1 < n ? 0xffffffffu : 2 * r < n ? 0x55555555u : 0u;
      _mm512_storeu_si512(out + c * kTile + r * 32,
                          _mm512_maskz_loadu_epi16(keep, block + c * chunk_stride + r * 32));
    }
  }
  return out;
}

void pack_keys(int64_t cols, int64_t d, const bf16* k, int64_t ldk, bf16* out) {
  uint32_t* words = reinterpret_cast<uint32_t*>(out);
  const int64_t groups = (cols + kAmxKeyGroup - 1) / kAmxKeyGroup;
  for (int64_t t = 0; t < groups * kAmxKeyGroup; ++t) {
    uint32_t* group = words + t / 16 * 8 * d;  // 16 d elements = 8 d words a group
    for (int64_t j = 0; j < d / 2; j += kPairsPerRow) {
      uint32_t pairs[kPairsPerRow] = {};
      if (t < cols) std::memcpy(pairs, k + t * ldk + 2 * j, sizeof pairs);
      for (int64_t i = 0; i < kPairsPerRow; ++i) group[(j + i) * 16 + t % 16] = pairs[i];
    }
  }
}

void pack_values(int64_t cols, int64_t d, const bf16* v, int64_t ldv, bf16* out) {
  constexpr int64_t chunk_stride = 16 * AmxScratch::kMaxCols;
  const int64_t blocks = (cols + kAmxPairBlock - 1) / kAmxPairBlock;
  for (int64_t r = 0; r < blocks * 16; ++r) {  // pair row r: keys 2r, 2r + 1
    const int64_t t0 = 2 * r, t1 = t0 + 1;
    for (int64_t h = 0; h < d / 32; ++h) {  // 32 dims at a time: chunks 2h and 2h + 1
      const __m512i a = t0 < cols ? _mm512_loadu_si512(v + t0 * ldv + h * 32)
                                  : _mm512_setzero_si512();
      const __m512i b = t1 < cols ? _mm512_loadu_si512(v + t1 * ldv + h * 32)
                                  : _mm512_setzero_si512();
      _mm512_storeu_si512(out + 2 * h * chunk_stride + r * 32, pairs_low(a, b));
      _mm512_storeu_si512(out + (2 * h + 1) * chunk_stride + r * 32, pairs_high(a, b));
    }
  }
}

// s[r][c] <- q[m + r] . k[c] for the 16 rows from row m (s: 16 x kMaxCols), on the 16-key
// groups of the key tile that hold a column of `seen` (the columns the 16 rows see; the
// others are left as they were).
void score_block(int64_t m, int64_t cols, int64_t d, const bf16* q,
                 const bf16* const (&key_segments)[kAmxSegments], uint64_t seen, float* s) {
  const int64_t chunks = d / 32, groups = (cols + 15) / 16, group_stride = 16 * d;
  // Group j's B tile of dim chunk c.
  const auto b_tile = [&](int64_t j, int64_t c) {
    return key_segments[j / 2] + j % 2 * group_stride + c * kTile;
  };
  // Columns 16j..16j+15 accumulate in tmm j (up to 4 independent chains); each 32-dim chunk of
  // the rows is loaded once (tmm4) for all of them, B alternates tmm5/6.
  bool on[4];
  for (int64_t j = 0; j < 4; ++j) {
    on[j] = j < groups && key_segments[j / 2] != nullptr && ((seen >> (16 * j)) & 0xffffu) != 0;
  }
  if (on[0]) _tile_zero(0);
  if (on[1]) _tile_zero(1);
  if (on[2]) _tile_zero(2);
  if (on[3]) _tile_zero(3);
  for (int64_t c = 0; c < chunks; ++c) {
    _tile_loadd(4, q + m * d + c * 32, d * sizeof(bf16));
    if (on[0]) {
      _tile_loadd(5, b_tile(0, c), 64);
      _tile_dpbf16ps(0, 4, 5);
    }
    if (on[1]) {
      _tile_loadd(6, b_tile(1, c), 64);
      _tile_dpbf16ps(1, 4, 6);
    }
    if (on[2]) {
      _tile_loadd(5, b_tile(2, c), 64);
      _tile_dpbf16ps(2, 4, 5);
    }
    if (on[3]) {
      _tile_loadd(6, b_tile(3, c), 64);
      _tile_dpbf16ps(3, 4, 6);
    }
  }
  constexpr int64_t lds = AmxScratch::kMaxCols * sizeof(float);
  if (on[0]) _tile_stored(0, s, lds);
  if (on[1]) _tile_stored(1, s + 16, lds);
  if (on[2]) _tile_stored(2, s + 32, lds);
  if (on[3]) _tile_stored(3, s + 48, lds);
}

// The 16 lanes of v[r] reduced by op (max or +) into lane r of the result, for 16 rows at
// once: three unpack/shuffle levels of pairs, then across the 128-bit lanes, 45 instructions
// where reducing each row on its own takes 8 and a dependency chain apiece.
template <typename Op>
inline __m512 reduce_rows(const __m512 (&v)[kAmxRows], Op op) {
  __m512 pairs[8], quads[4], halves[2];
  for (int k = 0; k < 8; ++k)  // per 128-bit lane: [a, b, a, b] partials of rows 2k, 2k + 1
    pairs[k] = op(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]),
                  _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 4; ++k) {  // per 128-bit lane: rows 4k .. 4k + 3 over that lane
    const __m512d c = _mm512_castps_pd(pairs[2 * k]), d = _mm512_castps_pd(pairs[2 * k + 1]);
    quads[k] = op(_mm512_castpd_ps(_mm512_unpacklo_pd(c, d)),
                  _mm512_castpd_ps(_mm512_unpackhi_pd(c, d)));
  }
  constexpr int kEven = _MM_SHUFFLE(2, 0, 2, 0), kOdd = _MM_SHUFFLE(3, 1, 3, 1);
  for (int k = 0; k < 2; ++k) {  // 128-bit lanes (0 with 1, 2 with 3) of quads 2k, 2k + 1
    halves[k] = op(_mm512_shuffle_f32x4(quads[2 * k], quads[2 * k + 1], kEven),
                   _mm512_shuffle_f32x4(quads[2 * k], quads[2 * k + 1], kOdd));
  }
  return op(_mm512_shuffle_f32x4(halves[0], halves[1], kEven),
            _mm512_shuffle_f32x4(halves[0], halves[1], kOdd));
}

// The softmax step of 16 rows of the key tile (amx_attend), `live` of them real and
// `tile_rows` read by the tile products (the rest padding): their scores s (16 x kMaxCols), the
// columns each sees (visible[r]; seen: all of them), their running max and
// sum (16 each) and accumulator rows (d floats apart); writes their probabilities p (16 x
// kMaxCols bf16, 0 where a row does not see a column) in the 32-column blocks `seen` touches
// (the others are left as they were).
void softmax_block(const float* s, int64_t live, int64_t tile_rows, const uint64_t* visible,
                   uint64_t seen, float scale, float* row_max, float* row_sum, float* acc,
                   int64_t d, bf16* p) {
  constexpr int kVectors = AmxScratch::kMaxCols / 16;
  constexpr int64_t lds = AmxScratch::kMaxCols;
  const auto lanes = [&](int64_t r, int i) {
    return _cvtu32_mask16(uint32_t(visible[r] >> (16 * i)) & 0xffffu);
  };
  const __m512 factor = _mm512_set1_ps(scale);
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  // Each row's max over the columns it sees (-inf for none).
  __m512 v[kAmxRows];
  for (int64_t r = 0; r < kAmxRows; ++r) {
    v[r] = neg_inf;
    for (int i = 0; i < kVectors && r < live; ++i) {
      if (((seen >> (16 * i)) & 0xffffu) == 0) continue;
      const __mmask16 k = lanes(r, i);
      v[r] = _mm512_mask_max_ps(v[r], k, v[r], _mm512_mul_ps(_mm512_loadu_ps(s + r * lds + 16 * i), factor));
    }
  }
  const __m512 block_max = reduce_rows(v, [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); });
  // Rows whose max rises past the margin move to it (always on their first keys: -inf);
  // their sums and accumulators scale by exp(old - new), 0 from -inf.
  const __m512 old_max = _mm512_loadu_ps(row_max);
  const __mmask16 moved = _mm512_cmp_ps_mask(
      block_max, _mm512_add_ps(old_max, _mm512_set1_ps(kAmxRescaleMargin)), _CMP_GT_OQ);
  alignas(64) float rescale[kAmxRows], shift[kAmxRows];
  _mm512_store_ps(rescale, exp512(_mm512_sub_ps(old_max, block_max)));
  _mm512_store_ps(shift, _mm512_mask_mov_ps(old_max, moved, block_max));
  __m512 sum = _mm512_mask_mul_ps(_mm512_loadu_ps(row_sum), moved, _mm512_loadu_ps(row_sum),
                                  _mm512_load_ps(rescale));
  for (uint32_t bits = _cvtmask16_u32(moved); bits != 0; bits &= bits - 1) {
    const int r = __builtin_ctz(bits);
    const __m512 by = _mm512_set1_ps(rescale[r]);
    float* row = acc + r * d;
    for (int64_t e = 0; e < d; e += 16) _mm512_storeu_ps(row + e, _mm512_mul_ps(_mm512_loadu_ps(row + e), by));
  }
  _mm512_storeu_ps(row_max, _mm512_load_ps(shift));
  // p = exp(scale s - max) on the columns seen, in bf16; each row's sum of them.
  for (int64_t r = 0; r < kAmxRows; ++r) {
    const __m512 row_shift = _mm512_set1_ps(shift[r]);
    v[r] = _mm512_setzero_ps();
    for (int i = 0; i < kVectors && r < tile_rows; i += 2) {
      if (((seen >> (16 * i)) & 0xffffffffu) == 0) continue;
      if (r >= live) {  // a padding row: p = 0 (the tile products read it)
        _mm512_storeu_si512(p + r * lds + 16 * i, _mm512_setzero_si512());
        continue;
      }
      const __m512 a = _mm512_maskz_mov_ps(
          lanes(r, i), exp512(_mm512_fmsub_ps(_mm512_loadu_ps(s + r * lds + 16 * i), factor, row_shift)));
      const __m512 b = _mm512_maskz_mov_ps(
          lanes(r, i + 1),
          exp512(_mm512_fmsub_ps(_mm512_loadu_ps(s + r * lds + 16 * i + 16), factor, row_shift)));
      v[r] = _mm512_add_ps(v[r], _mm512_add_ps(a, b));
      _mm512_storeu_si512(p + r * lds + 16 * i, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  }
  sum = _mm512_add_ps(sum, reduce_rows(v, [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); }));
  _mm512_storeu_ps(row_sum, sum);
}

// acc[m + r] <- acc[m + r] + sum_c p[r][c] v[c] for the 16 rows from row m (p: 16 x kMaxCols
// bf16; b_tile(j, c): the B tile of pair block j, dim chunk c), over the pair blocks holding a
// column of `seen` (the others' probabilities are 0).
template <typename BTile>
void accumulate_block(int64_t m, int64_t cols, int64_t d, const bf16* p,
                      const bf16* const (&value_blocks)[kAmxSegments], uint64_t seen,
                      BTile b_tile, float* acc) {
  const int64_t chunks = d / 16, blocks = (cols + 31) / 32;
  constexpr int64_t ldp = AmxScratch::kMaxCols * sizeof(bf16);
  // Per 64 dims: dims 16c..16c+15 of acc accumulate in tmm c (4 independent chains); each
  // 32-key block of p is loaded once (tmm4) for all of them, B alternates tmm5/6.
  for (int64_t c0 = 0; c0 < chunks; c0 += 4) {
    float* out = acc + m * d + c0 * 16;
    const int64_t ldo = d * sizeof(float);
    const bool four = chunks - c0 > 2;  // else the last two chunks of d = 32 (mod 64)
    _tile_loadd(0, out, ldo);
    _tile_loadd(1, out + 16, ldo);
    if (four) {
      _tile_loadd(2, out + 32, ldo);
      _tile_loadd(3, out + 48, ldo);
    }
    for (int64_t j = 0; j < blocks; ++j) {
      // no key of it seen: probabilities all 0
      if (value_blocks[j] == nullptr || ((seen >> (32 * j)) & 0xffffffffu) == 0) continue;
      _tile_loadd(4, p + j * 32, ldp);
      _tile_loadd(5, b_tile(j, c0), 64);
      _tile_dpbf16ps(0, 4, 5);
      _tile_loadd(6, b_tile(j, c0 + 1), 64);
      _tile_dpbf16ps(1, 4, 6);
      if (four) {
        _tile_loadd(5, b_tile(j, c0 + 2), 64);
        _tile_dpbf16ps(2, 4, 5);
        _tile_loadd(6, b_tile(j, c0 + 3), 64);
        _tile_dpbf16ps(3, 4, 6);
      }
    }
    _tile_stored(0, out, ldo);
    _tile_stored(1, out + 16, ldo);
    if (four) {
      _tile_stored(2, out + 32, ldo);
      _tile_stored(3, out + 48, ldo);
    }
  }
}

void attend(int64_t rows, int64_t cols, int64_t d, const bf16* q,
            const bf16* const (&key_segments)[kAmxSegments],
            const bf16* const (&value_blocks)[kAmxSegments], int64_t chunk_stride, float scale,
            float* row_max, float* row_sum, float* acc, AmxScratch& scratch) {
  // A partial last pair block of values is read from a masked copy.
  const int64_t full = cols / 32, blocks = (cols + 31) / 32;
  const bf16* tail = full < blocks && value_blocks[full] != nullptr
                         ? masked_pair_block(value_blocks[full], chunk_stride, cols - full * 32,
                                             d, scratch.v_tail.data())
                         : nullptr;
  const auto b_tile = [&](int64_t j, int64_t c) {
    return j < full ? value_blocks[j] + c * chunk_stride : tail + c * kTile;
  };
  float* s = scratch.s.data();
  bf16* p = scratch.p.data();
  for (int64_t m = 0; m < amx_padded_rows(rows); m += kAmxRows) {
    // The columns any of the 16 rows sees: key groups and pair blocks outside are skipped.
    uint64_t seen = 0;
    for (int64_t r = 0; r < kAmxRows; ++r) seen |= scratch.visible[m + r];
    if (seen == 0) continue;
    score_block(m, cols, d, q, key_segments, seen, s);
    const int64_t live = rows - m < kAmxRows ? rows - m : kAmxRows;
    softmax_block(s, live, rows < kAmxRows ? rows : kAmxRows, scratch.visible.data() + m, seen,
                  scale, row_max + m, row_sum + m, acc + m * d, d, p);
    accumulate_block(m, cols, d, p, value_blocks, seen, b_tile, acc);
  }
}

}  // namespace
}  // namespace swaa::cpu

#pragma GCC pop_options

namespace swaa::cpu {

bool amx_usable() { return cpu_isa() >= Isa::kAmx; }

void AmxTiles::configure(int64_t rows) {
  const int64_t tile_rows = rows < kAmxRows ? rows : kAmxRows;
  if (tile_rows == loaded_rows_) return;
  load_tile_config(tile_rows);
  loaded_rows_ = tile_rows;
}
AmxTiles::~AmxTiles() {
  if (loaded_rows_ != 0) release_tiles();
}

void amx_pack_keys(int64_t cols, int64_t d, const bf16* k, int64_t ldk, bf16* out) {
  pack_keys(cols, d, k, ldk, out);
}
void amx_pack_values(int64_t cols, int64_t d, const bf16* v, int64_t ldv, bf16* out) {
  pack_values(cols, d, v, ldv, out);
}
void amx_attend(int64_t rows, int64_t cols, int64_t d, const bf16* q,
                const bf16* const (&key_segments)[kAmxSegments],
                const bf16* const (&value_blocks)[kAmxSegments], int64_t chunk_stride,
                float scale, float* row_max, float* row_sum, float* acc, AmxScratch& scratch) {
  attend(rows, cols, d, q, key_segments, value_blocks, chunk_stride, scale, row_max, row_sum, acc,
         scratch);
}

}  // namespace swaa::cpu
