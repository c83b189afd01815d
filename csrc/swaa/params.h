// One plain struct that carries a sliding-attention problem to any kernel (CPU, CUDA, emulated).
// Raw pointers and int64 element strides only: kernels never see a tensor.
#pragma once
#include <cstdint>

#include "mask.h"

namespace swaa {

struct AttentionParams {
  // q: (B, Hq, Lq, D), k/v: (B, Hkv, Lk, D), o: like q; the last dim is contiguous.
  const void* q;
  const void* k;
  const void* v;
  void* o;
  // (B, Hq, Lq) contiguous, float32 (float64 for float64 inputs); natural log. A row with no
  // visible key (unreachable today: every row sees itself) gets +inf, as in FlashAttention, so a
  // backward's recomputed probabilities exp(scale * s - lse) are 0 there, never inf or NaN.
  void* lse;

  int64_t q_batch_stride, q_head_stride, q_row_stride;
  int64_t k_batch_stride, k_head_stride, k_row_stride;
  int64_t v_batch_stride, v_head_stride, v_row_stride;
  int64_t o_batch_stride, o_head_stride, o_row_stride;

  int64_t batch, heads_q, heads_kv, len_q, len_k, head_dim;

  // The rule's knobs, already normalised by the torch boundary (see mask.h).
  int64_t window;              // 1 <= window; window == len_k means full causal
  int64_t sinks;               // 0 <= sinks
  const int64_t* full_from;    // (B,) absolute positions, on the kernel's device
  double scale;                // softmax scale applied to q.k

  SWAA_HOST_DEVICE int64_t group_size() const { return heads_q / heads_kv; }
  SWAA_HOST_DEVICE MaskRule rule(int64_t b) const {
    return MaskRule{window, sinks, full_from[b], len_k - len_q};
  }
};

// Backward adds the incoming gradients, the softmax row term and the outputs' gradients.
struct AttentionBackwardParams : AttentionParams {
  const void* d_o;     // like o (its own strides)
  const void* delta;   // (B, Hq, Lq) contiguous, accumulation type: rowsum(dO * O) - dLSE
  void* dq;            // like q, contiguous (B, Hq, Lq, D)
  void* dk;            // like k, contiguous (B, Hkv, Lk, D)
  void* dv;            // like v, contiguous (B, Hkv, Lk, D)
  int64_t do_batch_stride, do_head_stride, do_row_stride;
};

}  // namespace swaa
