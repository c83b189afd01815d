// Every intrinsic of the SIMT layer against an independent reference: the fragment layouts as the
// PTX ISA writes them out, CUDA's documented shuffle/vote semantics, plain loops. Built twice:
// g++ host mode (each check in every emulation mode; ctest) and nvcc (the inline-PTX wrappers of
// simt/device.h on a GPU, same expectations; `make gpu-check`, compiled by ctest here).
#include <atomic>
#include <cmath>
#include <random>
#include <thread>

#include "simt_test.h"

// ---- mma.m16n8k16 -----------------------------------------------------------------------------
// PTX ISA, "Matrix fragments for mma.m16n8k16 with floating point type", written out literally.
#define HD __host__ __device__
static HD int a_row(int lane, int i) { return (i < 2 || (i >= 4 && i < 6)) ? lane / 4 : lane / 4 + 8; }
static HD int a_col(int lane, int i) { return (lane % 4) * 2 + (i & 1) + (i >= 4 ? 8 : 0); }
static HD int b_row(int lane, int i) { return (lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0); }
static HD int b_col(int lane, int) { return lane / 4; }
static HD int c_row(int lane, int i) { return i < 2 ? lane / 4 : lane / 4 + 8; }
static HD int c_col(int lane, int i) { return (lane % 4) * 2 + (i & 1); }

template <bool kBf16>
static __device__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                const float (&c)[4]) {
  if constexpr (kBf16) {
    swaa::simt::mma_m16n8k16_bf16(d, a, b, c);
  } else {
    swaa::simt::mma_m16n8k16_f16(d, a, b, c);
  }
}

// D = A*B + C, then in place (d aliasing c, as kernels accumulate) D2 = A*B + D.
template <bool kBf16>
__global__ void mma_kernel(const uint16_t* A, const uint16_t* B, const float* C, float* D,
                           float* D2) {
  const int lane = threadIdx.x % 32;
  uint16_t a[8], b[4];
  for (int i = 0; i < 8; ++i) a[i] = A[a_row(lane, i) * 16 + a_col(lane, i)];
  for (int i = 0; i < 4; ++i) b[i] = B[b_row(lane, i) * 8 + b_col(lane, i)];
  uint32_t ra[4], rb[2];
  for (int r = 0; r < 4; ++r) ra[r] = uint32_t(a[2 * r]) | uint32_t(a[2 * r + 1]) << 16;
  for (int r = 0; r < 2; ++r) rb[r] = uint32_t(b[2 * r]) | uint32_t(b[2 * r + 1]) << 16;
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) c[i] = C[c_row(lane, i) * 8 + c_col(lane, i)];
  mma<kBf16>(d, ra, rb, c);
  for (int i = 0; i < 4; ++i) D[c_row(lane, i) * 8 + c_col(lane, i)] = d[i];
  mma<kBf16>(d, ra, rb, d);
  for (int i = 0; i < 4; ++i) D2[c_row(lane, i) * 8 + c_col(lane, i)] = d[i];
}

template <bool kBf16>
static void check_mma(const char* mode) {
  std::mt19937 rng(kBf16 ? 7 : 3);
  std::uniform_int_distribution<int> small(-16, 16);
  // Dyadic values: every product and sum is exact, so the expected result is exact too.
  std::vector<float> a(256), b(128), c(128);
  for (float& x : a) x = small(rng) / 8.0f;
  for (float& x : b) x = small(rng) / 4.0f;
  for (float& x : c) x = small(rng) / 2.0f;
  std::vector<uint16_t> abits(256), bbits(128);
  for (int i = 0; i < 256; ++i) abits[i] = kBf16 ? bf16_bits(a[i]) : f16_bits(a[i]);
  for (int i = 0; i < 128; ++i) bbits[i] = kBf16 ? bf16_bits(b[i]) : f16_bits(b[i]);
  Buffer<uint16_t> abuf(abits), bbuf(bbits);
  Buffer<float> cbuf(c), dbuf(128, -1.0f), d2buf(128, -1.0f);
  run_kernel(mma_kernel<kBf16>, dim3(1), dim3(32), 0, abuf.get(), bbuf.get(), cbuf.get(),
             dbuf.get(), d2buf.get());
  const std::vector<float>&d = dbuf.read(), &d2 = d2buf.read();
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      double ab = 0;
      for (int k = 0; k < 16; ++k) ab += double(a[m * 16 + k]) * b[k * 8 + n];
      const double want = c[m * 8 + n] + ab, want2 = want + ab;
      EXPECT(d[m * 8 + n] == float(want), "mma %s [%s] D[%d][%d] = %g, want %g",
             kBf16 ? "bf16" : "f16", mode, m, n, d[m * 8 + n], want);
      EXPECT(d2[m * 8 + n] == float(want2), "mma %s in place [%s] D[%d][%d] = %g, want %g",
             kBf16 ? "bf16" : "f16", mode, m, n, d2[m * 8 + n], want2);
    }
  }
}

