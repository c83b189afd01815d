// One sequence of a batch: where its rows live, how long it is, and its rule. The one place that
// reads per-sequence offsets (like FlashAttention's block_info.h): every kernel (CPU forward and
// backward, CUDA forward, dK/dV and dQ) builds a Sequence from (params, b) and never reads
// p.len_q, p.len_k, batch strides or cu_seqlens itself. A dense batch is the case
// cu_seqlens == nullptr: row b is a sequence of len_q queries and len_k keys.
#pragma once
#include <cstdint>

#include "mask.h"
#include "params.h"

namespace swaa {

// Sequence b's row of the block table (params.h): its pages in key order.
SWAA_HOST_DEVICE const int32_t* block_table_row(const AttentionParams& p, int64_t b) {
  return p.block_table + b * p.block_table_stride;
}

struct Sequence {
  int64_t b;        // batch row / sequence index
  int64_t q_begin;  // first query row in the (varlen: packed) row axis
  int64_t k_begin;  // first key row
  int64_t len_q, len_k;
  MaskRule rule;    // offset len_k - len_q: this sequence's queries end at its last key

  SWAA_HOST_DEVICE Sequence(const AttentionParams& p, int64_t b_) : b(b_) {
    if (p.cu_seqlens_q != nullptr) {
      q_begin = p.cu_seqlens_q[b];
      k_begin = p.cu_seqlens_k[b];
      len_q = p.cu_seqlens_q[b + 1] - q_begin;
      len_k = p.cu_seqlens_k[b + 1] - k_begin;
    } else {
      q_begin = 0, k_begin = 0, len_q = p.len_q, len_k = p.len_k;
    }
    // p.window encodes "full" as the longest sequence's keys; clipping keeps the rule's
    // arithmetic inside this sequence (window >= len_k is full either way).
    // full_from nullptr is "never": len_k is past every query's position.
    const int64_t full_from = p.full_from != nullptr ? p.full_from[b] : len_k;
    rule = MaskRule{min64(p.window, max64(len_k, 1)), p.sinks, full_from, len_k - len_q};
  }

  // Element offsets of row 0 of this sequence, head h, in each tensor.
  SWAA_HOST_DEVICE int64_t q_offset(const AttentionParams& p, int64_t h) const {
    return b * p.q_batch_stride + h * p.q_head_stride + q_begin * p.q_row_stride;
  }
  SWAA_HOST_DEVICE int64_t k_offset(const AttentionParams& p, int64_t h_kv) const {
    return b * p.k_batch_stride + h_kv * p.k_head_stride + k_begin * p.k_row_stride;
  }
  SWAA_HOST_DEVICE int64_t v_offset(const AttentionParams& p, int64_t h_kv) const {
    return b * p.v_batch_stride + h_kv * p.v_head_stride + k_begin * p.v_row_stride;
  }
  SWAA_HOST_DEVICE int64_t o_offset(const AttentionParams& p, int64_t h) const {
    return b * p.o_batch_stride + h * p.o_head_stride + q_begin * p.o_row_stride;
  }
  // Element offsets of key row n (0 <= n < len_k) of KV head h_kv in k and in v: packed rows,
  // or with a block table, row n % page_size of the page the table gives (params.h).
  SWAA_HOST_DEVICE int64_t k_row_offset(const AttentionParams& p, int64_t h_kv, int64_t n) const {
    if (p.block_table == nullptr) return k_offset(p, h_kv) + n * p.k_row_stride;
    return page_of(p, n) * p.k_batch_stride + h_kv * p.k_head_stride +
           (n % p.page_size) * p.k_row_stride;
  }
  SWAA_HOST_DEVICE int64_t v_row_offset(const AttentionParams& p, int64_t h_kv, int64_t n) const {
    if (p.block_table == nullptr) return v_offset(p, h_kv) + n * p.v_row_stride;
    return page_of(p, n) * p.v_batch_stride + h_kv * p.v_head_stride +
           (n % p.page_size) * p.v_row_stride;
  }
  SWAA_HOST_DEVICE int64_t page_of(const AttentionParams& p, int64_t n) const {
    return page_row(p)[n / p.page_size];
  }
  SWAA_HOST_DEVICE const int32_t* page_row(const AttentionParams& p) const {
    return block_table_row(p, b);
  }
  // lse and (backward) delta share one layout.
  SWAA_HOST_DEVICE int64_t lse_offset(const AttentionParams& p, int64_t h) const {
    return b * p.lse_batch_stride + h * p.lse_head_stride + q_begin;
  }
  SWAA_HOST_DEVICE int64_t do_offset(const AttentionBackwardParams& p, int64_t h) const {
    return b * p.do_batch_stride + h * p.do_head_stride + q_begin * p.do_row_stride;
  }
  SWAA_HOST_DEVICE int64_t dq_offset(const AttentionBackwardParams& p, int64_t h) const {
    return b * p.dq_batch_stride + h * p.dq_head_stride + q_begin * p.dq_row_stride;
  }
  SWAA_HOST_DEVICE int64_t dk_offset(const AttentionBackwardParams& p, int64_t h_kv) const {
    return b * p.dk_batch_stride + h_kv * p.dk_head_stride + k_begin * p.dk_row_stride;
  }
  SWAA_HOST_DEVICE int64_t dv_offset(const AttentionBackwardParams& p, int64_t h_kv) const {
    return b * p.dv_batch_stride + h_kv * p.dv_head_stride + k_begin * p.dv_row_stride;
  }
};

}  // namespace swaa
