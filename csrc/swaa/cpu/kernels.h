// CPU sink + sliding-window attention kernels (docs/architecture.md). The backward is templated
// on the compute type (float or double): the torch boundary converts bf16/fp16 inputs to float32
// once (O(L*D)). The forward is templated on the element type of q, k, v and o (element.h):
// float, double, or bf16 / fp16 read in place and computed in float32 (the paged KV cache), with
// lse in the compute type; p.lse may be null (not asked for).
#pragma once
#include "../params.h"
#include "element.h"

namespace swaa::cpu {

// Query rows per work item and keys per tile. Both passes of the backward use the same tiles.
constexpr int64_t kBlockM = 64;
constexpr int64_t kBlockN = 64;

template <typename element_t>
void forward(const AttentionParams& params);

template <typename scalar_t>
void backward(const AttentionBackwardParams& params);

}  // namespace swaa::cpu
