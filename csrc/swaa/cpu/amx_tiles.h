// bfloat16 tile products on Intel AMX (Advanced Matrix Extensions), for the CPU forward when the
// K/V elements are bf16 (vLLM's default CPU cache): the two products of a key tile,
// s = scale * q . k^T and acc += p . v, run as 16 x 16 tile multiplies with float32 sums.
// AMX multiplies bf16 pairs, so the query rows stay in bf16 (exact: they arrive in bf16) and the
// probabilities are rounded to bf16 for p . v, as GPU kernels do for a bf16 model.
//
// A tile product is C[16][16] += A[16][32] . B[32][16] with B stored as pairs: row i of B holds
// (b[2i][n], b[2i + 1][n]) for each column n, 64 bytes a row. The keys and values must be in that
// form, "the amx layout", which is also how a page of a paged cache can store them (vLLM's own
// CPU cache layout when it runs its AMX kernel), per KV head, for a page of P keys (P a multiple
// of 32) and D dims (a multiple of 32):
//   key t, dim e   at (t / 16) * 16 D + (e / 2) * 32 + (t % 16) * 2 + e % 2
//                  (16-key groups; in each, D / 2 rows of 16 keys' dim pairs: a B of q . k^T)
//   value t, dim e at (e / 16) * 16 P + (t / 2) * 32 + (e % 16) * 2 + t % 2
//                  (16-dim chunks; in each, P / 2 rows of two keys' 16 dims: a B of p . v)
// Caches in the row layout are repacked into it per key tile (amx_pack_keys / amx_pack_values).
#pragma once
#include <cstdint>
#include <vector>

#include "element.h"

namespace swaa::cpu {

// Rows of a tile product; buffers the products read or write are padded to a multiple of it.
constexpr int64_t kAmxRows = 16;
// Keys of a 16-key group / of a pair block (32 keys), in the amx layout.
constexpr int64_t kAmxKeyGroup = 16;
constexpr int64_t kAmxPairBlock = 32;

// Whether the products below can run: the CPU has AMX-BF16 and AVX512-BF16, the OS lets this
// process use the tile registers (asked once), and SWAA_CPU_ISA does not cap below "amx".
bool amx_usable();

// Whether a head dim fits the tile products: a whole number of 32-element bf16 rows, at most 256.
inline bool amx_head_dim(int64_t d) { return d % 32 == 0 && d <= 256; }

inline int64_t amx_padded_rows(int64_t rows) {
  return (rows + kAmxRows - 1) / kAmxRows * kAmxRows;
}

// Offsets (elements) of key / value (t, e) in a page of the amx layout.
inline int64_t amx_key_offset(int64_t t, int64_t e, int64_t d) {
  return t / 16 * 16 * d + e / 2 * 32 + t % 16 * 2 + e % 2;
}
inline int64_t amx_value_offset(int64_t t, int64_t e, int64_t page_size) {
  return e / 16 * 16 * page_size + t / 2 * 32 + e % 16 * 2 + t % 2;
}

// The tile registers configured for the products below, for the scope of one call's work items
// on one thread. They are per thread, and other libraries in the process (oneDNN's matmuls,
// vLLM's own attention) configure them differently between our calls, so each call loads the
// configuration again, and within a call only when an item's row count changes it (loading it
// per item cost as much as a short decode item's products). With fewer than 16 rows (decode)
// the tiles hold just those rows; else 16, and buffers are padded to whole tiles.
class AmxTiles {
 public:
  AmxTiles() = default;
  ~AmxTiles();
  AmxTiles(const AmxTiles&) = delete;
  AmxTiles& operator=(const AmxTiles&) = delete;
  void configure(int64_t rows);  // before the products of an item of `rows` rows

