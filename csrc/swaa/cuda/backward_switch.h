// Runtime (dtype, head dim) -> the compiled backward instantiation. The list of pairs is generated
// (instantiations/backward_list.inc, by generate_instantiations.py); this header only reads it.
#pragma once
#include "forward_switch.h"  // Dtype, and the headers plain host code needs

namespace swaa::cuda {

// Defined in backward_launch.cuh, instantiated once per listed pair.
template <typename Element, int kHeadDim>
cudaError_t run_backward(const AttentionBackwardParams& params, cudaStream_t stream);

// Launches the backward kernels on `stream`. The generated lists of both directions hold the
// same pairs, so callers check forward_supports first.
inline cudaError_t backward(const AttentionBackwardParams& params, Dtype dtype,
                            cudaStream_t stream) {
#define SWAA_BACKWARD_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  if (dtype == Dtype::NAME && params.head_dim == HEAD_DIM)   \
    return run_backward<ELEMENT, HEAD_DIM>(params, stream);
#include "instantiations/backward_list.inc"
#undef SWAA_BACKWARD_INSTANTIATION
  return cudaErrorInvalidValue;
}

}  // namespace swaa::cuda
