// The torch boundary's one argument check and the params it fills (docs/architecture.md, "The params struct and the sequence").
// Bad input raises ValueError / TypeError naming the argument: never a crash or a wrong answer.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../swaa/params.h"

namespace swaa::torch_boundary {

// The checks q, k and v share in every layout: `dims` dims named by `layout`, a float dtype, a
// contiguous last dim, one dtype and device, k and v alike, one head dim, GQA heads (dim
// `head_dim_index`). `k_name` / `v_name`: what the caller calls k and v (the paged op's caches).
inline void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t dims,
                      const char* layout, int64_t heads_dim, const char* k_name = "k",
                      const char* v_name = "v", const char* q_name = "q") {
  for (const auto& [name, t] : {std::pair{q_name, &q}, {k_name, &k}, {v_name, &v}}) {
    TORCH_CHECK_VALUE(t->dim() == dims, name, " must have ", dims, " dims ", layout,
                      ", got shape ", t->sizes());
    TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()) &&
                         t->scalar_type() != at::kFloat8_e4m3fn,
                     name, " must be float32, float64, bfloat16 or float16, got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->size(dims - 1) <= 1 || t->stride(dims - 1) == 1, name,
                      " must have a contiguous last dim (stride 1), got strides ", t->strides());
  }
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
                   q_name, ", ", k_name, " and ", v_name, " must share one dtype, got ", q.scalar_type(),
                   ", ", k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK_VALUE(k.device() == q.device() && v.device() == q.device(), q_name, ", ", k_name, " and ",
                    v_name, " must be on one device, got ", q.device(), ", ", k.device(), ", ",
                    v.device());
  TORCH_CHECK_VALUE(k.sizes() == v.sizes(), k_name, " and ", v_name,
                    " must have the same shape, got ", k.sizes(), " and ", v.sizes());
  TORCH_CHECK_VALUE(k.size(dims - 1) == q.size(dims - 1), k_name, " must have ", q_name, "'s head_dim ",
                    q.size(dims - 1), ", got ", k.size(dims - 1));
  TORCH_CHECK_VALUE(k.size(heads_dim) >= 1 && q.size(heads_dim) % k.size(heads_dim) == 0,
                    q_name, "'s heads must be a multiple of ", k_name, "'s heads (GQA), got ",
                    q.size(heads_dim), " and ", k.size(heads_dim));
}

// window, sinks and full_from ((n,) for n batch rows or sequences), in every layout.
inline void check_rule(const at::Tensor& q, int64_t n, const char* n_name,
                       std::optional<int64_t> window, int64_t sinks,
                       const std::optional<at::Tensor>& full_from) {
  TORCH_CHECK_VALUE(!window.has_value() || *window >= 1,
                    "window must be None or >= 1 (keys seen, the query included), got ", *window);
  TORCH_CHECK_VALUE(sinks >= 0, "sinks must be >= 0, got ", sinks);
  if (full_from.has_value()) {
    const at::Tensor& ff = *full_from;
    TORCH_CHECK_TYPE(ff.scalar_type() == at::kLong, "full_from must be an int64 tensor, got ",
                     ff.scalar_type());
    TORCH_CHECK_VALUE(ff.dim() == 1 && ff.size(0) == n, "full_from must have shape (", n_name,
                      ",) = (", n, ",), got ", ff.sizes());
    TORCH_CHECK_VALUE(ff.device() == q.device(), "full_from must be on q's device ", q.device(),
                      ", got ", ff.device());
    // Values are not checked (that would sync a GPU): any position is meaningful, <= 0 means
    // every query attends to all earlier keys, >= Lk means never.
  }
}

inline void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   std::optional<int64_t> window, int64_t sinks,
                                   const std::optional<at::Tensor>& full_from) {
  check_qkv(q, k, v, 4, "(batch, heads, seq_len, head_dim)", 1);
  TORCH_CHECK_VALUE(k.size(0) == q.size(0), "k must have q's batch size ", q.size(0), ", got ",
                    k.size(0));
  TORCH_CHECK_VALUE(q.size(2) <= k.size(2), "q's seq_len (", q.size(2),
                    ") must not exceed k's seq_len (", k.size(2), "): queries are bottom-right aligned");
  check_rule(q, q.size(0), "batch", window, sinks, full_from);
}