 private:
  int64_t loaded_rows_ = 0;  // the tile rows of the configuration loaded (0: none)
};

// Columns [begin, end) of a key tile of at most 64 keys as bits (bit c: column c).
inline uint64_t column_bits(int64_t begin, int64_t end) {
  if (end <= begin) return 0;
  const uint64_t below_end = end >= 64 ? ~uint64_t(0) : (uint64_t(1) << end) - 1;
  return below_end & ~((uint64_t(1) << begin) - 1);
}

// Per-thread scratch of the products: a key tile (at most kMaxCols keys) and its values
// repacked (caches in the row layout), one 16-row block's scores and bf16 probabilities, the
// last partial pair block of a value tile with the keys past it zeroed, and the columns
// each packed row sees.
struct AmxScratch {
  static constexpr int64_t kMaxCols = 64;
  AmxScratch(int64_t rows, int64_t head_dim)
      : k(kMaxCols * head_dim), v(kMaxCols * head_dim), s(kAmxRows * kMaxCols),
        p(kAmxRows * kMaxCols), v_tail(32 * head_dim), visible(amx_padded_rows(rows)) {}
  std::vector<bf16> k, v;         // the amx layout of a kMaxCols-key page
  std::vector<float> s;           // (16, kMaxCols)
  std::vector<bf16> p;            // (16, kMaxCols)
  std::vector<bf16> v_tail;       // (D / 16) tiles of 16 rows x 32
  std::vector<uint64_t> visible;  // per packed row: column_bits of the keys it sees
};

// Rows [0, cols) of a key / value tile (row stride ld) -> the amx layout of a kMaxCols-key page
// (zero past cols) in `out` (kMaxCols * d elements). Their chunk stride is 16 * kMaxCols.
void amx_pack_keys(int64_t cols, int64_t d, const bf16* k, int64_t ldk, bf16* out);
void amx_pack_values(int64_t cols, int64_t d, const bf16* v, int64_t ldv, bf16* out);

// A key tile of up to kMaxCols keys comes in segments of kAmxPairBlock keys (each within
// one page: a key tile may span pages).
constexpr int64_t kAmxSegments = AmxScratch::kMaxCols / kAmxPairBlock;

// A rise of the row max that does not move the running max (natural-log units): the
// probabilities of the step then reach up to e^8 ~ 3000, far from float's and bf16's limits,
// and the rows' accumulators are rescaled only when the max grows by more (FlashAttention 4's
// rule), i.e. rarely after the first keys. The output is the same: the final sum uses the same
// reference max as the accumulator.
constexpr float kAmxRescaleMargin = 8.0f;

// One online-softmax step of an AMX work item over a key tile of cols <= kMaxCols keys, 16
// rows at a time, each block's scores, probabilities and products kept in L1:
//   s = scale * q . k^T on the columns scratch.visible[r] marks for row r (the others are 0 in
//   p: masked, past the key tile, or in a segment no row sees); row_max[r] moves to the block's
//   max only when it exceeds it by kAmxRescaleMargin, which rescales row_sum[r] and acc row r;
//   p = exp(s - row_max) rounded to bf16; row_sum += sum p; acc += p . v.
// q: (amx_padded_rows(rows), d) bf16, row stride d; key_segments[i]: keys [32 i, 32 i + 32) of
// the key tile in the amx layout (keys past cols may hold anything), or nullptr for a segment no
// row sees (perhaps a freed page: not read); value_blocks likewise for the values, their 16-dim
// chunks chunk_stride elements apart (keys past cols may hold anything, NaN included); acc:
// (amx_padded_rows(rows), d) float, row stride d (the padding rows are read and written too);
// row_max, row_sum: amx_padded_rows(rows) each (-inf and 0 in the padding rows).
void amx_attend(int64_t rows, int64_t cols, int64_t d, const bf16* q,
                const bf16* const (&key_segments)[kAmxSegments],
                const bf16* const (&value_blocks)[kAmxSegments], int64_t chunk_stride,
                float scale, float* row_max, float* row_sum, float* acc, AmxScratch& scratch);

}  // namespace swaa::cpu
