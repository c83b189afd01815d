// Host mode of the SIMT layer (g++ -DSWAA_SIMT_HOST): CUDA kernel source runs on the CPU. See
// simt.h for the API and the rules, runtime.h for the execution model.
#pragma once

// Must precede every CUDA header: crt/host_defines.h keeps an existing __shared__. A
// `static thread_local` is shared by the fibers of the block this OS thread is running.
#ifndef __shared__
#define __shared__ static thread_local
#endif
#include <cuda_runtime.h>  // types only (dim3, cudaStream_t, cudaError_t); cudart is not linked
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#include "intrinsics.h"
#include "runtime.h"
#include "scheduler.h"

#define threadIdx (::swaa::simt::host::current_fiber().thread_idx)
#define blockIdx (::swaa::simt::host::tls_emulator->block_idx)
#define blockDim (::swaa::simt::host::tls_emulator->block_dim)
#define gridDim (::swaa::simt::host::tls_emulator->grid_dim)
#define warpSize 32

// RaceCheck hands each thread its private copy (race_check.h).
#define SWAA_DYNAMIC_SMEM(name) char* name = ::swaa::simt::host::dynamic_smem()

namespace swaa::simt {

// Runs the whole grid before returning (the stream is ignored); throws std::runtime_error with
// the kernel, block, threads and file:line involved when the emulator detects a bug.
template <typename... KArgs, typename... Args>
cudaError_t launch(void (*kernel)(KArgs...), host::LaunchGrid grid, dim3 block, size_t smem_bytes,
                   cudaStream_t /*stream*/, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "launch: wrong number of kernel arguments");
  using Params = std::tuple<std::decay_t<KArgs>...>;
  Params params(std::forward<Args>(args)...);  // converted once, as <<<>>> does
  const auto invoke = [](void (*k)(), void* p) {
    std::apply(reinterpret_cast<void (*)(KArgs...)>(k), *static_cast<Params*>(p));
  };
  host::run_grid(invoke, reinterpret_cast<void (*)()>(kernel), &params, grid, block, smem_bytes);
  return cudaSuccess;
}

// Process-wide; read at the start of each launch. The seed drives Mode::Random; every launch
// restarts from it, so a run is reproducible.
inline void set_mode(Mode m, uint64_t seed = 0) {
  host::global_seed = seed;
  host::global_mode = m;
}
inline Mode mode() { return host::global_mode.load(); }

// The GPU whose limits each launch is checked against (dynamic shared memory per block): 80 (the
// default: the smallest limit of the targets we build for), 86, 87, 89 or 90. Process-wide.
inline void set_target_sm(int sm) {
  if (host::max_dynamic_smem_bytes(sm) == 0) {
    throw std::invalid_argument("swaa::simt::set_target_sm: unknown target sm_" +
                                std::to_string(sm) + " (known: 80, 86, 87, 89, 90)");
  }
  host::global_target_sm = sm;
}
inline int target_sm() { return host::global_target_sm.load(); }

}  // namespace swaa::simt