// ---- ldmatrix -----------------------------------------------------------------------------------
// Matrix i's row r lives at a scrambled slot of shared memory; the lane that supplies it passes
// that address, so a wrong lane->row mapping shows.
static HD int slot_of(int matrix_row) { return (matrix_row * 13 + 5) % 32; }
static HD uint16_t element(int i, int r, int c) { return uint16_t(i * 64 + r * 8 + c + 1); }

template <int kCount, bool kTrans>
__global__ void ldmatrix_kernel(uint32_t* out) {
  SWAA_DYNAMIC_SMEM(smem);
  auto* rows = reinterpret_cast<uint16_t*>(smem);
  const int lane = threadIdx.x % 32;
  for (int c = 0; c < 8; ++c) rows[slot_of(lane) * 8 + c] = element(lane / 8, lane % 8, c);
  __syncthreads();
  // Lanes past 8*kCount pass addresses that must not be read.
  const void* addr = lane < 8 * kCount ? rows + slot_of(lane) * 8 : nullptr;
  uint32_t r[kCount];
  using namespace swaa::simt;
  if constexpr (kCount == 1) kTrans ? ldmatrix_x1_trans(r, addr) : ldmatrix_x1(r, addr);
  if constexpr (kCount == 2) kTrans ? ldmatrix_x2_trans(r, addr) : ldmatrix_x2(r, addr);
  if constexpr (kCount == 4) kTrans ? ldmatrix_x4_trans(r, addr) : ldmatrix_x4(r, addr);
  for (int i = 0; i < kCount; ++i) out[lane * 4 + i] = r[i];
}

template <int kCount, bool kTrans>
static void check_ldmatrix(const char* mode) {
  Buffer<uint32_t> buf(128, 0);
  run_kernel(ldmatrix_kernel<kCount, kTrans>, dim3(1), dim3(32), 32 * 16, buf.get());
  const std::vector<uint32_t>& out = buf.read();
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < kCount; ++i) {
      // PTX ISA: each lane holds row lane/4, columns 2*(lane%4)+{0,1} of the (transposed) matrix.
      const int row = lane / 4, col = 2 * (lane % 4);
      const uint16_t lo = kTrans ? element(i, col, row) : element(i, row, col);
      const uint16_t hi = kTrans ? element(i, col + 1, row) : element(i, row, col + 1);
      const uint32_t want = uint32_t(lo) | uint32_t(hi) << 16;
      EXPECT(out[lane * 4 + i] == want, "ldmatrix x%d%s [%s] lane %d reg %d = %08x, want %08x",
             kCount, kTrans ? ".trans" : "", mode, lane, i, out[lane * 4 + i], want);
    }
  }
}

