// The torch side of the CUDA backward kernels, shared by the real CUDA registration
// (cuda/cuda_ops.cpp) and the emulated one (emulated/emulated_ops.cpp): the same checks as the
// forward, the softmax row term delta, and the params the kernels are launched with. Include it
// first: in emulated (host) mode the SIMT layer must come before any CUDA header.
#pragma once
#include "../swaa/cuda/backward_switch.h"
#include "cuda_forward_boundary.h"

#include <string_view>

namespace swaa::torch_boundary {

// A launch-ready backward: the tensors the params point into stay alive with it.
struct CudaBackward {
  at::Tensor q, k, v, d_o, lse, delta, full_from, dq, dk, dv;
  cuda::Dtype dtype;
  AttentionBackwardParams params;
};

// After the layout's argument check; `varlen` null: dense.
inline CudaBackward prepare_cuda_backward(const at::Tensor& grad_out,
                                          const std::optional<at::Tensor>& grad_lse,
                                          const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const at::Tensor& out,
                                          const at::Tensor& lse, std::optional<int64_t> window,
                                          int64_t sinks,
                                          const std::optional<at::Tensor>& full_from,
                                          double scale, const char* backend,
                                          const Varlen* varlen) {
  CudaBackward g;
  g.dtype = check_cuda_kernel_inputs(q, scale, backend, batch_size(q, varlen), varlen != nullptr);
  check_backward_inputs(grad_out, grad_lse, q, out, lse, lse_shape(q, varlen));
  g.q = aligned_for_kernel(heads_rows(q, varlen));
  g.k = aligned_for_kernel(heads_rows(k, varlen));
  g.v = aligned_for_kernel(heads_rows(v, varlen));
  // Autograd may hand any layout and dtype: the kernel wants q's dtype and a contiguous last dim.
  at::Tensor d_o = grad_out.to(q.scalar_type());
  if (d_o.size(-1) > 1 && d_o.stride(-1) != 1) d_o = d_o.contiguous();
  // delta = rowsum(dO * O) - dLSE in the LSE's layout, float32: one elementwise pass here rather
  // than a third kernel; the dLSE term makes the gradient through a returned LSE right.
  at::Tensor delta = (d_o.to(at::kFloat) * out.to(at::kFloat)).sum(-1);
  if (varlen) delta = delta.t();  // (total_q, Hq) -> (Hq, total_q)
  if (grad_lse.has_value()) delta = delta - grad_lse->to(at::kFloat);
  g.d_o = aligned_for_kernel(heads_rows(d_o, varlen));
  g.delta = delta.contiguous();
  g.lse = lse.to(at::kFloat).contiguous();
  g.dq = at::empty(q.sizes(), q.options());
  g.dk = at::empty(k.sizes(), k.options());
  g.dv = at::empty(v.sizes(), v.options());
  g.full_from = normalized_full_from(full_from);

  // The kernels read o only through delta: the params' o points at dq, which has q's layout.
  static_cast<AttentionParams&>(g.params) =
      make_params(g.q, g.k, g.v, heads_rows(g.dq, varlen), lse_rows(g.lse, varlen), window,
                  sinks, g.full_from, scale);
  if (varlen) apply_varlen(g.params, *varlen);
  set_backward_tensors(g.params, g.d_o, g.delta, heads_rows(g.dq, varlen),
                       heads_rows(g.dk, varlen), heads_rows(g.dv, varlen));
  return g;
}

// The ops (fwd, bwd, fwd_varlen, bwd_varlen, fwd_paged, fwd_paged_out) of a CUDA-kernel backend,
// real or emulated.
// `Backend` supplies `kName`, `guard(q)` (an RAII object: device guard, or a device check) and
// `forward(params, dtype)` / `decode(params, dtype)` / `backward(params, dtype)` that launch the
// kernels, and `num_sms(q)`, the SM count decode_plan.h sizes the decode grid by.
template <typename Backend>
struct CudaKernelOps {
  // The forward kernel `f` was planned for (decode_plan.h's rule).
  static void launch_forward(const CudaForward& f) {
    if (f.plan.use_decode) {
      Backend::decode(f.decode, f.dtype);
    } else {
      Backend::forward(f.params(), f.dtype);
    }
  }

  static std::tuple<at::Tensor, at::Tensor> fwd(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v,
                                                std::optional<int64_t> window, int64_t sinks,
                                                const std::optional<at::Tensor>& full_from,
                                                double scale) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    check_attention_inputs(q, k, v, window, sinks, full_from);
    return run_fwd(q, k, v, window, sinks, full_from, scale, nullptr);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> bwd(
      const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
      const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
      std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
      double scale) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    check_attention_inputs(q, k, v, window, sinks, full_from);
    return run_bwd(grad_out, grad_lse, q, k, v, out, lse, window, sinks, full_from, scale,
                   nullptr);
  }

