// Compiles every device-mode wrapper of simt.h (nvcc -arch=sm_80/sm_90 -c); nothing runs.
#include "../../../csrc/swaa/simt/simt.h"

__global__ void every_wrapper(const __half* src, float* out) {
  SWAA_DYNAMIC_SMEM(smem);
  const int lane = threadIdx.x % 32;
  swaa::simt::cp_async_16(smem + 16 * threadIdx.x, src + 8 * threadIdx.x, lane < 16);
  swaa::simt::cp_async_commit();
  swaa::simt::cp_async_wait<0>();
  __syncthreads();
  uint32_t a[4], b[2], r1[1], r2[2];
  swaa::simt::ldmatrix_x4(a, smem + 16 * lane);
  swaa::simt::ldmatrix_x2_trans(b, smem + 16 * lane);
  swaa::simt::ldmatrix_x1(r1, smem + 16 * lane);
  swaa::simt::ldmatrix_x1_trans(r1, smem + 16 * lane);
  swaa::simt::ldmatrix_x2(r2, smem + 16 * lane);
  swaa::simt::ldmatrix_x4_trans(a, smem + 16 * lane);
  float c[4] = {0, 0, 0, 0}, d[4];
  swaa::simt::mma_m16n8k16_f16(d, a, b, c);
  swaa::simt::mma_m16n8k16_bf16(c, a, r2, d);
  out[threadIdx.x] = c[0] + c[1] + c[2] + c[3] + float(r1[0]);
}

cudaError_t launch_every_wrapper(const __half* src, float* out, cudaStream_t stream) {
  return swaa::simt::launch(every_wrapper, dim3(1), dim3(32), 64 * 1024, stream, src, out);
}