// ---- ldmatrix feeding mma, as kernels use them -----------------------------------------------
// A (16x16) row-major, B twice: n-major (k contiguous, loaded with ldmatrix_x2) and k-major
// (row-major 16x8, loaded with ldmatrix_x2_trans). Both products must equal the plain matmul.
__global__ void ldmatrix_mma_kernel(const uint16_t* a, const uint16_t* b_nk, const uint16_t* b_kn,
                                    float* d_nk, float* d_kn) {
  SWAA_DYNAMIC_SMEM(smem);
  auto* sa = reinterpret_cast<uint16_t*>(smem);  // 16 x 16
  uint16_t* sb_nk = sa + 256;                     // 8 x 16
  uint16_t* sb_kn = sb_nk + 128;                  // 16 x 8
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) sa[i] = a[i];
  for (int i = lane; i < 128; i += 32) sb_nk[i] = b_nk[i], sb_kn[i] = b_kn[i];
  __syncthreads();
  uint32_t ra[4], rb_nk[2], rb_kn[2];
  swaa::simt::ldmatrix_x4(ra, sa + (lane % 16) * 16 + (lane / 16) * 8);
  swaa::simt::ldmatrix_x2(rb_nk, sb_nk + (lane % 8) * 16 + ((lane / 8) % 2) * 8);
  swaa::simt::ldmatrix_x2_trans(rb_kn, sb_kn + (lane % 16) * 8);
  const float zero[4] = {0, 0, 0, 0};
  float x[4], y[4];
  swaa::simt::mma_m16n8k16_f16(x, ra, rb_nk, zero);
  swaa::simt::mma_m16n8k16_f16(y, ra, rb_kn, zero);
  for (int i = 0; i < 4; ++i) {
    d_nk[c_row(lane, i) * 8 + c_col(lane, i)] = x[i];
    d_kn[c_row(lane, i) * 8 + c_col(lane, i)] = y[i];
  }
}

static void check_ldmatrix_mma(const char* mode) {
  std::vector<float> a(256), b(128);  // b is K x N = 16 x 8
  for (int i = 0; i < 256; ++i) a[i] = float((i * 7) % 17 - 8) / 4;
  for (int i = 0; i < 128; ++i) b[i] = float((i * 5) % 13 - 6) / 2;
  std::vector<uint16_t> abits(256), b_nk(128), b_kn(128);
  for (int i = 0; i < 256; ++i) abits[i] = f16_bits(a[i]);
  for (int k = 0; k < 16; ++k) {
    for (int n = 0; n < 8; ++n) {
      b_kn[k * 8 + n] = f16_bits(b[k * 8 + n]);
      b_nk[n * 16 + k] = f16_bits(b[k * 8 + n]);
    }
  }
  Buffer<uint16_t> abuf(abits), nk(b_nk), kn(b_kn);
  Buffer<float> d_nk_buf(128, 0.0f), d_kn_buf(128, 0.0f);
  run_kernel(ldmatrix_mma_kernel, dim3(1), dim3(32), 1024, abuf.get(), nk.get(), kn.get(),
             d_nk_buf.get(), d_kn_buf.get());
  const std::vector<float>&d_nk = d_nk_buf.read(), &d_kn = d_kn_buf.read();
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      double want = 0;
      for (int k = 0; k < 16; ++k) want += double(a[m * 16 + k]) * b[k * 8 + n];
      EXPECT(d_nk[m * 8 + n] == float(want) && d_kn[m * 8 + n] == float(want),
             "ldmatrix->mma [%s] D[%d][%d] = %g / %g, want %g", mode, m, n, d_nk[m * 8 + n],
             d_kn[m * 8 + n], want);
    }
  }
}

// ---- shuffles and votes -------------------------------------------------------------------------
struct ShuffleOut {
  int idx, idx_w8, xor_, xor_w4, xor_past_w4, down, down_w16, up, up_w8;
  float fl, h2_lo, h2_hi, bf2_lo;
  double dbl;
  unsigned ballot;
  int any, all, none;
};

__global__ void shuffle_kernel(ShuffleOut* out) {
  const int t = threadIdx.x;
  const int v = t * 3 + 1;
  const unsigned full = 0xffffffffu;
  ShuffleOut o;
  o.idx = __shfl_sync(full, v, 5);
  o.idx_w8 = __shfl_sync(full, v, 13, 8);
  o.xor_ = __shfl_xor_sync(full, v, 17);
  o.xor_w4 = __shfl_xor_sync(full, v, 2, 4);
  o.xor_past_w4 = __shfl_xor_sync(full, v, 4, 4);
  o.down = __shfl_down_sync(full, v, 3);
  o.down_w16 = __shfl_down_sync(full, v, 5, 16);
  o.up = __shfl_up_sync(full, v, 2);
  o.up_w8 = __shfl_up_sync(full, v, 3, 8);
  o.fl = __shfl_xor_sync(full, float(t) + 0.5f, 1);
  o.dbl = __shfl_sync(full, double(t) * 1e-300, 31);
  const __half2 h2 = __shfl_xor_sync(full, __floats2half2_rn(float(t), -float(t)), 3);
  o.h2_lo = __low2float(h2), o.h2_hi = __high2float(h2);
  o.bf2_lo = __low2float(__shfl_sync(full, __floats2bfloat162_rn(float(t), 0.f), 9));
  o.ballot = __ballot_sync(full, t % 3 == 0);
  o.any = __any_sync(full, t == 40);
  o.all = __all_sync(full, t < 1000);
  o.none = __all_sync(full, t % 32 != 7);
  __syncwarp();
  out[t] = o;
}

