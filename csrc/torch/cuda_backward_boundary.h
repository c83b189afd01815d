// The torch side of the CUDA backward kernels, shared by the real CUDA registration
// (cuda/cuda_ops.cpp) and the emulated one (emulated/emulated_ops.cpp): the same checks as the
// forward, the softmax row term delta, and the params the kernels are launched with. Include it
// first: in emulated (host) mode the SIMT layer must come before any CUDA header.
#pragma once
#include "../swaa/cuda/backward_switch.h"
#include "cuda_forward_boundary.h"

namespace swaa::torch_boundary {

// A launch-ready backward: the tensors the params point into stay alive with it.
struct CudaBackward {
  at::Tensor q, k, v, d_o, lse, delta, full_from, dq, dk, dv;
  cuda::Dtype dtype;
  AttentionBackwardParams params;
};

inline CudaBackward prepare_cuda_backward(const at::Tensor& grad_out,
                                          const std::optional<at::Tensor>& grad_lse,
                                          const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const at::Tensor& out,
                                          const at::Tensor& lse, std::optional<int64_t> window,
                                          int64_t sinks,
                                          const std::optional<at::Tensor>& full_from,
                                          double scale, const char* backend) {
  CudaBackward g;
  g.dtype = check_cuda_kernel_inputs(q, k, v, window, sinks, full_from, scale, backend);
  check_backward_inputs(grad_out, grad_lse, q, out, lse);
  g.q = aligned_for_kernel(q);
  g.k = aligned_for_kernel(k);
  g.v = aligned_for_kernel(v);
  // Autograd may hand any layout and dtype: the kernel wants q's dtype and a contiguous last dim.
  at::Tensor d_o = grad_out.to(q.scalar_type());
  if (d_o.size(3) > 1 && d_o.stride(3) != 1) d_o = d_o.contiguous();
  g.d_o = aligned_for_kernel(d_o);
  // delta = rowsum(dO * O) - dLSE, (B, Hq, Lq) float32: one elementwise pass here rather than a
  // third kernel; the dLSE term makes the gradient through a returned LSE right.
  at::Tensor delta = (g.d_o.to(at::kFloat) * out.to(at::kFloat)).sum(-1);
  if (grad_lse.has_value()) delta = delta - grad_lse->to(at::kFloat);
  g.delta = delta.contiguous();
  g.lse = lse.to(at::kFloat).contiguous();
  g.dq = at::empty(q.sizes(), q.options());
  g.dk = at::empty(k.sizes(), k.options());
  g.dv = at::empty(v.sizes(), v.options());
  g.full_from = normalized_full_from(q, k.size(2), full_from);

  // The kernels read o only through delta: the params' o points at dq, which has q's layout.
  static_cast<AttentionParams&>(g.params) =
      make_params(g.q, g.k, g.v, g.dq, g.lse, window, sinks, g.full_from, scale);
  g.params.d_o = g.d_o.data_ptr();
  g.params.do_batch_stride = g.d_o.stride(0), g.params.do_head_stride = g.d_o.stride(1);
  g.params.do_row_stride = g.d_o.stride(2);
  g.params.delta = g.delta.data_ptr();
  g.params.dq = g.dq.data_ptr();
  g.params.dk = g.dk.data_ptr();
  g.params.dv = g.dv.data_ptr();
  return g;
}

}  // namespace swaa::torch_boundary
