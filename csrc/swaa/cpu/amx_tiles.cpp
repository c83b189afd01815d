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

#include "vec_math.h"

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

// p (rows x cols float) -> bf16 rows of kMaxCols columns, zero past cols (padding rows untouched).
void pack_probabilities(int64_t rows, int64_t cols, const float* p, int64_t ldp, bf16* out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < AmxScratch::kMaxCols; c += 32) {
      const __m512 a = _mm512_maskz_loadu_ps(first_lanes(cols - c), p + r * ldp + c);
      const __m512 b = _mm512_maskz_loadu_ps(first_lanes(cols - c - 16), p + r * ldp + c + 16);
      _mm512_storeu_si512(out + r * AmxScratch::kMaxCols + c, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  }
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

void scores(int64_t rows, int64_t cols, int64_t d, const bf16* q,
            const bf16* const (&key_segments)[kAmxSegments], float scale, float* s, int64_t lds) {
  const int64_t chunks = d / 32, groups = (cols + 15) / 16, group_stride = 16 * d;
  // Group j's B tile of dim chunk c.
  const auto b_tile = [&](int64_t j, int64_t c) {
    return key_segments[j / 2] + j % 2 * group_stride + c * kTile;
  };
  // Per 16 rows: columns 16j..16j+15 of s accumulate in tmm j (up to 4 independent chains);
  // each 32-dim chunk of the rows is loaded once (tmm4) for all of them, B alternates tmm5/6.
  // Group j is computed when it is in the tile and its segment is given.
  bool on[4];
  for (int64_t j = 0; j < 4; ++j) on[j] = j < groups && key_segments[j / 2] != nullptr;
  for (int64_t m = 0; m < amx_padded_rows(rows); m += kAmxRows) {
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
    float* out = s + m * lds;
    if (on[0]) _tile_stored(0, out, lds * sizeof(float));
    if (on[1]) _tile_stored(1, out + 16, lds * sizeof(float));
    if (on[2]) _tile_stored(2, out + 32, lds * sizeof(float));
    if (on[3]) _tile_stored(3, out + 48, lds * sizeof(float));
  }
  const __m512 factor = _mm512_set1_ps(scale);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; c += 16) {
      float* x = s + r * lds + c;
      _mm512_storeu_ps(x, _mm512_mul_ps(_mm512_loadu_ps(x), factor));
    }
  }
}

void accumulate(int64_t rows, int64_t cols, int64_t d, const float* p, int64_t ldp,
                const bf16* const (&value_blocks)[kAmxSegments], int64_t chunk_stride, float* acc,
                AmxScratch& scratch) {
  pack_probabilities(rows, cols, p, ldp, scratch.p.data());
  const int64_t chunks = d / 16, blocks = (cols + 31) / 32;
  // A partial last pair block is read from a masked copy.
  const int64_t full = cols / 32;
  const bf16* tail = full < blocks && value_blocks[full] != nullptr
                         ? masked_pair_block(value_blocks[full], chunk_stride, cols - full * 32,
                                             d, scratch.v_tail.data())
                         : nullptr;
  const auto b_tile = [&](int64_t j, int64_t c) {
    return j < full ? value_blocks[j] + c * chunk_stride : tail + c * kTile;
  };
  constexpr int64_t ldp16 = AmxScratch::kMaxCols * sizeof(bf16);
  // Per 16 rows and 64 dims: dims 16c..16c+15 of acc accumulate in tmm c (4 independent chains);
  // each 32-key block of p is loaded once (tmm4) for all of them, B alternates tmm5/6.
  for (int64_t m = 0; m < amx_padded_rows(rows); m += kAmxRows) {
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
        if (value_blocks[j] == nullptr) continue;  // no key of it seen: probabilities all 0
        _tile_loadd(4, scratch.p.data() + m * AmxScratch::kMaxCols + j * 32, ldp16);
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
void amx_scores(int64_t rows, int64_t cols, int64_t d, const bf16* q,
                const bf16* const (&key_segments)[kAmxSegments], float scale, float* s,
                int64_t lds) {
  scores(rows, cols, d, q, key_segments, scale, s, lds);
}
void amx_accumulate(int64_t rows, int64_t cols, int64_t d, const float* p, int64_t ldp,
                    const bf16* const (&value_blocks)[kAmxSegments], int64_t chunk_stride,
                    float* acc, AmxScratch& scratch) {
  accumulate(rows, cols, d, p, ldp, value_blocks, chunk_stride, acc, scratch);
}

}  // namespace swaa::cpu
