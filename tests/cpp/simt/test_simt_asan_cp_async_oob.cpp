// Planted bug for the AddressSanitizer build: a cp.async whose source runs past the end of its
// global buffer. The emulator copies with memcpy, which ASan checks; ctest expects ASan's
// "heap-buffer-overflow" report naming cp.async's copy (built only with -DSWAA_ASAN=ON).
#include <cstdio>
#include <memory>

#include "swaa/simt/simt.h"

__global__ void overrunning_copy(const uint16_t* src, int n_chunks, uint16_t* out) {
  SWAA_DYNAMIC_SMEM(smem);
  const int t = threadIdx.x;
  // The planted bug: the guard should be t < n_chunks, so the last lane reads past the end.
  swaa::simt::cp_async_16(smem + 16 * t, src + 8 * t, t <= n_chunks);
  swaa::simt::cp_async_commit();
  swaa::simt::cp_async_wait<0>();
  __syncthreads();
  out[t] = reinterpret_cast<const uint16_t*>(smem)[8 * t];
}

int main() {
  const int n_chunks = 31;  // a 32-thread block, one 16-byte chunk per thread, one chunk short
  auto src = std::make_unique<uint16_t[]>(8 * n_chunks);
  auto out = std::make_unique<uint16_t[]>(32);
  swaa::simt::launch(overrunning_copy, dim3(1), dim3(32), 32 * 16, nullptr, src.get(), n_chunks,
                     out.get());
  std::printf("no overflow detected\n");
  return 0;
}
