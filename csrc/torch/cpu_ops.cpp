// CPU registrations of swaa_ext::fwd / swaa_ext::bwd: check, normalise, fill params, run.
#include <torch/library.h>

#include "../swaa/cpu/kernels.h"
#include "arguments.h"

namespace swaa::torch_boundary {
namespace {

constexpr int64_t kCpuMaxHeadDim = 256;

// The CPU kernels compute in float32 (float64 for float64 inputs); bf16/fp16 inputs are
// converted once, which costs O(L * D) against the kernels' O(L * (window + sinks) * D).
at::ScalarType compute_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, std::optional<int64_t> window,
                                               int64_t sinks,
                                               const std::optional<at::Tensor>& full_from,
                                               double scale) {
  check_attention_inputs(q, k, v, window, sinks, full_from);
  check_head_dim(q, kCpuMaxHeadDim, "CPU");
  const at::ScalarType dtype = compute_dtype(q);
  const at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype);
  at::Tensor out = at::empty(q.sizes(), q.options().dtype(dtype));
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(dtype));
  const at::Tensor ff = normalized_full_from(q, k.size(2), full_from);
  const AttentionParams p = make_params(qc, kc, vc, out, lse, window, sinks, ff, scale);
  if (dtype == at::kDouble) {
    cpu::forward<double>(p);
  } else {
    cpu::forward<float>(p);
  }
  return {out.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
    double scale) {
  check_attention_inputs(q, k, v, window, sinks, full_from);
  check_head_dim(q, kCpuMaxHeadDim, "CPU");
  check_backward_inputs(grad_out, grad_lse, q, out, lse);
  const at::ScalarType dtype = compute_dtype(q);
  const at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype);
  // The kernels need a contiguous last dim; autograd may hand us any layout.
  const at::Tensor d_o = grad_out.to(dtype).contiguous();
  // delta = rowsum(dO * O) - dLSE: the softmax backward's per-row term, (B, Hq, Lq).
  at::Tensor delta = (d_o * out.to(dtype)).sum(-1);
  if (grad_lse.has_value()) delta = delta - grad_lse->to(dtype);
  delta = delta.contiguous();
  const at::Tensor lse_c = lse.to(dtype).contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options().dtype(dtype));
  at::Tensor dk = at::empty(k.sizes(), k.options().dtype(dtype));
  at::Tensor dv = at::empty(v.sizes(), v.options().dtype(dtype));
  const at::Tensor ff = normalized_full_from(q, k.size(2), full_from);

  AttentionBackwardParams p{};
  static_cast<AttentionParams&>(p) = make_params(qc, kc, vc, dq, lse_c, window, sinks, ff, scale);
  p.d_o = d_o.data_ptr();
  p.do_batch_stride = d_o.stride(0), p.do_head_stride = d_o.stride(1);
  p.do_row_stride = d_o.stride(2);
  p.delta = delta.data_ptr();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  if (dtype == at::kDouble) {
    cpu::backward<double>(p);
  } else {
    cpu::backward<float>(p);
  }
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(swaa_ext, CPU, m) {
  m.impl("fwd", &forward_cpu);
  m.impl("bwd", &backward_cpu);
}

}  // namespace swaa::torch_boundary
