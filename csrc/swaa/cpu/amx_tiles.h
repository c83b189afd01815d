// bfloat16 tile products on Intel AMX (Advanced Matrix Extensions), for the CPU forward when the
// K/V elements are bf16 (vLLM's default CPU cache): the two products of a key tile,
// s = scale * q . k^T and acc += p . v, run as 16 x 16 tile multiplies with float32 sums.
// AMX multiplies bf16 pairs, so the query rows stay in bf16 (exact: they arrive in bf16) and the
// probabilities are rounded to bf16 for p . v, as GPU kernels do for a bf16 model.
//
// A tile product is C[16][16] += A[16][32] . B[32][16] with B stored as pairs ("VNNI"): row i of
// B holds (b[2i][n], b[2i + 1][n]) for each column n. The keys are repacked into that layout per
// tile (a transpose of 32-bit pairs), the values by interleaving two rows.
#pragma once
#include <cstdint>
#include <vector>

#include "element.h"

namespace swaa::cpu {

// Rows of a tile product; buffers the products read or write are padded to a multiple of it.
constexpr int64_t kAmxRows = 16;

// Whether the products below can run: the CPU has AMX-BF16 and AVX512-BF16, the OS lets this
// process use the tile registers (asked once), and SWAA_CPU_ISA does not cap below "amx".
bool amx_usable();

// Whether a head dim fits the tile products: a whole number of 32-element bf16 rows, at most 256.
inline bool amx_head_dim(int64_t d) { return d % 32 == 0 && d <= 256; }

inline int64_t amx_padded_rows(int64_t rows) {
  return (rows + kAmxRows - 1) / kAmxRows * kAmxRows;
}

// Repacked operands of one key tile (at most kMaxCols keys).
struct AmxScratch {
  static constexpr int64_t kMaxCols = 64;
  AmxScratch(int64_t rows, int64_t head_dim)
      : kv(kMaxCols * head_dim), p(amx_padded_rows(rows) * kMaxCols) {}
  std::vector<bf16> kv;  // the K tile in pairs per 16 keys, or the V tile's rows interleaved
  std::vector<bf16> p;   // (padded rows, kMaxCols): probabilities in bf16, 0 past the tile
};

// s[r][c] <- scale * q[r] . k[c] for r < rows, c < cols (<= AmxScratch::kMaxCols).
// q: (amx_padded_rows(rows), d) bf16, row stride d; k: cols rows of d (stride ldk);
// s: row stride lds >= 64, amx_padded_rows(rows) rows (the padding rows are written too).
void amx_scores(int64_t rows, int64_t cols, int64_t d, const bf16* q, const bf16* k, int64_t ldk,
                float scale, float* s, int64_t lds, AmxScratch& scratch);

// acc[r] <- acc[r] + sum_{c < cols} p[r][c] v[c] for r < rows; acc: (amx_padded_rows(rows), d)
// float, row stride d (the padding rows are read and written too); p: row stride ldp.
// Value rows past cols are not read.
void amx_accumulate(int64_t rows, int64_t cols, int64_t d, const float* p, int64_t ldp,
                    const bf16* v, int64_t ldv, float* acc, AmxScratch& scratch);

}  // namespace swaa::cpu
