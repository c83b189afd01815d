// Launcher of the backward kernels for one (element type, head dim): the dK/dV kernel, then the
// dQ kernel, on one stream. Included by the generated instantiation files (one per pair) and by
// the emulated build.
#pragma once
#include "backward_kernel.cuh"

namespace swaa::cuda {

// Launches on `stream` and returns the first launch error; never synchronises. The two kernels
// write disjoint outputs and only read the inputs, so their order does not matter. dK/dV runs
// whenever there are keys (len_q == 0 gives zeros); simt::launch raises the dynamic
// shared-memory limit when kSmemBytes is over the 48 KiB default (once per device).
template <typename Element, int kHeadDim>
cudaError_t run_backward(const AttentionBackwardParams& params, cudaStream_t stream) {
  using KV = BackwardKVTraits<Element, kHeadDim>;
  using Q = BackwardQTraits<Element, kHeadDim>;
  if (params.batch == 0 || params.heads_kv == 0) return cudaSuccess;
  if (params.len_k > 0) {
    const dim3 grid(unsigned(ceil_div(params.len_k, KV::kBlockN)), unsigned(params.heads_kv),
                    unsigned(params.batch));
    const cudaError_t err = simt::launch(&dkdv_kernel<KV>, grid, dim3(KV::kNThreads),
                                         KV::kSmemBytes, stream, params);
    if (err != cudaSuccess) return err;
  }
  if (params.len_q == 0) return cudaSuccess;
  const dim3 grid(unsigned(ceil_div(params.len_q, Q::kBlockM)), unsigned(params.heads_q),
                  unsigned(params.batch));
  return simt::launch(&dq_kernel<Q>, grid, dim3(Q::kNThreads), Q::kSmemBytes, stream, params);
}

}  // namespace swaa::cuda
