// One plain struct that carries a sliding-attention problem to any kernel (CPU, CUDA, emulated).
// Raw pointers and int64 element strides only: kernels never see a tensor.
#pragma once
#include <cstdint>

#include "mask.h"

namespace swaa {

struct AttentionParams {
  // Dense: q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D), o like q; the last dim is contiguous.
  // Varlen (cu_seqlens_q != nullptr): q (total_q, Hq, D), k/v (total_k, Hkv, D) as strided
  // (head, row) views, batch strides 0; sequence b owns rows [cu_seqlens[b], cu_seqlens[b + 1]).
  // Kernels read per-sequence rows, lengths and the rule only through swaa::Sequence
  // (sequence.h), never from len_q / len_k / rule(b) directly.
  const void* q;
  const void* k;
  const void* v;
  void* o;
  // Dense (B, Hq, Lq), varlen (Hq, total_q) (lse_batch_stride 0); rows contiguous; float32
  // (float64 for float64 inputs); natural log. A row with no
  // visible key (unreachable today: every row sees itself) gets +inf, as in FlashAttention, so a
  // backward's recomputed probabilities exp(scale * s - lse) are 0 there, never inf or NaN.
  void* lse;

  int64_t q_batch_stride, q_head_stride, q_row_stride;
  int64_t k_batch_stride, k_head_stride, k_row_stride;
  int64_t v_batch_stride, v_head_stride, v_row_stride;
  int64_t o_batch_stride, o_head_stride, o_row_stride;
  int64_t lse_batch_stride, lse_head_stride;  // lse's row stride is 1

  // Dense: batch rows and their lengths. Varlen: batch = number of sequences and len_q / len_k
  // = max_seqlen_q / max_seqlen_k (grid sizing only: >= every sequence's length).
  int64_t batch, heads_q, heads_kv, len_q, len_k, head_dim;
  // (batch + 1,) int32 prefix sums of the sequences' lengths, on the kernel's device; nullptr
  // for a dense batch.
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  // Paged keys (block_table != nullptr; varlen only, forward only): k/v are caches of pages
  // (num_pages, Hkv, page_size, D), their batch strides the page strides, and key j of sequence
  // b is row j % page_size of page block_table[b * block_table_stride + j / page_size]
  // (vLLM's block table). cu_seqlens_k then holds the prefix sums of the sequences' key counts
  // (for their lengths only; they locate no rows). The CPU kernels address key rows through
  // Sequence::k_row_offset / v_row_offset, the CUDA ones through PagedKVSource (tile_load.cuh).
  const int32_t* block_table;
  int64_t block_table_stride;
  int64_t page_size;
  // The pages hold bf16 K/V in the amx layout (cpu/amx_tiles.h; rows contiguous, page_size and
  // head_dim multiples of 32), read by the AMX tile products only; false: rows of D.
  bool amx_layout;

  // The rule's knobs, already normalised by the torch boundary (see mask.h).
  int64_t window;              // 1 <= window; window >= len_k means full causal
  int64_t sinks;               // 0 <= sinks
  const int64_t* full_from;    // (B,) positions in each row's / sequence's keys, on the device;
                              // nullptr = never (the default costs no allocation per call)
  double scale;                // softmax scale applied to q.k

  SWAA_HOST_DEVICE int64_t group_size() const { return heads_q / heads_kv; }
};

// The split-KV decode (cuda/decode_kernel.cuh, planned by cuda/decode_plan.h) cuts the key range
// of each (sequence, KV head) into num_splits parts; each writes a partial output and LSE, and a
// combine step merges them by LSE into o and lse. With one split the decode blocks write o and
// lse themselves and the partial buffers are unused (nullptr).
struct DecodeParams : AttentionParams {
  int64_t num_splits;  // >= 1
  int64_t row_groups;  // blocks along the packed (query head, query) rows of one KV head
  // Split s's result for the query row whose LSE is lse element r (Sequence::lse_offset + i; lse
  // is contiguous): o_partial[(s * partial_split_stride + r) * head_dim + d], normalised by the
  // split's own softmax sum, and lse_partial[s * partial_split_stride + r] (-inf: the split saw
  // no key of that row). float32.
  float* o_partial;
  float* lse_partial;
  int64_t partial_split_stride;  // lse's element count
};

// Backward adds the incoming gradients, the softmax row term and the outputs' gradients.
struct AttentionBackwardParams : AttentionParams {
  const void* d_o;     // like o (its own strides)
  const void* delta;   // like lse (lse's strides), accumulation type: rowsum(dO * O) - dLSE
  void* dq;            // like q (its own strides)
  void* dk;            // like k (its own strides)
  void* dv;            // like v (its own strides)
  int64_t do_batch_stride, do_head_stride, do_row_stride;
  int64_t dq_batch_stride, dq_head_stride, dq_row_stride;
  int64_t dk_batch_stride, dk_head_stride, dk_row_stride;
  int64_t dv_batch_stride, dv_head_stride, dv_row_stride;
};

}  // namespace swaa
