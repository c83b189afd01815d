// Shared bits of the SIMT layer's C++ tests: EXPECT, fp16/bf16 bit helpers, buffers the kernels
// read and write, and running a check in every emulation mode. Builds in host mode (g++
// -DSWAA_SIMT_HOST: the emulator) and in device mode (nvcc -x cu: the same checks on a GPU,
// `make gpu-check`).
#pragma once
#include "swaa/simt/simt.h"

#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../expect.h"

// Memory a kernel reads or writes: the host vector itself in host mode, a device copy of it on a
// GPU (filled at construction, copied back by read()).
template <typename T>
class Buffer {
 public:
  explicit Buffer(std::vector<T> init) : host_(std::move(init)) {
#if defined(__CUDACC__)
    check(cudaMalloc(&device_, bytes()), "cudaMalloc");
    check(cudaMemcpy(device_, host_.data(), bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
#endif
  }
  Buffer(size_t n, T fill) : Buffer(std::vector<T>(n, fill)) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
#if defined(__CUDACC__)
  ~Buffer() { cudaFree(device_); }
  T* get() { return device_; }
  const std::vector<T>& read() {
    check(cudaDeviceSynchronize(), "kernel");
    check(cudaMemcpy(host_.data(), device_, bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return host_;
  }
#else
  T* get() { return host_.data(); }
  const std::vector<T>& read() { return host_; }
#endif

 private:
#if defined(__CUDACC__)
  static void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
    }
  }
  T* device_ = nullptr;
#endif
  size_t bytes() const { return host_.size() * sizeof(T); }
  std::vector<T> host_;
};

// Launches and, on a GPU, waits: an error (emulator diagnostics, or a CUDA error) throws.
template <typename... KArgs, typename... Args>
void run_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes,
                Args&&... args) {
  const cudaError_t err =
      swaa::simt::launch(kernel, grid, block, smem_bytes, cudaStream_t{}, std::forward<Args>(args)...);
#if defined(__CUDACC__)
  const cudaError_t done = err == cudaSuccess ? cudaDeviceSynchronize() : err;
  if (done != cudaSuccess) throw std::runtime_error(cudaGetErrorString(done));
#else
  (void)err;
#endif
}

#if defined(SWAA_SIMT_HOST)
struct ModeCase {
  swaa::simt::Mode mode;
  uint64_t seed;
  const char* name;
};

inline const std::vector<ModeCase>& all_modes() {
  using swaa::simt::Mode;
  static const std::vector<ModeCase> modes = {
      {Mode::Default, 0, "default"},        {Mode::Random, 1, "random(1)"},
      {Mode::Random, 2, "random(2)"},       {Mode::WarpSerial, 0, "warp-serial"},
      {Mode::RaceCheck, 0, "race-check"},
  };
  return modes;
}

// Runs `check(mode name)` once per mode; an exception from the emulator is a failure.
inline void for_each_mode(const char* test, const std::function<void(const char*)>& check) {
  for (const ModeCase& m : all_modes()) {
    swaa::simt::set_mode(m.mode, m.seed);
    try {
      check(m.name);
    } catch (const std::exception& e) {
      EXPECT(false, "%s [%s] threw: %s", test, m.name, e.what());
    }
  }
  swaa::simt::set_mode(swaa::simt::Mode::Default);
}
#else
// On a GPU there is one schedule: the hardware's.
inline void for_each_mode(const char* test, const std::function<void(const char*)>& check) {
  try {
    check("device");
  } catch (const std::exception& e) {
    EXPECT(false, "%s [device] threw: %s", test, e.what());
  }
}
#endif

inline uint16_t f16_bits(float x) { return __half_as_ushort(__float2half(x)); }
inline uint16_t bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16(x)); }

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

inline int report(const char* name) {
  if (failures) {
    std::fprintf(stderr, "%s: %d failure(s)\n", name, failures);
    return 1;
  }
  std::printf("%s: ok\n", name);
  return 0;
}