static void check_shuffles(const char* mode) {
  Buffer<ShuffleOut> buf(64, ShuffleOut{});
  run_kernel(shuffle_kernel, dim3(1), dim3(64), 0, buf.get());
  const std::vector<ShuffleOut>& out = buf.read();
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32, base = t - lane;
    auto val = [&](int l) { return (base + l) * 3 + 1; };
    // CUDA C++ Programming Guide, "Warp Shuffle Functions".
    const int seg8 = lane / 8 * 8, seg16 = lane / 16 * 16, seg4 = lane / 4 * 4;
    const ShuffleOut& o = out[t];
    EXPECT(o.idx == val(5), "[%s] shfl t=%d", mode, t);
    EXPECT(o.idx_w8 == val(seg8 + 13 % 8), "[%s] shfl width 8 t=%d", mode, t);
    EXPECT(o.xor_ == val(lane ^ 17), "[%s] shfl_xor t=%d", mode, t);
    EXPECT(o.xor_w4 == val(seg4 + ((lane % 4) ^ 2)), "[%s] shfl_xor width 4 t=%d", mode, t);
    // A lane mask reaching past the width: earlier groups can be read, later ones give var.
    EXPECT(o.xor_past_w4 == ((lane ^ 4) >= seg4 + 4 ? val(lane) : val(lane ^ 4)),
           "[%s] shfl_xor past width t=%d", mode, t);
    EXPECT(o.down == (lane + 3 < 32 ? val(lane + 3) : val(lane)), "[%s] shfl_down t=%d", mode, t);
    EXPECT(o.down_w16 == (lane - seg16 + 5 < 16 ? val(lane + 5) : val(lane)),
           "[%s] shfl_down width 16 t=%d", mode, t);
    EXPECT(o.up == (lane >= 2 ? val(lane - 2) : val(lane)), "[%s] shfl_up t=%d", mode, t);
    EXPECT(o.up_w8 == (lane - seg8 >= 3 ? val(lane - 3) : val(lane)), "[%s] shfl_up width 8 t=%d",
           mode, t);
    EXPECT(o.fl == float(base + (lane ^ 1)) + 0.5f, "[%s] float shfl t=%d", mode, t);
    EXPECT(o.dbl == double(base + 31) * 1e-300, "[%s] double shfl t=%d", mode, t);
    EXPECT(o.h2_lo == float(base + (lane ^ 3)) && o.h2_hi == -float(base + (lane ^ 3)),
           "[%s] __half2 shfl t=%d", mode, t);
    EXPECT(o.bf2_lo == float(base + 9), "[%s] bfloat162 shfl t=%d", mode, t);
    unsigned want_ballot = 0;
    for (int l = 0; l < 32; ++l) want_ballot |= unsigned((base + l) % 3 == 0) << l;
    EXPECT(o.ballot == want_ballot, "[%s] ballot t=%d: %08x want %08x", mode, t, o.ballot,
           want_ballot);
    EXPECT(o.any == (base == 32), "[%s] any t=%d", mode, t);
    EXPECT(o.all == 1 && o.none == 0, "[%s] all t=%d", mode, t);
  }
}

// ---- atomics, cp.async, shared memory, indices -----------------------------------------------
__global__ void atomic_kernel(float* fsum, int* isum, int* block_max, int* smem_sums) {
  SWAA_DYNAMIC_SMEM(smem);
  int* counter = reinterpret_cast<int*>(smem);
  if (threadIdx.x == 0) *counter = 0;
  __syncthreads();
  atomicAdd(counter, int(threadIdx.x));
  atomicAdd(fsum, 0.25);  // a double argument converts to the pointee type, as in CUDA
  atomicAdd(isum, int(threadIdx.x + 1));
  atomicMax(block_max, int(blockIdx.x * 1000 + threadIdx.x));
  __syncthreads();
  if (threadIdx.x == 0) smem_sums[blockIdx.x] = *counter;
}

