// CUDA registrations of swaa_ext::fwd / swaa_ext::bwd: the tensor-core kernels (csrc/swaa/cuda)
// on the current stream, without syncing. Host code only, so g++ compiles it (nvcc through the
// torch headers takes minutes); the kernels are the .cu files.
#include "../cuda_backward_boundary.h"

// c10's stream header, not ATen/cuda/CUDAContext.h: that one needs the cuSPARSE/cuBLAS headers.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace swaa::torch_boundary {
namespace {

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, std::optional<int64_t> window,
                                                int64_t sinks,
                                                const std::optional<at::Tensor>& full_from,
                                                double scale) {
  const c10::cuda::CUDAGuard device_guard(q.device());
  CudaForward f = prepare_cuda_forward(q, k, v, window, sinks, full_from, scale, "CUDA");
  C10_CUDA_CHECK(cuda::forward(f.params, f.dtype, c10::cuda::getCurrentCUDAStream()));
  return {f.out, f.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
    double scale) {
  const c10::cuda::CUDAGuard device_guard(q.device());
  CudaBackward g = prepare_cuda_backward(grad_out, grad_lse, q, k, v, out, lse, window, sinks,
                                         full_from, scale, "CUDA");
  C10_CUDA_CHECK(cuda::backward(g.params, g.dtype, c10::cuda::getCurrentCUDAStream()));
  return {g.dq, g.dk, g.dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(swaa_ext, CUDA, m) {
  m.impl("fwd", &forward_cuda);
  m.impl("bwd", &backward_cuda);
}

}  // namespace swaa::torch_boundary
