// AMX tile products (amx_tiles.h). Every call loads its own tile configuration: the tile
// registers are per thread and other libraries in the process (oneDNN's matmuls, vLLM's own
// attention) configure them differently between our calls.
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")
#include "amx_tiles.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "vec_math.h"

namespace swaa::cpu {

bool amx_usable() { return cpu_isa() >= Isa::kAmx; }

namespace {

// Tile registers (GCC's intrinsics take them as literals): C products in tmm0-3, A in tmm4,
// B in tmm5.
constexpr int64_t kPairsPerRow = 16;  // bf16 pairs in a 64-byte tile row

// Palette 1, every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
  TileConfig() {
    for (int t = 0; t < 8; ++t) bytes_per_row[t] = 64, rows[t] = kAmxRows;
  }
};

struct TileSession {  // configured for the scope of one call
  TileSession() {
    static const TileConfig config;
    _tile_loadconfig(&config);
  }
  ~TileSession() { _tile_release(); }
};

// Mask of the first n of 16 lanes (n may be negative or past 16).
inline __mmask16 first_lanes(int64_t n) {
  return _cvtu32_mask16(n >= 16 ? 0xffffu : n > 0 ? (1u << n) - 1 : 0u);
}

// Two bf16 rows a, b (32 dims each) as (a, b) pairs: dims [0, 16) of rows a, b as 16 (a, b) pairs, then [16, 32).
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

// K tile -> B operands of s = q . k^T: for each 16 keys (block j) and 32 dims (chunk c), a 16 x 16
// matrix of bf16 pairs, row i = pair i of each key's chunk: the transpose of the keys' pairs.
// Keys past cols are zero.
void pack_keys(int64_t cols, int64_t d, const bf16* k, int64_t ldk, bf16* out) {
  const int64_t chunks = d / 32, blocks = (cols + 15) / 16;
  uint32_t* packed = reinterpret_cast<uint32_t*>(out);
  for (int64_t j = 0; j < blocks; ++j) {
    for (int64_t n = 0; n < 16; ++n) {
      const int64_t key = j * 16 + n;
      for (int64_t c = 0; c < chunks; ++c) {
        uint32_t* tile = packed + (j * chunks + c) * 256;  // 16 x 16 pairs
        if (key >= cols) {
          for (int64_t i = 0; i < kPairsPerRow; ++i) tile[i * 16 + n] = 0;
          continue;
        }
        uint32_t pairs[kPairsPerRow];
        std::memcpy(pairs, k + key * ldk + c * 32, sizeof pairs);
        for (int64_t i = 0; i < kPairsPerRow; ++i) tile[i * 16 + n] = pairs[i];
      }
    }
  }
}

// V tile -> B operands of acc += p . v: for each 32 keys (block j) and 16 dims (chunk c), row i
// holds (v[2i][dim], v[2i + 1][dim]) for the chunk's 16 dims. Rows past cols are zero (the
// probability there is 0, but 0 * NaN from an unread page would not be).
void pack_values(int64_t cols, int64_t d, const bf16* v, int64_t ldv, bf16* out) {
  const int64_t chunks = d / 16, blocks = (cols + 31) / 32;
  for (int64_t j = 0; j < blocks; ++j) {
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t r0 = j * 32 + 2 * i, r1 = r0 + 1;
      for (int64_t h = 0; h < d / 32; ++h) {  // 32 dims at a time: chunks 2h and 2h + 1
        const __m512i a = r0 < cols ? _mm512_loadu_si512(v + r0 * ldv + h * 32)
                                    : _mm512_setzero_si512();
        const __m512i b = r1 < cols ? _mm512_loadu_si512(v + r1 * ldv + h * 32)
                                    : _mm512_setzero_si512();
        bf16* tile0 = out + ((j * chunks + 2 * h) * 16 + i) * 32;
        bf16* tile1 = out + ((j * chunks + 2 * h + 1) * 16 + i) * 32;
        _mm512_storeu_si512(tile0, pairs_low(a, b));
        _mm512_storeu_si512(tile1, pairs_high(a, b));
      }
    }
  }
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

}  // namespace