// The varlen layout (FlashAttention's flash_attn_varlen_func): q (total_q, Hq, D), k/v
// (total_k, Hkv, D), cu_seqlens_q/k int32 (n + 1,) prefix sums on q's device. The values of
// cu_seqlens (starts at 0, ends at total, non-decreasing, len_q <= len_k per sequence, lengths <=
// max_seqlen) are read and checked when they are on the CPU (the CPU and emulated backends); on
// a CUDA device they are trusted, as FlashAttention does, so that no call syncs the GPU.
inline void check_varlen_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                int64_t max_seqlen_q, int64_t max_seqlen_k,
                                std::optional<int64_t> window, int64_t sinks,
                                const std::optional<at::Tensor>& full_from) {
  check_qkv(q, k, v, 3, "(total, heads, head_dim)", 1);
  for (const auto& [name, t] :
       {std::pair{"cu_seqlens_q", &cu_seqlens_q}, {"cu_seqlens_k", &cu_seqlens_k}}) {
    TORCH_CHECK_TYPE(t->scalar_type() == at::kInt, name, " must be an int32 tensor, got ",
                     t->scalar_type());
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) >= 1, name,
                      " must have shape (sequences + 1,), got ", t->sizes());
    TORCH_CHECK_VALUE(t->device() == q.device(), name, " must be on q's device ", q.device(),
                      ", got ", t->device());
  }
  TORCH_CHECK_VALUE(cu_seqlens_k.size(0) == cu_seqlens_q.size(0),
                    "cu_seqlens_k must have cu_seqlens_q's length ", cu_seqlens_q.size(0),
                    " (one entry per sequence + 1), got ", cu_seqlens_k.size(0));
  TORCH_CHECK_VALUE(max_seqlen_q >= 0, "max_seqlen_q must be >= 0, got ", max_seqlen_q);
  TORCH_CHECK_VALUE(max_seqlen_k >= 0, "max_seqlen_k must be >= 0, got ", max_seqlen_k);
  const int64_t n = cu_seqlens_q.size(0) - 1;
  check_rule(q, n, "sequences", window, sinks, full_from);
  if (!cu_seqlens_q.device().is_cpu()) return;  // values trusted on a GPU (see above)

  const at::Tensor cq = cu_seqlens_q.contiguous(), ck = cu_seqlens_k.contiguous();
  const int32_t* cuq = cq.data_ptr<int32_t>();
  const int32_t* cuk = ck.data_ptr<int32_t>();
  for (const auto& [name, cu, rows, total, max_len, max_name] :
       {std::tuple{"cu_seqlens_q", cuq, "q", q.size(0), max_seqlen_q, "max_seqlen_q"},
        {"cu_seqlens_k", cuk, "k", k.size(0), max_seqlen_k, "max_seqlen_k"}}) {
    TORCH_CHECK_VALUE(cu[0] == 0, name, " must start at 0, got ", cu[0]);
    TORCH_CHECK_VALUE(cu[n] == total, name, " must end at ", rows, ".size(0) = ", total,
                      ", got ", cu[n]);
    for (int64_t s = 0; s < n; ++s) {
      TORCH_CHECK_VALUE(cu[s + 1] >= cu[s], name, " must be non-decreasing, got ", cu[s],
                        " then ", cu[s + 1], " at sequence ", s);
      TORCH_CHECK_VALUE(cu[s + 1] - cu[s] <= max_len, max_name, " (", max_len,
                        ") must be >= every sequence's length, got ", cu[s + 1] - cu[s],
                        " at sequence ", s);
    }
  }
  for (int64_t s = 0; s < n; ++s) {
    TORCH_CHECK_VALUE(cuq[s + 1] - cuq[s] <= cuk[s + 1] - cuk[s], "sequence ", s,
                      " has more queries (", cuq[s + 1] - cuq[s], ", cu_seqlens_q) than keys (",
                      cuk[s + 1] - cuk[s], ", cu_seqlens_k): queries are bottom-right aligned");
  }
}