static void check_atomics(const char* mode) {
  Buffer<float> fbuf(1, 0.0f);
  Buffer<int> ibuf(1, 0), max_buf(1, -1), sums(3, -1);
  run_kernel(atomic_kernel, dim3(3), dim3(96), 64, fbuf.get(), ibuf.get(), max_buf.get(),
             sums.get());
  const float fsum = fbuf.read()[0];
  const int isum = ibuf.read()[0], block_max = max_buf.read()[0];
  const std::vector<int>& smem_sums = sums.read();
  EXPECT(fsum == 0.25f * 288, "[%s] atomicAdd float %g", mode, fsum);
  EXPECT(isum == 3 * (96 * 97 / 2), "[%s] atomicAdd int %d", mode, isum);
  EXPECT(block_max == 2095, "[%s] atomicMax %d", mode, block_max);
  for (int b = 0; b < 3; ++b) {
    EXPECT(smem_sums[b] == 95 * 96 / 2, "[%s] shared atomicAdd block %d: %d", mode, b,
           smem_sums[b]);
  }
}

// Two cp.async groups per thread; !pred chunks are zero-filled from a null source.
__global__ void cp_async_kernel(const uint32_t* src, uint32_t* out, int* own_ok) {
  SWAA_DYNAMIC_SMEM(smem);
  auto* dst = reinterpret_cast<uint32_t*>(smem);
  const int t = threadIdx.x, n = blockDim.x;
  auto pred = [](int chunk) { return chunk % 3 != 0; };
  for (int g = 0; g < 2; ++g) {
    const int chunk = g * n + t;
    swaa::simt::cp_async_16(dst + 4 * chunk, pred(chunk) ? src + 4 * chunk : nullptr, pred(chunk));
    swaa::simt::cp_async_commit();
  }
  swaa::simt::cp_async_wait<1>();  // the first group has landed (for this thread)
  bool ok = true;
  for (int w = 0; w < 4; ++w) ok = ok && dst[4 * t + w] == (pred(t) ? src[4 * t + w] : 0u);
  swaa::simt::cp_async_wait<0>();
  for (int w = 0; w < 4; ++w) {
    ok = ok && dst[4 * (n + t) + w] == (pred(n + t) ? src[4 * (n + t) + w] : 0u);
  }
  own_ok[blockIdx.x * n + t] = ok;
  __syncthreads();
  for (int i = t; i < 8 * n; i += n) out[blockIdx.x * 8 * n + i] = dst[i];
}

static void check_cp_async(const char* mode) {
  const int n = 64, blocks = 2;
  std::vector<uint32_t> src(8 * n);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint32_t(i * 2654435761u);
  Buffer<uint32_t> src_buf(src), out_buf(blocks * 8 * n, 7);
  Buffer<int> ok_buf(blocks * n, 0);
  run_kernel(cp_async_kernel, dim3(blocks), dim3(n), 8 * n * 4, src_buf.get(), out_buf.get(),
             ok_buf.get());
  const std::vector<uint32_t>& out = out_buf.read();
  const std::vector<int>& own_ok = ok_buf.read();
  for (int i = 0; i < blocks * n; ++i) EXPECT(own_ok[i] == 1, "[%s] cp.async thread %d", mode, i);
  for (int b = 0; b < blocks; ++b) {
    for (int i = 0; i < 8 * n; ++i) {
      const int chunk = i / 4;
      const uint32_t want = chunk % 3 != 0 ? src[i] : 0u;
      EXPECT(out[b * 8 * n + i] == want, "[%s] cp.async block %d word %d", mode, b, i);
    }
  }
}

