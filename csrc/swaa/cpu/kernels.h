// CPU sink + sliding-window attention kernels (DESIGN.md §5, CPU). Templated on the compute type
// (float or double); the torch boundary converts bf16/fp16 inputs to float32 once (O(L*D)).
#pragma once
#include "../params.h"

namespace swaa::cpu {

// Query rows per work item and keys per tile. Both passes of the backward use the same tiles.
constexpr int64_t kBlockM = 64;
constexpr int64_t kBlockN = 64;

template <typename scalar_t>
void forward(const AttentionParams& params);

template <typename scalar_t>
void backward(const AttentionBackwardParams& params);

}  // namespace swaa::cpu