// The backward's extra inputs (grad_out, grad_lse, out, lse) against q, after
// check_attention_inputs / check_varlen_inputs; `rows` is the LSE's shape.
inline void check_backward_inputs(const at::Tensor& grad_out,
                                  const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
                                  const at::Tensor& out, const at::Tensor& lse,
                                  at::IntArrayRef rows) {
  for (const auto& [name, t] : {std::pair{"grad_out", &grad_out}, {"out", &out}}) {
    TORCH_CHECK_VALUE(t->sizes() == q.sizes(), name, " must have q's shape ", q.sizes(), ", got ",
                      t->sizes());
  }
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
  TORCH_CHECK_VALUE(q.size(-1) >= 1 && q.size(-1) <= max_head_dim, "head_dim must be in [1, ",
                    max_head_dim, "] on ", backend, ", got ", q.size(-1));
}

// The varlen op's extra arguments, checked by check_varlen_inputs.
struct Varlen {
  at::Tensor cu_seqlens_q, cu_seqlens_k;
  int64_t max_seqlen_q, max_seqlen_k;
  int64_t sequences() const { return cu_seqlens_q.size(0) - 1; }
};

// The (B, H, L, D) view the params describe: dense tensors as they are, packed (varlen and
// paged) (total, H, D) as (1, H, total, D) (batch strides are zeroed by apply_varlen / paged).
inline at::Tensor heads_rows(const at::Tensor& t, bool packed) {
  return packed ? t.unsqueeze(0).transpose(1, 2) : t;
}
// heads_rows(t, true) as make_params reads it (data, sizes, strides), without making a view:
// the paged op runs for every layer and decode step, where tensor views cost microseconds.
struct PackedHeadsRows {
  const at::Tensor& t;  // (total, H, D)
  static constexpr int64_t kFrom[4] = {-1, 1, 0, 2};  // the view's dim -> t's dim (-1: new)
  void* data_ptr() const { return t.data_ptr(); }
  int64_t size(int64_t i) const { return i == 0 ? 1 : t.size(kFrom[i]); }
  int64_t stride(int64_t i) const { return i == 0 ? 0 : t.stride(kFrom[i]); }  // one batch
};
// The LSE's shape: dense (B, Hq, Lq), packed (Hq, total_q) as FlashAttention's varlen LSE.
inline std::vector<int64_t> lse_shape(const at::Tensor& q, bool packed) {
  if (packed) return {q.size(1), q.size(0)};
  return {q.size(0), q.size(1), q.size(2)};
}
// (B, Hq, Lq) view of an LSE-shaped tensor (packed: (1, Hq, total_q)).
inline at::Tensor lse_rows(const at::Tensor& lse, bool packed) {
  return packed ? lse.unsqueeze(0) : lse;
}
// Batch rows (dense) or sequences (varlen): full_from's length.
inline int64_t batch_size(const at::Tensor& q, const Varlen* varlen) {
  return varlen ? varlen->sequences() : q.size(0);
}

// full_from as the kernels want it: (n,) int64, contiguous, on q's device (checked before);
// None stays an undefined tensor, which make_params passes as nullptr = never: the default
// allocates nothing per call (a decode step runs this for every layer and token).
inline at::Tensor normalized_full_from(const std::optional<at::Tensor>& full_from) {
  return full_from.has_value() ? full_from->contiguous() : at::Tensor();
}

// The API's window as the kernels encode it: None (or >= Lk) becomes Lk (mask.h).
inline int64_t kernel_window(std::optional<int64_t> window, int64_t len_k) {
  const int64_t full = std::max<int64_t>(len_k, 1);
  return window.has_value() ? std::min(*window, full) : full;
}

