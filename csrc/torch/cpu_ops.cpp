// CPU registrations of swaa_ext::fwd / bwd and fwd_varlen / bwd_varlen: check, normalise, fill
// params, run. Both layouts share one path: the varlen one only adds cu_seqlens to the params.
#include <torch/library.h>

#include "../swaa/cpu/kernels.h"
#include "arguments.h"
#include "paged_arguments.h"

namespace swaa::torch_boundary {
namespace {

constexpr int64_t kCpuMaxHeadDim = 256;

// The CPU kernels compute in float32 (float64 for float64 inputs); bf16/fp16 inputs are
// converted once, which costs O(L * D) against the kernels' O(L * (window + sinks) * D).
at::ScalarType compute_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// After the layout's argument check. `varlen` null: dense.
std::tuple<at::Tensor, at::Tensor> run_forward(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, std::optional<int64_t> window,
                                               int64_t sinks,
                                               const std::optional<at::Tensor>& full_from,
                                               double scale, const Varlen* varlen) {
  check_head_dim(q, kCpuMaxHeadDim, "CPU");
  const at::ScalarType dtype = compute_dtype(q);
  const at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype);
  at::Tensor out = at::empty(q.sizes(), q.options().dtype(dtype));
  at::Tensor lse = at::empty(lse_shape(q, varlen), q.options().dtype(dtype));
  const at::Tensor ff = normalized_full_from(full_from);
  AttentionParams p = make_params(heads_rows(qc, varlen), heads_rows(kc, varlen),
                                  heads_rows(vc, varlen), heads_rows(out, varlen),
                                  lse_rows(lse, varlen), window, sinks, ff, scale);
  if (varlen) apply_varlen(p, *varlen);
  if (dtype == at::kDouble) {
    cpu::forward<double>(p);
  } else {
    cpu::forward<float>(p);
  }
  return {out.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
    double scale, const Varlen* varlen) {
  check_head_dim(q, kCpuMaxHeadDim, "CPU");
  check_backward_inputs(grad_out, grad_lse, q, out, lse, lse_shape(q, varlen));
  const at::ScalarType dtype = compute_dtype(q);
  const at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype);
  // The kernels need a contiguous last dim; autograd may hand us any layout.
  const at::Tensor d_o = grad_out.to(dtype).contiguous();
  // delta = rowsum(dO * O) - dLSE: the softmax backward's per-row term, in the LSE's layout.
  at::Tensor delta = (d_o * out.to(dtype)).sum(-1);
  if (varlen) delta = delta.t();  // (total_q, Hq) -> (Hq, total_q)
  if (grad_lse.has_value()) delta = delta - grad_lse->to(dtype);
  delta = delta.contiguous();
  const at::Tensor lse_c = lse.to(dtype).contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options().dtype(dtype));
  at::Tensor dk = at::empty(k.sizes(), k.options().dtype(dtype));
  at::Tensor dv = at::empty(v.sizes(), v.options().dtype(dtype));
  const at::Tensor ff = normalized_full_from(full_from);

  AttentionBackwardParams p{};
  static_cast<AttentionParams&>(p) =
      make_params(heads_rows(qc, varlen), heads_rows(kc, varlen), heads_rows(vc, varlen),
                  heads_rows(dq, varlen), lse_rows(lse_c, varlen), window, sinks, ff, scale);
  if (varlen) apply_varlen(p, *varlen);
  set_backward_tensors(p, heads_rows(d_o, varlen), delta, heads_rows(dq, varlen),
                       heads_rows(dk, varlen), heads_rows(dv, varlen));
  if (dtype == at::kDouble) {
    cpu::backward<double>(p);
  } else {
    cpu::backward<float>(p);
  }
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, std::optional<int64_t> window,
                                               int64_t sinks,
                                               const std::optional<at::Tensor>& full_from,
                                               double scale) {
  check_attention_inputs(q, k, v, window, sinks, full_from);
  return run_forward(q, k, v, window, sinks, full_from, scale, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
    double scale) {
  check_attention_inputs(q, k, v, window, sinks, full_from);
  return run_backward(grad_out, grad_lse, q, k, v, out, lse, window, sinks, full_from, scale,
                      nullptr);
}

std::tuple<at::Tensor, at::Tensor> forward_varlen_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu_seqlens_q,
    const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
    std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
    double scale) {
  const Varlen varlen = checked_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                       max_seqlen_k, window, sinks, full_from);
  return run_forward(q, k, v, window, sinks, full_from, scale, &varlen);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_varlen_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
    int64_t max_seqlen_k, std::optional<int64_t> window, int64_t sinks,
    const std::optional<at::Tensor>& full_from, double scale) {
  const Varlen varlen = checked_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                       max_seqlen_k, window, sinks, full_from);
  return run_backward(grad_out, grad_lse, q, k, v, out, lse, window, sinks, full_from, scale,
                      &varlen);
}

// Forward only (serving): keys and values stay in their pages, in the caller's dtype, so the
// caches must already be float32 / float64 (converting a whole cache per call would cost more
// than the attention).
std::tuple<at::Tensor, at::Tensor> forward_paged_cpu(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const at::Tensor& block_table, const at::Tensor& cu_seqlens_q, const at::Tensor& seqused_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, std::optional<int64_t> window, int64_t sinks,
    const std::optional<at::Tensor>& full_from, double scale) {
  const Paged paged = checked_paged(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k,
                                    max_seqlen_q, max_seqlen_k, window, sinks, full_from);
  check_head_dim(q, kCpuMaxHeadDim, "CPU");
  TORCH_CHECK_TYPE(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
                   "the CPU paged attention reads the KV cache in place, so q, k_cache and "
                   "v_cache must be float32 or float64, got ", q.scalar_type(),
                   "; gather the pages and call sliding_attention_varlen for other dtypes");
  constexpr bool packed = true;
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty(lse_shape(q, packed), q.options());
  const at::Tensor ff = normalized_full_from(full_from);
  AttentionParams p = make_params(heads_rows(q, packed), k_cache, v_cache, heads_rows(out, packed),
                                  lse_rows(lse, packed), window, sinks, ff, scale);
  apply_paged(p, paged, window);
  if (q.scalar_type() == at::kDouble) {
    cpu::forward<double>(p);
  } else {
    cpu::forward<float>(p);
  }
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(swaa_ext, CPU, m) {
  m.impl("fwd_paged", &forward_paged_cpu);
  m.impl("fwd", &forward_cpu);
  m.impl("bwd", &backward_cpu);
  m.impl("fwd_varlen", &forward_varlen_cpu);
  m.impl("bwd_varlen", &backward_varlen_cpu);
}

}  // namespace swaa::torch_boundary
