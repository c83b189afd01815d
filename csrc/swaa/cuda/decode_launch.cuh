// Launcher of the split-KV decode kernel and its combine step for one (element type, head dim).
// Included by the generated instantiation files (one per pair and K/V source) and by the
// emulated build.
#pragma once
#include "decode_kernel.cuh"

namespace swaa::cuda {

// Launches on `stream` (the combine step after the decode blocks, when there are several splits)
// and returns the first launch error; never synchronises. The torch boundary fills num_splits,
// row_groups and the partial buffers from plan_decode (decode_plan.h).
template <typename Element, int kHeadDim, bool kPaged>
cudaError_t launch_decode(const DecodeParams& params, cudaStream_t stream) {
  using Traits = DecodeTraits<Element, kHeadDim>;
  if (params.len_q == 0 || params.batch == 0 || params.heads_q == 0) return cudaSuccess;
  const dim3 grid(unsigned(params.row_groups * params.num_splits), unsigned(params.heads_kv),
                  unsigned(params.batch));
  const cudaError_t err = simt::launch(&decode_kernel<Traits, kPaged>, grid,
                                       dim3(Traits::kNThreads), Traits::kSmemBytes, stream, params);
  if (err != cudaSuccess || params.num_splits == 1) return err;
  return simt::launch(&combine_kernel<Traits>, dim3(unsigned(params.heads_q), unsigned(params.batch)),
                      dim3(Traits::kCombineThreads), 0, stream, params);
}

// K/V packed (dense, varlen) and read through the block table (paged): one instantiation each.
template <typename Element, int kHeadDim>
cudaError_t run_decode(const DecodeParams& params, cudaStream_t stream) {
  return launch_decode<Element, kHeadDim, false>(params, stream);
}
template <typename Element, int kHeadDim>
cudaError_t run_decode_paged(const DecodeParams& params, cudaStream_t stream) {
  return launch_decode<Element, kHeadDim, true>(params, stream);
}

}  // namespace swaa::cuda