// Fills the kernel params. `window` None (or >= Lk) becomes Lk: the one place the API's window
// turns into the kernels' encoding (mask.h).
// Rows: at::Tensor (B, H, L, D), or PackedHeadsRows.
template <typename Rows>
inline AttentionParams make_params(const Rows& q, const at::Tensor& k, const at::Tensor& v,
                                   const Rows& out, const at::Tensor& lse,
                                   std::optional<int64_t> window, int64_t sinks,
                                   const at::Tensor& full_from, double scale) {
  AttentionParams p{};
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.o = out.data_ptr();
  p.lse = lse.defined() ? lse.data_ptr() : nullptr;  // undefined: nobody asked for it
  p.q_batch_stride = q.stride(0), p.q_head_stride = q.stride(1), p.q_row_stride = q.stride(2);
  p.k_batch_stride = k.stride(0), p.k_head_stride = k.stride(1), p.k_row_stride = k.stride(2);
  p.v_batch_stride = v.stride(0), p.v_head_stride = v.stride(1), p.v_row_stride = v.stride(2);
  p.o_batch_stride = out.stride(0), p.o_head_stride = out.stride(1);
  p.o_row_stride = out.stride(2);
  if (lse.defined()) p.lse_batch_stride = lse.stride(0), p.lse_head_stride = lse.stride(1);
  p.batch = q.size(0), p.heads_q = q.size(1), p.heads_kv = k.size(1);
  p.len_q = q.size(2), p.len_k = k.size(2), p.head_dim = q.size(3);
  p.window = kernel_window(window, p.len_k);
  p.sinks = sinks;
  p.full_from = full_from.defined() ? full_from.data_ptr<int64_t>() : nullptr;
  p.scale = scale;
  return p;
}

// check_varlen_inputs, then the varlen arguments as the kernels' boundary keeps them.
inline Varlen checked_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                             int64_t max_seqlen_q, int64_t max_seqlen_k,
                             std::optional<int64_t> window, int64_t sinks,
                             const std::optional<at::Tensor>& full_from) {
  check_varlen_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window,
                      sinks, full_from);
  return {cu_seqlens_q.contiguous(), cu_seqlens_k.contiguous(), max_seqlen_q, max_seqlen_k};
}

// Turns params filled from heads_rows views into a varlen problem: n sequences, grid sized by
// max_seqlen, rows found through cu_seqlens (sequence.h), batch strides 0.
inline void apply_varlen(AttentionParams& p, const Varlen& varlen) {
  p.cu_seqlens_q = varlen.cu_seqlens_q.data_ptr<int32_t>();
  p.cu_seqlens_k = varlen.cu_seqlens_k.data_ptr<int32_t>();
  p.batch = varlen.sequences();
  p.len_q = varlen.max_seqlen_q, p.len_k = varlen.max_seqlen_k;
  p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.o_batch_stride = 0;
  p.lse_batch_stride = 0;
}

// The backward's tensors into its params: d_o and the gradients as (B, H, L, D) views (varlen:
// heads_rows views, batch strides 0), delta in the LSE's layout.
inline void set_backward_tensors(AttentionBackwardParams& p, const at::Tensor& d_o,
                                 const at::Tensor& delta, const at::Tensor& dq,
                                 const at::Tensor& dk, const at::Tensor& dv) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  auto batch_stride = [&](const at::Tensor& t) { return varlen ? 0 : t.stride(0); };
  p.d_o = d_o.data_ptr();
  p.delta = delta.data_ptr();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  p.do_batch_stride = batch_stride(d_o), p.do_head_stride = d_o.stride(1);
  p.do_row_stride = d_o.stride(2);
  p.dq_batch_stride = batch_stride(dq), p.dq_head_stride = dq.stride(1);
  p.dq_row_stride = dq.stride(2);
  p.dk_batch_stride = batch_stride(dk), p.dk_head_stride = dk.stride(1);
  p.dk_row_stride = dk.stride(2);
  p.dv_batch_stride = batch_stride(dv), p.dv_head_stride = dv.stride(1);
  p.dv_row_stride = dv.stride(2);
}

}  // namespace swaa::torch_boundary