void amx_scores(int64_t rows, int64_t cols, int64_t d, const bf16* q, const bf16* k, int64_t ldk,
                float scale, float* s, int64_t lds, AmxScratch& scratch) {
  pack_keys(cols, d, k, ldk, scratch.kv.data());
  const TileSession session;
  const int64_t chunks = d / 32, blocks = (cols + 15) / 16;
  // Per 16 rows: columns 16j..16j+15 of s accumulate in tmm j (up to 4 independent chains);
  // each 32-dim chunk of the rows is loaded once (tmm4) for all of them, B alternates tmm5/6.
  for (int64_t m = 0; m < amx_padded_rows(rows); m += kAmxRows) {
    _tile_zero(0);
    if (blocks > 1) _tile_zero(1);
    if (blocks > 2) _tile_zero(2);
    if (blocks > 3) _tile_zero(3);
    for (int64_t c = 0; c < chunks; ++c) {
      _tile_loadd(4, q + m * d + c * 32, d * sizeof(bf16));
      const bf16* b = scratch.kv.data() + c * 512;  // block j at b + j * chunks * 512
      _tile_loadd(5, b, 64);
      _tile_dpbf16ps(0, 4, 5);
      if (blocks > 1) {
        _tile_loadd(6, b + chunks * 512, 64);
        _tile_dpbf16ps(1, 4, 6);
      }
      if (blocks > 2) {
        _tile_loadd(5, b + 2 * chunks * 512, 64);
        _tile_dpbf16ps(2, 4, 5);
      }
      if (blocks > 3) {
        _tile_loadd(6, b + 3 * chunks * 512, 64);
        _tile_dpbf16ps(3, 4, 6);
      }
    }
    float* out = s + m * lds;
    _tile_stored(0, out, lds * sizeof(float));
    if (blocks > 1) _tile_stored(1, out + 16, lds * sizeof(float));
    if (blocks > 2) _tile_stored(2, out + 32, lds * sizeof(float));
    if (blocks > 3) _tile_stored(3, out + 48, lds * sizeof(float));
  }
  const __m512 factor = _mm512_set1_ps(scale);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; c += 16) {
      float* x = s + r * lds + c;
      _mm512_storeu_ps(x, _mm512_mul_ps(_mm512_loadu_ps(x), factor));
    }
  }
}

void amx_accumulate(int64_t rows, int64_t cols, int64_t d, const float* p, int64_t ldp,
                    const bf16* v, int64_t ldv, float* acc, AmxScratch& scratch) {
  pack_values(cols, d, v, ldv, scratch.kv.data());
  pack_probabilities(rows, cols, p, ldp, scratch.p.data());
  const TileSession session;
  const int64_t chunks = d / 16, blocks = (cols + 31) / 32;
  constexpr int64_t ldp16 = AmxScratch::kMaxCols * sizeof(bf16);
  // Per 16 rows and 64 dims: dims 16c..16c+15 of acc accumulate in tmm c (4 independent chains);
  // each 32-key block of p is loaded once (tmm4) for all of them, B alternates tmm5/6.
  for (int64_t m = 0; m < amx_padded_rows(rows); m += kAmxRows) {
    for (int64_t c0 = 0; c0 < chunks; c0 += 4) {
      float* out = acc + m * d + c0 * 16;
      const int64_t ldo = d * sizeof(float);
      _tile_loadd(0, out, ldo);
      _tile_loadd(1, out + 16, ldo);
      if (chunks - c0 > 2) {
        _tile_loadd(2, out + 32, ldo);
        _tile_loadd(3, out + 48, ldo);
      }
      for (int64_t j = 0; j < blocks; ++j) {
        _tile_loadd(4, scratch.p.data() + m * AmxScratch::kMaxCols + j * 32, ldp16);
        const bf16* b = scratch.kv.data() + (j * chunks + c0) * 512;
        _tile_loadd(5, b, 64);
        _tile_dpbf16ps(0, 4, 5);
        _tile_loadd(6, b + 512, 64);
        _tile_dpbf16ps(1, 4, 6);
        if (chunks - c0 > 2) {
          _tile_loadd(5, b + 1024, 64);
          _tile_dpbf16ps(2, 4, 5);
          _tile_loadd(6, b + 1536, 64);
          _tile_dpbf16ps(3, 4, 6);
        }
      }
      _tile_stored(0, out, ldo);
      _tile_stored(1, out + 16, ldo);
      if (chunks - c0 > 2) {
        _tile_stored(2, out + 32, ldo);
        _tile_stored(3, out + 48, ldo);
      }
    }
  }
}

}  // namespace swaa::cpu
