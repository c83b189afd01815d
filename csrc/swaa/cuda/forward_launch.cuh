// Launcher of the forward kernel for one (element type, head dim): grid, shared memory, launch.
// Included by the generated instantiation files (one per pair and K/V source) and by the
// emulated build.
#pragma once
#include "forward_kernel.cuh"

namespace swaa::cuda {

// Launches on `stream` and returns the launch status; never synchronises. simt::launch raises the
// dynamic shared-memory limit when kSmemBytes is over the 48 KiB default (once per device).
template <typename Element, int kHeadDim, bool kPaged>
cudaError_t launch_forward(const AttentionParams& params, cudaStream_t stream) {
  using Traits = ForwardTraits<Element, kHeadDim>;
  if (params.len_q == 0 || params.batch == 0 || params.heads_q == 0) return cudaSuccess;
  const auto kernel = &forward_kernel<Traits, kPaged>;
  const dim3 grid(unsigned(ceil_div(params.len_q, Traits::kBlockM)), unsigned(params.heads_q),
                  unsigned(params.batch));
  return simt::launch(kernel, grid, dim3(Traits::kNThreads), Traits::kSmemBytes, stream, params);
}

// K/V packed (dense, varlen) and read through the block table (paged): one instantiation each.
template <typename Element, int kHeadDim>
cudaError_t run_forward(const AttentionParams& params, cudaStream_t stream) {
  return launch_forward<Element, kHeadDim, false>(params, stream);
}
template <typename Element, int kHeadDim>
cudaError_t run_forward_paged(const AttentionParams& params, cudaStream_t stream) {
  return launch_forward<Element, kHeadDim, true>(params, stream);
}

}  // namespace swaa::cuda
