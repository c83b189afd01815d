// The torch boundary's one argument check and the params it fills (DESIGN.md §3).
// Bad input raises ValueError / TypeError naming the argument: never a crash or a wrong answer.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <optional>

#include "../swaa/params.h"

namespace swaa::torch_boundary {

inline void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   std::optional<int64_t> window, int64_t sinks,
                                   const std::optional<at::Tensor>& full_from) {
  for (const auto& [name, t] : {std::pair{"q", &q}, {"k", &k}, {"v", &v}}) {
    TORCH_CHECK_VALUE(t->dim() == 4, name, " must have 4 dims (batch, heads, seq_len, head_dim), got shape ",
                      t->sizes());
    TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()) &&
                         t->scalar_type() != at::kFloat8_e4m3fn,
                     name, " must be float32, float64, bfloat16 or float16, got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->size(3) <= 1 || t->stride(3) == 1, name,
                      " must have a contiguous last dim (stride 1), got strides ", t->strides());
  }
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
                   "q, k and v must share one dtype, got ", q.scalar_type(), ", ",
                   k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK_VALUE(k.device() == q.device() && v.device() == q.device(),
                    "q, k and v must be on one device, got ", q.device(), ", ", k.device(), ", ",
                    v.device());
  TORCH_CHECK_VALUE(k.sizes() == v.sizes(), "k and v must have the same shape, got ", k.sizes(),
                    " and ", v.sizes());
  TORCH_CHECK_VALUE(k.size(0) == q.size(0), "k must have q's batch size ", q.size(0), ", got ",
                    k.size(0));
  TORCH_CHECK_VALUE(k.size(3) == q.size(3), "k must have q's head_dim ", q.size(3), ", got ",
                    k.size(3));
  TORCH_CHECK_VALUE(k.size(1) >= 1 && q.size(1) % k.size(1) == 0,
                    "q's heads must be a multiple of k's heads (GQA), got ", q.size(1), " and ",
                    k.size(1));
  TORCH_CHECK_VALUE(q.size(2) <= k.size(2), "q's seq_len (", q.size(2),
                    ") must not exceed k's seq_len (", k.size(2), "): queries are bottom-right aligned");
  TORCH_CHECK_VALUE(!window.has_value() || *window >= 1,
                    "window must be None or >= 1 (keys seen, the query included), got ", *window);
  TORCH_CHECK_VALUE(sinks >= 0, "sinks must be >= 0, got ", sinks);
  if (full_from.has_value()) {
    const at::Tensor& ff = *full_from;
    TORCH_CHECK_TYPE(ff.scalar_type() == at::kLong, "full_from must be an int64 tensor, got ",
                     ff.scalar_type());
    TORCH_CHECK_VALUE(ff.dim() == 1 && ff.size(0) == q.size(0),
                      "full_from must have shape (batch,) = (", q.size(0), ",), got ", ff.sizes());
    TORCH_CHECK_VALUE(ff.device() == q.device(), "full_from must be on q's device ", q.device(),
                      ", got ", ff.device());
    // Values are not checked (that would sync a GPU): any position is meaningful, <= 0 means
    // every query attends to all earlier keys, >= Lk means never.
  }
}

// The backward's extra inputs (grad_out, grad_lse, out, lse) against q, after
// check_attention_inputs(q, k, v, ...).
inline void check_backward_inputs(const at::Tensor& grad_out,
                                  const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
                                  const at::Tensor& out, const at::Tensor& lse) {
  for (const auto& [name, t] : {std::pair{"grad_out", &grad_out}, {"out", &out}}) {
    TORCH_CHECK_VALUE(t->sizes() == q.sizes(), name, " must have q's shape ", q.sizes(), ", got ",
                      t->sizes());
  }
  const auto rows = q.sizes().slice(0, 3);
  TORCH_CHECK_VALUE(lse.sizes() == rows, "lse must have shape ", rows, ", got ", lse.sizes());
  TORCH_CHECK_VALUE(!grad_lse.has_value() || grad_lse->sizes() == rows, "grad_lse must have shape ",
                    rows, ", got ", grad_lse.has_value() ? grad_lse->sizes() : rows);
  for (const at::Tensor* t : {&grad_out, &out, &lse}) {
    TORCH_CHECK_VALUE(t->device() == q.device(), "grad_out, out and lse must be on q's device ",
                      q.device(), ", got ", t->device());
  }
  TORCH_CHECK_VALUE(!grad_lse.has_value() || grad_lse->device() == q.device(),
                    "grad_lse must be on q's device ", q.device(), ", got ", grad_lse->device());
}

inline void check_head_dim(const at::Tensor& q, int64_t max_head_dim, const char* backend) {
  TORCH_CHECK_VALUE(q.size(3) >= 1 && q.size(3) <= max_head_dim, "head_dim must be in [1, ",
                    max_head_dim, "] on ", backend, ", got ", q.size(3));
}

// full_from as the kernels want it: (B,) int64, contiguous, on q's device; None = never.
inline at::Tensor normalized_full_from(const at::Tensor& q, int64_t len_k,
                                       const std::optional<at::Tensor>& full_from) {
  if (full_from.has_value()) return full_from->contiguous();
  return at::full({q.size(0)}, len_k, q.options().dtype(at::kLong));
}

// Fills the kernel params. `window` None (or >= Lk) becomes Lk: the one place the API's window
// turns into the kernels' encoding (mask.h).
inline AttentionParams make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& out, const at::Tensor& lse,
                                   std::optional<int64_t> window, int64_t sinks,
                                   const at::Tensor& full_from, double scale) {
  AttentionParams p{};
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.o = out.data_ptr();
  p.lse = lse.data_ptr();
  p.q_batch_stride = q.stride(0), p.q_head_stride = q.stride(1), p.q_row_stride = q.stride(2);
  p.k_batch_stride = k.stride(0), p.k_head_stride = k.stride(1), p.k_row_stride = k.stride(2);
  p.v_batch_stride = v.stride(0), p.v_head_stride = v.stride(1), p.v_row_stride = v.stride(2);
  p.o_batch_stride = out.stride(0), p.o_head_stride = out.stride(1);
  p.o_row_stride = out.stride(2);
  p.batch = q.size(0), p.heads_q = q.size(1), p.heads_kv = k.size(1);
  p.len_q = q.size(2), p.len_k = k.size(2), p.head_dim = q.size(3);
  const int64_t full = std::max<int64_t>(p.len_k, 1);
  p.window = window.has_value() ? std::min(*window, full) : full;
  p.sinks = sinks;
  p.full_from = full_from.data_ptr<int64_t>();
  p.scale = scale;
  return p;
}

}  // namespace swaa::torch_boundary