// Static shared memory is per block (and reused); in host mode dynamic shared memory starts as
// 0xff bytes.
__global__ void smem_kernel(int* out, unsigned* dyn_before, unsigned* dims) {
  __shared__ int s[128];
  SWAA_DYNAMIC_SMEM(smem);
  auto* dyn = reinterpret_cast<unsigned*>(smem);
  const int t = threadIdx.x, n = blockDim.x;
  dyn_before[blockIdx.x * n + t] = dyn[t];
  s[t] = int(blockIdx.x * 1000 + t);
  dyn[t] = blockIdx.x + 7;
  __syncthreads();
  out[blockIdx.x * n + t] = s[n - 1 - t] + int(dyn[(t + 1) % n]);
  if (t == 0 && blockIdx.x == 0) {
    dims[0] = gridDim.x, dims[1] = gridDim.y, dims[2] = blockDim.x, dims[3] = warpSize;
  }
}

static void check_shared_memory(const char* mode) {
  const int n = 128, blocks = 3;
  Buffer<int> out_buf(blocks * n, 0);
  Buffer<unsigned> before_buf(blocks * n, 0), dims_buf(4, 0);
  run_kernel(smem_kernel, dim3(blocks), dim3(n), n * 4, out_buf.get(), before_buf.get(),
             dims_buf.get());
  const std::vector<int>& out = out_buf.read();
  const std::vector<unsigned>&before = before_buf.read(), &dims = dims_buf.read();
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < n; ++t) {
      EXPECT(out[b * n + t] == b * 1000 + (n - 1 - t) + b + 7, "[%s] smem block %d thread %d: %d",
             mode, b, t, out[b * n + t]);
#if defined(SWAA_SIMT_HOST)
      EXPECT(before[b * n + t] == 0xffffffffu, "[%s] dynamic smem not poisoned at block %d", mode,
             b);
#else
      (void)before;
#endif
    }
  }
  EXPECT(dims[0] == 3 && dims[1] == 1 && dims[2] == 128 && dims[3] == 32, "[%s] dims", mode);
}

// cp.async.ca of 4, 8 and 16 bytes (PTX ISA, "cp.async": cp-size bytes land at the destination;
// with src-size 0 they are zero-filled and the source is not read). Thread t copies chunk t of
// kBytes to a destination that is kBytes- but not 16-byte aligned (offset by one chunk).
template <int kBytes>
__global__ void cp_async_ca_kernel(const uint8_t* src, uint8_t* out) {
  SWAA_DYNAMIC_SMEM(smem);
  const int t = threadIdx.x, n = blockDim.x;
  const bool pred = t % 5 != 2;
  uint8_t* dst = reinterpret_cast<uint8_t*>(smem) + kBytes * (t + 1);
  swaa::simt::cp_async_ca<kBytes>(dst, pred ? src + kBytes * t : nullptr, pred);
  swaa::simt::cp_async_commit();
  swaa::simt::cp_async_wait<0>();
  __syncthreads();
  for (int i = t; i < kBytes * n; i += n) out[i] = smem[kBytes + i];
}

template <int kBytes>
static void check_cp_async_ca(const char* mode) {
  const int n = 64;
  std::vector<uint8_t> src(kBytes * n);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint8_t(i * 37 + 11);
  Buffer<uint8_t> src_buf(src), out_buf(kBytes * n, 0x5a);
  run_kernel(cp_async_ca_kernel<kBytes>, dim3(1), dim3(n), kBytes * (n + 1), src_buf.get(),
             out_buf.get());
  const std::vector<uint8_t>& out = out_buf.read();
  for (int i = 0; i < kBytes * n; ++i) {
    const uint8_t want = (i / kBytes) % 5 != 2 ? src[i] : 0;
    EXPECT(out[i] == want, "cp.async.ca %d [%s] byte %d = %d, want %d", kBytes, mode, i, out[i],
           want);
  }
}

// ld/st_shared and ld/st_global of every access width: thread t writes its values to shared
// memory, and after the barrier reads its neighbour's and stores them to global memory.
struct Widths {
  uint8_t b1;
  uint16_t b2;
  float b4;
  uint2 b8;
  uint4 b16;
};

