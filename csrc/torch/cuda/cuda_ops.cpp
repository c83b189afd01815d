// CUDA registrations of swaa_ext::fwd / bwd / fwd_varlen / bwd_varlen / fwd_paged (_out): the
// tensor-core kernels
// (csrc/swaa/cuda) on the current stream, without syncing. Host code only, so g++ compiles it (nvcc through the
// torch headers takes minutes); the kernels are the .cu files.
#include "../cuda_backward_boundary.h"

// c10's stream header, not ATen/cuda/CUDAContext.h: that one needs the cuSPARSE/cuBLAS headers.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <atomic>

namespace swaa::torch_boundary {
namespace {

struct Cuda {
  static constexpr const char* kName = "CUDA";
  static c10::cuda::CUDAGuard guard(const at::Tensor& q) {
    return c10::cuda::CUDAGuard(q.device());
  }
  static void forward(const AttentionParams& p, cuda::Dtype dtype) {
    C10_CUDA_CHECK(cuda::forward(p, dtype, c10::cuda::getCurrentCUDAStream()));
  }
  static void decode(const DecodeParams& p, cuda::Dtype dtype) {
    C10_CUDA_CHECK(cuda::decode(p, dtype, c10::cuda::getCurrentCUDAStream()));
  }
  // The current device's SM count, asked once per device (a decode step calls this per layer).
  static int64_t num_sms(const at::Tensor& q) {
    constexpr int kMaxDevices = 64;
    static std::array<std::atomic<int>, kMaxDevices> known{};
    const int device = q.get_device();
    if (device < 0 || device >= kMaxDevices) return sms_of(device);
    int sms = known[device].load(std::memory_order_relaxed);
    if (sms == 0) known[device].store(sms = sms_of(device), std::memory_order_relaxed);
    return sms;
  }
  static int sms_of(int device) {
    int sms = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  }
  static void backward(const AttentionBackwardParams& p, cuda::Dtype dtype) {
    C10_CUDA_CHECK(cuda::backward(p, dtype, c10::cuda::getCurrentCUDAStream()));
  }
};
using Ops = CudaKernelOps<Cuda>;

}  // namespace

// The varlen and paged ops trust their index tensors' values on the GPU (checking them would
// sync; arguments.h, paged_arguments.h).
TORCH_LIBRARY_IMPL(swaa_ext, CUDA, m) {
  m.impl("fwd", &Ops::fwd);
  m.impl("bwd", &Ops::bwd);
  m.impl("fwd_varlen", &Ops::fwd_varlen);
  m.impl("bwd_varlen", &Ops::bwd_varlen);
  m.impl("fwd_paged", &Ops::fwd_paged);
  m.impl("fwd_paged_out", &Ops::fwd_paged_out);
}

}  // namespace swaa::torch_boundary
