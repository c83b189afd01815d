// Every launcher of the generated instantiation lists (generate_instantiations.py), explicitly
// instantiated for a build that compiles the kernels into one g++ translation unit in SIMT host
// mode: the emulated extension and the C++ emulated tests. Include it in exactly one translation
// unit per binary. The nvcc build compiles one .cu per entry instead.
#pragma once
#include "backward_launch.cuh"
#include "decode_launch.cuh"
#include "forward_launch.cuh"

namespace swaa::cuda {
#define SWAA_FORWARD_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  template cudaError_t run_forward<ELEMENT, HEAD_DIM>(const AttentionParams&, cudaStream_t);
#include "instantiations/forward_list.inc"
#undef SWAA_FORWARD_INSTANTIATION
#define SWAA_FORWARD_PAGED_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  template cudaError_t run_forward_paged<ELEMENT, HEAD_DIM>(const AttentionParams&, cudaStream_t);
#include "instantiations/forward_paged_list.inc"
#undef SWAA_FORWARD_PAGED_INSTANTIATION
#define SWAA_DECODE_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  template cudaError_t run_decode<ELEMENT, HEAD_DIM>(const DecodeParams&, cudaStream_t);
#include "instantiations/decode_list.inc"
#undef SWAA_DECODE_INSTANTIATION
#define SWAA_DECODE_PAGED_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  template cudaError_t run_decode_paged<ELEMENT, HEAD_DIM>(const DecodeParams&, cudaStream_t);
#include "instantiations/decode_paged_list.inc"
#undef SWAA_DECODE_PAGED_INSTANTIATION
#define SWAA_BACKWARD_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  template cudaError_t run_backward<ELEMENT, HEAD_DIM>(const AttentionBackwardParams&, \
                                                       cudaStream_t);
#include "instantiations/backward_list.inc"
#undef SWAA_BACKWARD_INSTANTIATION
}  // namespace swaa::cuda