__global__ void plain_access_kernel(const Widths* in, Widths* out) {
  SWAA_DYNAMIC_SMEM(smem);
  const int t = threadIdx.x, n = blockDim.x;
  auto* s16 = reinterpret_cast<uint4*>(smem);  // n of each width, widest first: all aligned
  auto* s8 = reinterpret_cast<uint2*>(s16 + n);
  auto* s4 = reinterpret_cast<float*>(s8 + n);
  auto* s2 = reinterpret_cast<uint16_t*>(s4 + n);
  auto* s1 = reinterpret_cast<uint8_t*>(s2 + n);
  using namespace swaa::simt;
  st_shared(s1 + t, ld_global(&in[t].b1));
  st_shared(s2 + t, ld_global(&in[t].b2));
  st_shared(s4 + t, ld_global(&in[t].b4));
  st_shared(s8 + t, ld_global(&in[t].b8));
  st_shared(s16 + t, ld_global(&in[t].b16));
  __syncthreads();
  const int u = (t + 1) % n;
  st_global(&out[t].b1, ld_shared(s1 + u));
  st_global(&out[t].b2, ld_shared(s2 + u));
  st_global(&out[t].b4, ld_shared(s4 + u));
  st_global(&out[t].b8, ld_shared(s8 + u));
  st_global(&out[t].b16, ld_shared(s16 + u));
}

static void check_plain_access(const char* mode) {
  const int n = 64;
  std::vector<Widths> in(n);
  for (int t = 0; t < n; ++t) {
    const unsigned x = unsigned(t) * 2654435761u;
    in[t] = {uint8_t(x), uint16_t(x >> 3), float(t) - 0.5f, {x, ~x}, {x, x + 1, x + 2, x ^ 7}};
  }
  Buffer<Widths> in_buf(in), out_buf(n, Widths{});
  run_kernel(plain_access_kernel, dim3(1), dim3(n), n * 31, in_buf.get(), out_buf.get());
  const std::vector<Widths>& out = out_buf.read();
  for (int t = 0; t < n; ++t) {
    const Widths &o = out[t], &w = in[(t + 1) % n];
    EXPECT(o.b1 == w.b1 && o.b2 == w.b2 && o.b4 == w.b4 && o.b8.x == w.b8.x &&
               o.b8.y == w.b8.y && o.b16.x == w.b16.x && o.b16.y == w.b16.y &&
               o.b16.z == w.b16.z && o.b16.w == w.b16.w,
           "plain access [%s] thread %d", mode, t);
  }
}

// Any multiple of 32 threads (the backward runs 8 warps): a block sum through shuffles and shared
// memory, and one mma per warp, whose result names the warp.
__global__ void block_size_kernel(int* sums, float* warp_mma) {
  SWAA_DYNAMIC_SMEM(smem);
  auto* partial = reinterpret_cast<int*>(smem);
  const int t = threadIdx.x, warp = t / 32, lane = t % 32, n_warps = blockDim.x / 32;
  int v = int(blockIdx.x) * 10000 + t;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (lane == 0) swaa::simt::st_shared(partial + warp, v);
  __syncthreads();
  if (t == 0) {
    int total = 0;
    for (int w = 0; w < n_warps; ++w) total += swaa::simt::ld_shared(partial + w);
    sums[blockIdx.x] = total;
  }
  // Every A element = warp + 1, every B element = 1: every D element = 16 (warp + 1).
  const uint32_t w1 = __half_as_ushort(__float2half(float(warp + 1)));
  const uint32_t h1 = __half_as_ushort(__float2half(1.0f));
  const uint32_t a[4] = {w1 | w1 << 16, w1 | w1 << 16, w1 | w1 << 16, w1 | w1 << 16};
  const uint32_t b[2] = {h1 | h1 << 16, h1 | h1 << 16};
  const float c[4] = {0, 0, 0, 0};
  float d[4];
  swaa::simt::mma_m16n8k16_f16(d, a, b, c);
  warp_mma[(blockIdx.x * n_warps + warp) * 32 + lane] = d[0] + d[1] + d[2] + d[3];
}

static void check_block_sizes(const char* mode) {
  for (const int n : {32, 96, 256, 1024}) {
    const int blocks = 2, n_warps = n / 32;
    Buffer<int> sums(blocks, -1);
    Buffer<float> mma_out(blocks * n_warps * 32, -1.0f);
    run_kernel(block_size_kernel, dim3(blocks), dim3(n), n_warps * 4, sums.get(), mma_out.get());
    for (int b = 0; b < blocks; ++b) {
      const int want = b * 10000 * n + n * (n - 1) / 2;
      EXPECT(sums.read()[b] == want, "%d threads [%s] block %d sum %d, want %d", n, mode, b,
             sums.read()[b], want);
      for (int w = 0; w < n_warps; ++w) {
        for (int lane = 0; lane < 32; ++lane) {
          const float got = mma_out.read()[(b * n_warps + w) * 32 + lane];
          EXPECT(got == 64.0f * float(w + 1), "%d threads [%s] warp %d lane %d mma %g", n, mode,
                 w, lane, got);
        }
      }
    }
  }
}