  static std::tuple<at::Tensor, at::Tensor> fwd_varlen(
      const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
      const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
      int64_t max_seqlen_k, std::optional<int64_t> window, int64_t sinks,
      const std::optional<at::Tensor>& full_from, double scale) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    const Varlen varlen = checked_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                         max_seqlen_k, window, sinks, full_from);
    return run_fwd(q, k, v, window, sinks, full_from, scale, &varlen);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> bwd_varlen(
      const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
      const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
      const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
      int64_t max_seqlen_k, std::optional<int64_t> window, int64_t sinks,
      const std::optional<at::Tensor>& full_from, double scale) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    const Varlen varlen = checked_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                         max_seqlen_k, window, sinks, full_from);
    return run_bwd(grad_out, grad_lse, q, k, v, out, lse, window, sinks, full_from, scale,
                   &varlen);
  }

  // The paged forward: K/V read through the block table in the kernels, never gathered; the
  // "rows" layout only ("amx" is the CPU kernels').
  static std::tuple<at::Tensor, at::Tensor> fwd_paged(
      const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
      const at::Tensor& block_table, const at::Tensor& cu_seqlens_q, const at::Tensor& seqused_k,
      int64_t max_seqlen_q, int64_t max_seqlen_k, std::optional<int64_t> window, int64_t sinks,
      const std::optional<at::Tensor>& full_from, double scale, std::string_view kv_layout) {
    const at::Tensor out = at::empty(q.sizes(), q.options());
    const at::Tensor lse = at::empty(lse_shape(q, true), q.options().dtype(at::kFloat));
    run_paged(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k, max_seqlen_q,
              max_seqlen_k, window, sinks, full_from, scale, out, lse, kv_layout);
    return {out, lse};
  }

  static void fwd_paged_out(const at::Tensor& q, const at::Tensor& k_cache,
                            const at::Tensor& v_cache, const at::Tensor& block_table,
                            const at::Tensor& cu_seqlens_q, const at::Tensor& seqused_k,
                            int64_t max_seqlen_q, int64_t max_seqlen_k,
                            std::optional<int64_t> window, int64_t sinks,
                            const std::optional<at::Tensor>& full_from, double scale,
                            const at::Tensor& out, const std::optional<at::Tensor>& lse,
                            std::string_view kv_layout) {
    run_paged(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k, max_seqlen_q,
              max_seqlen_k, window, sinks, full_from, scale, out, lse, kv_layout);
  }

 private:
  static void run_paged(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                        const at::Tensor& block_table, const at::Tensor& cu_seqlens_q,
                        const at::Tensor& seqused_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
                        std::optional<int64_t> window, int64_t sinks,
                        const std::optional<at::Tensor>& full_from, double scale,
                        const at::Tensor& out, const std::optional<at::Tensor>& lse,
                        std::string_view kv_layout) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    TORCH_CHECK_VALUE(kv_layout == "rows", "kv_layout must be \"rows\" on ", Backend::kName,
                      " (\"amx\" is the CPU kernels' layout), got \"", kv_layout, "\"");
    const Paged paged = checked_paged(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k,
                                      max_seqlen_q, max_seqlen_k, window, sinks, full_from);
    check_paged_outputs(q, out, lse, at::kFloat);
    // The kernels store pairs of elements: an out whose rows are not aligned for that (a view at
    // an odd offset) is written through a scratch tensor.
    const bool direct = rows_aligned_for_kernel(heads_rows(out, true));
    const at::Tensor target = direct ? out : at::empty(q.sizes(), q.options());
    CudaForward f = prepare_cuda_paged(q, k_cache, v_cache, paged, window, sinks, full_from, scale,
                                       target, lse.has_value() ? *lse : at::Tensor(),
                                       Backend::kName, KernelChoice{Backend::num_sms(q)});
    launch_forward(f);
    if (!direct) out.copy_(target);
  }

  static std::tuple<at::Tensor, at::Tensor> run_fwd(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v,
                                                    std::optional<int64_t> window, int64_t sinks,
                                                    const std::optional<at::Tensor>& full_from,
                                                    double scale, const Varlen* varlen) {
    CudaForward f = prepare_cuda_forward(q, k, v, window, sinks, full_from, scale, Backend::kName,
                                         varlen, KernelChoice{Backend::num_sms(q)});
    launch_forward(f);
    return {f.out, f.lse};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> run_bwd(
      const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
      const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
      std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
      double scale, const Varlen* varlen) {
    CudaBackward g = prepare_cuda_backward(grad_out, grad_lse, q, k, v, out, lse, window, sinks,
                                           full_from, scale, Backend::kName, varlen);
    Backend::backward(g.params, g.dtype);
    return {g.dq, g.dk, g.dv};
  }
};

}  // namespace swaa::torch_boundary
