// Runtime (dtype, head dim) -> the compiled forward instantiation (tile or decode kernel; which
// one runs is decode_plan.h's rule, applied by the torch boundary). The list of pairs is generated
// (instantiations/forward_list.inc, by generate_instantiations.py); this header only reads it.
#pragma once
#include <cstdint>

#include "../params.h"
#include "decode_plan.h"
#if defined(__CUDACC__) || defined(SWAA_SIMT_HOST)
#include "../simt/simt.h"
#else
// Plain host code that only calls into the kernels (the torch registration, compiled by g++):
// it needs the types, not the SIMT layer.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#endif

namespace swaa::cuda {

// Names match the dtype names of the instantiation list.
enum class Dtype { fp16, bf16 };

// Defined in forward_launch.cuh, instantiated once per listed pair.
template <typename Element, int kHeadDim>
cudaError_t run_forward(const AttentionParams& params, cudaStream_t stream);

inline bool forward_supports(Dtype dtype, int64_t head_dim) {
#define SWAA_FORWARD_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  if (dtype == Dtype::NAME && head_dim == HEAD_DIM) return true;
#include "instantiations/forward_list.inc"
#undef SWAA_FORWARD_INSTANTIATION
  return false;
}

// Defined in decode_launch.cuh, instantiated for the same pairs.
template <typename Element, int kHeadDim>
cudaError_t run_decode(const DecodeParams& params, cudaStream_t stream);

// The paged variants (K/V through params.block_table), same pairs.
template <typename Element, int kHeadDim>
cudaError_t run_forward_paged(const AttentionParams& params, cudaStream_t stream);
template <typename Element, int kHeadDim>
cudaError_t run_decode_paged(const DecodeParams& params, cudaStream_t stream);

// Launches the forward kernel on `stream`, its paged variant when params has a block table.
// Callers check forward_supports first.
inline cudaError_t forward(const AttentionParams& params, Dtype dtype, cudaStream_t stream) {
  const bool paged = params.block_table != nullptr;
#define SWAA_FORWARD_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  if (!paged && dtype == Dtype::NAME && params.head_dim == HEAD_DIM) \
    return run_forward<ELEMENT, HEAD_DIM>(params, stream);
#include "instantiations/forward_list.inc"
#undef SWAA_FORWARD_INSTANTIATION
#define SWAA_FORWARD_PAGED_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  if (paged && dtype == Dtype::NAME && params.head_dim == HEAD_DIM) \
    return run_forward_paged<ELEMENT, HEAD_DIM>(params, stream);
#include "instantiations/forward_paged_list.inc"
#undef SWAA_FORWARD_PAGED_INSTANTIATION
  return cudaErrorInvalidValue;
}

// Launches the split-KV decode kernel (and its combine step) on `stream`; same pairs and choice.
inline cudaError_t decode(const DecodeParams& params, Dtype dtype, cudaStream_t stream) {
  const bool paged = params.block_table != nullptr;
#define SWAA_DECODE_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  if (!paged && dtype == Dtype::NAME && params.head_dim == HEAD_DIM) \
    return run_decode<ELEMENT, HEAD_DIM>(params, stream);
#include "instantiations/decode_list.inc"
#undef SWAA_DECODE_INSTANTIATION
#define SWAA_DECODE_PAGED_INSTANTIATION(NAME, ELEMENT, HEAD_DIM) \
  if (paged && dtype == Dtype::NAME && params.head_dim == HEAD_DIM) \
    return run_decode_paged<ELEMENT, HEAD_DIM>(params, stream);
#include "instantiations/decode_paged_list.inc"
#undef SWAA_DECODE_PAGED_INSTANTIATION
  return cudaErrorInvalidValue;
}

}  // namespace swaa::cuda