// More than the 48 KiB default of dynamic shared memory (launch opts in; 96 KiB fits every
// target, sm_86/sm_89 included): every thread writes and reads back across the whole range.
__global__ void large_smem_kernel(int bytes, unsigned* sums) {
  SWAA_DYNAMIC_SMEM(smem);
  auto* words = reinterpret_cast<unsigned*>(smem);
  const int t = threadIdx.x, n = blockDim.x, count = bytes / 4;
  for (int i = t; i < count; i += n) swaa::simt::st_shared(words + i, unsigned(i) * 7u);
  __syncthreads();
  unsigned sum = 0;
  for (int i = (t + 1) % n; i < count; i += n) sum += swaa::simt::ld_shared(words + i);
  sums[t] = sum;
}

static void check_large_smem(const char* mode) {
  const int bytes = 96 * 1024, n = 256, count = bytes / 4;
  Buffer<unsigned> sums(n, 0);
  run_kernel(large_smem_kernel, dim3(1), dim3(n), bytes, bytes, sums.get());
  for (int t = 0; t < n; ++t) {
    unsigned want = 0;
    for (int i = (t + 1) % n; i < count; i += n) want += unsigned(i) * 7u;
    EXPECT(sums.read()[t] == want, "96 KiB smem [%s] thread %d: %u, want %u", mode, t,
           sums.read()[t], want);
  }
}

// ---- several OS threads emulate at once (OpenMP does) -------------------------------------------
#if defined(SWAA_SIMT_HOST)
static void check_concurrent_launches(const char* mode) {
  std::atomic<int> bad{0};
  auto worker = [&] {
    for (int rep = 0; rep < 3; ++rep) {
      std::vector<int> out(3 * 128);
      std::vector<unsigned> before(3 * 128), dims(4);
      run_kernel(smem_kernel, dim3(3), dim3(128), 128 * 4, out.data(), before.data(), dims.data());
      for (int b = 0; b < 3; ++b) {
        for (int t = 0; t < 128; ++t) bad += out[b * 128 + t] != b * 1000 + (127 - t) + b + 7;
      }
    }
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  EXPECT(bad == 0, "[%s] concurrent launches from two OS threads: %d wrong values", mode,
         bad.load());
}
#endif

int main() {
  for_each_mode("mma f16", check_mma<false>);
  for_each_mode("mma bf16", check_mma<true>);
  for_each_mode("ldmatrix x1", check_ldmatrix<1, false>);
  for_each_mode("ldmatrix x2", check_ldmatrix<2, false>);
  for_each_mode("ldmatrix x4", check_ldmatrix<4, false>);
  for_each_mode("ldmatrix x1.trans", check_ldmatrix<1, true>);
  for_each_mode("ldmatrix x2.trans", check_ldmatrix<2, true>);
  for_each_mode("ldmatrix x4.trans", check_ldmatrix<4, true>);
  for_each_mode("ldmatrix -> mma", check_ldmatrix_mma);
  for_each_mode("shuffles", check_shuffles);
  for_each_mode("atomics", check_atomics);
  for_each_mode("cp.async", check_cp_async);
  for_each_mode("shared memory", check_shared_memory);
  for_each_mode("cp.async.ca 4", check_cp_async_ca<4>);
  for_each_mode("cp.async.ca 8", check_cp_async_ca<8>);
  for_each_mode("cp.async.ca 16", check_cp_async_ca<16>);
  for_each_mode("plain loads and stores", check_plain_access);
  for_each_mode("block sizes", check_block_sizes);
  for_each_mode("96 KiB of dynamic shared memory", check_large_smem);
#if defined(SWAA_SIMT_HOST)
  for_each_mode("concurrent launches", check_concurrent_launches);
#endif
  return report("simt intrinsics");
}
