// Host mode: the CUDA built-ins a kernel calls (barriers, warp shuffles and votes, atomics,
// device math) and the swaa::simt wrappers (mma, ldmatrix, cp.async). Every collective records
// its call site (std::source_location) for diagnostics.
#pragma once
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <source_location>
#include <type_traits>

#include "memory.h"
#include "scheduler.h"

// ---- barriers, shuffles, votes ----------------------------------------------------------------

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  swaa::simt::host::syncthreads(swaa::simt::host::make_site("__syncthreads()", loc));
}

inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location loc = std::source_location::current()) {
  swaa::simt::host::warp_arrive(swaa::simt::host::WarpOp::SyncWarp, mask,
                                swaa::simt::host::make_site("__syncwarp()", loc), {});
}

namespace swaa::simt::host {
template <typename T>
T shuffle(WarpOp op, const char* what, unsigned mask, T var, int arg, int width,
          const std::source_location& loc) {
  // __half2 / __nv_bfloat162 have user-written copy constructors but are plain bits, as on a GPU.
  static_assert(std::is_trivially_destructible_v<T> && sizeof(T) <= 8,
                "shuffle of a 1-8 byte value");
  uint64_t in = 0, out = 0;
  std::memcpy(&in, static_cast<const void*>(&var), sizeof(T));
  warp_arrive(op, mask, make_site(what, loc), LaneSlot{&in, &out, arg, width});
  T result = var;
  std::memcpy(static_cast<void*>(&result), &out, sizeof(T));
  return result;
}
inline unsigned vote(WarpOp op, const char* what, unsigned mask, int pred,
                     const std::source_location& loc) {
  uint32_t out = 0;
  warp_arrive(op, mask, make_site(what, loc), LaneSlot{&pred, &out, 0, 32});
  return out;
}
}  // namespace swaa::simt::host

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
              std::source_location loc = std::source_location::current()) {
  using swaa::simt::host::WarpOp;
  return swaa::simt::host::shuffle(WarpOp::Shfl, "__shfl_sync", mask, var, src_lane, width, loc);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  std::source_location loc = std::source_location::current()) {
  using swaa::simt::host::WarpOp;
  return swaa::simt::host::shuffle(WarpOp::ShflXor, "__shfl_xor_sync", mask, var, lane_mask,
                                   width, loc);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                   std::source_location loc = std::source_location::current()) {
  using swaa::simt::host::WarpOp;
  return swaa::simt::host::shuffle(WarpOp::ShflDown, "__shfl_down_sync", mask, var, int(delta),
                                   width, loc);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                 std::source_location loc = std::source_location::current()) {
  using swaa::simt::host::WarpOp;
  return swaa::simt::host::shuffle(WarpOp::ShflUp, "__shfl_up_sync", mask, var, int(delta),
                                   width, loc);
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              std::source_location loc = std::source_location::current()) {
  using swaa::simt::host::WarpOp;
  return swaa::simt::host::vote(WarpOp::Ballot, "__ballot_sync", mask, pred, loc);
}
inline int __any_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  using swaa::simt::host::WarpOp;
  return int(swaa::simt::host::vote(WarpOp::Any, "__any_sync", mask, pred, loc));
}
inline int __all_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  using swaa::simt::host::WarpOp;
  return int(swaa::simt::host::vote(WarpOp::All, "__all_sync", mask, pred, loc));
}
inline unsigned __activemask() { return 0xffffffffu; }  // kernels keep whole warps converged

// ---- atomics (std::atomic_ref: OpenMP threads may emulate launches that share an output) -----

namespace swaa::simt::host {
template <typename T>
void atomic_touched(T* p) {
  Emulator* e = tls_emulator;
  if (e && e->race && e->current) e->race->note_atomic(p, sizeof(T), *e->current);
}
}  // namespace swaa::simt::host

template <typename T>
T atomicAdd(T* p, std::type_identity_t<T> v) {  // (p's type decides, as CUDA's overloads)
  const T old = std::atomic_ref<T>(*p).fetch_add(v);
  swaa::simt::host::atomic_touched(p);
  return old;
}
template <typename T>
T atomicExch(T* p, std::type_identity_t<T> v) {
  const T old = std::atomic_ref<T>(*p).exchange(v);
  swaa::simt::host::atomic_touched(p);
  return old;
}
template <typename T>
T atomicCAS(T* p, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
  std::atomic_ref<T>(*p).compare_exchange_strong(compare, v);
  swaa::simt::host::atomic_touched(p);
  return compare;  // the old value either way
}
template <typename T>
T atomicMax(T* p, std::type_identity_t<T> v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  swaa::simt::host::atomic_touched(p);
  return old;
}
template <typename T>
T atomicMin(T* p, std::type_identity_t<T> v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  swaa::simt::host::atomic_touched(p);
  return old;
}

// ---- device math and bit tricks the host headers do not declare ------------------------------

inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return int(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(unsigned(x)); }
inline int __clzll(long long x) { return std::countl_zero((unsigned long long)x); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(unsigned(x)) + 1; }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
template <typename T>
T __ldg(const T* p) {
  return *p;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline __half hexp2(__half x) { return __float2half(exp2f(__half2float(x))); }
inline __half2 h2exp2(__half2 x) {
  const float2 f = __half22float2(x);
  return __floats2half2_rn(exp2f(f.x), exp2f(f.y));
}

// ---- the swaa::simt wrappers --------------------------------------------------------------------

namespace swaa::simt {

inline void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                             const float (&c)[4],
                             std::source_location loc = std::source_location::current()) {
  const host::MmaOperands in{a, b, c};
  host::warp_arrive(host::WarpOp::MmaF16, 0xffffffffu, host::make_site("mma_m16n8k16_f16", loc),
                    host::LaneSlot{&in, d, 0, 32});
}
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                              const float (&c)[4],
                              std::source_location loc = std::source_location::current()) {
  const host::MmaOperands in{a, b, c};
  host::warp_arrive(host::WarpOp::MmaBf16, 0xffffffffu, host::make_site("mma_m16n8k16_bf16", loc),
                    host::LaneSlot{&in, d, 0, 32});
}

#define SWAA_SIMT_LDMATRIX(name, regs, op)                                                   \
  inline void name(uint32_t (&r)[regs], const void* smem_row,                              \
                   std::source_location loc = std::source_location::current()) {           \
    host::warp_arrive(host::WarpOp::op, 0xffffffffu, host::make_site(#name, loc),          \
                      host::LaneSlot{smem_row, r, 0, 32});                                 \
  }
SWAA_SIMT_LDMATRIX(ldmatrix_x1, 1, Ldmatrix1)
SWAA_SIMT_LDMATRIX(ldmatrix_x2, 2, Ldmatrix2)
SWAA_SIMT_LDMATRIX(ldmatrix_x4, 4, Ldmatrix4)
SWAA_SIMT_LDMATRIX(ldmatrix_x1_trans, 1, Ldmatrix1T)
SWAA_SIMT_LDMATRIX(ldmatrix_x2_trans, 2, Ldmatrix2T)
SWAA_SIMT_LDMATRIX(ldmatrix_x4_trans, 4, Ldmatrix4T)
#undef SWAA_SIMT_LDMATRIX

namespace host {
// Queued per thread and copied at cp.async.wait_group (Default: catches reads before the wait),
// or copied at issue (WarpSerial: catches overwrites of a buffer others still read); Random picks
// one of the two per copy by a coin flip.
// RaceCheck copies at issue and counts the bytes as written again at the wait, so a conflicting
// access in the barrier interval of either end is reported.
inline void cp_async(const Site& site, void* smem_dst, const void* gmem_src, bool pred,
                     unsigned bytes) {
  Emulator& e = *tls_emulator;
  Fiber& f = current_fiber();
  check_shared(site, f, smem_dst, bytes, bytes);
  if (pred) check_global_aligned(site, gmem_src, bytes);
#if SWAA_SIMT_ASAN
  if (pred) {  // read the source now too, so ASan's report points at this call, not the wait
    alignas(16) unsigned char probe[16];
    std::memcpy(probe, gmem_src, bytes);
    asm volatile("" : : "r"(probe) : "memory");
  }
#endif
  CpAsyncCopy copy{smem_dst, gmem_src, bytes, pred, false, site};
  const bool at_issue = e.mode == Mode::WarpSerial || e.mode == Mode::RaceCheck ||
                        (e.mode == Mode::Random && (e.rng() & 1));
  if (at_issue) {
    execute_copy(copy);
    copy.done = true;
  }
  f.uncommitted.push_back(copy);
}
}  // namespace host

inline void cp_async_16(void* smem_dst, const void* gmem_src, bool pred,
                        std::source_location loc = std::source_location::current()) {
  host::cp_async(host::make_site("cp_async_16", loc), smem_dst, gmem_src, pred, 16);
}

template <int kBytes>
void cp_async_ca(void* smem_dst, const void* gmem_src, bool pred,
                 std::source_location loc = std::source_location::current()) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
  host::cp_async(host::make_site("cp_async_ca", loc), smem_dst, gmem_src, pred, kBytes);
}

inline void cp_async_commit() {
  host::Fiber& f = host::current_fiber();
  f.groups.push_back(std::move(f.uncommitted));
  f.uncommitted.clear();
}

template <int N>
void cp_async_wait() {
  static_assert(N >= 0);
  host::Emulator& e = *host::tls_emulator;
  host::Fiber& f = host::current_fiber();
  size_t completed = 0;
  while (f.groups.size() - completed > size_t(N)) {
    for (const auto& copy : f.groups[completed]) {
      if (!copy.done) host::execute_copy(copy);
      if (e.race) e.race->note_written(copy.dst, copy.bytes, f);
    }
    ++completed;
  }
  f.groups.erase(f.groups.begin(), f.groups.begin() + completed);
}

// Plain shared-memory loads and stores: checked (inside the block's shared memory, naturally
// aligned) and, in RaceCheck mode, recorded as the accesses they are.
template <typename T>
T ld_shared(const T* p, std::source_location loc = std::source_location::current()) {
  static_assert(std::has_single_bit(sizeof(T)) && sizeof(T) <= 16, "a 1-16 byte access");
  host::Fiber& f = host::current_fiber();
  const host::Site site = host::make_site("ld_shared", loc);
  host::check_shared(site, f, p, sizeof(T), sizeof(T));
  if (host::Emulator& e = *host::tls_emulator; e.race) e.race->note_read(p, sizeof(T), f, site);
  T v;
  std::memcpy(static_cast<void*>(&v), p, sizeof(T));
  return v;
}

template <typename T>
void st_shared(T* p, const std::type_identity_t<T>& v,
               std::source_location loc = std::source_location::current()) {
  static_assert(std::has_single_bit(sizeof(T)) && sizeof(T) <= 16, "a 1-16 byte access");
  host::Fiber& f = host::current_fiber();
  host::check_shared(host::make_site("st_shared", loc), f, p, sizeof(T), sizeof(T));
  std::memcpy(static_cast<void*>(p), static_cast<const void*>(&v), sizeof(T));
  if (host::Emulator& e = *host::tls_emulator; e.race) e.race->note_written(p, sizeof(T), f);
}

// Plain global-memory loads and stores, checked for natural alignment.
template <typename T>
T ld_global(const T* p, std::source_location loc = std::source_location::current()) {
  static_assert(std::has_single_bit(sizeof(T)) && sizeof(T) <= 16, "a 1-16 byte access");
  host::check_global_aligned(host::make_site("ld_global", loc), p, sizeof(T));
  T v;
  std::memcpy(static_cast<void*>(&v), p, sizeof(T));
  return v;
}

template <typename T>
void st_global(T* p, const std::type_identity_t<T>& v,
               std::source_location loc = std::source_location::current()) {
  static_assert(std::has_single_bit(sizeof(T)) && sizeof(T) <= 16, "a 1-16 byte access");
  host::check_global_aligned(host::make_site("st_global", loc), p, sizeof(T));
  std::memcpy(static_cast<void*>(p), static_cast<const void*>(&v), sizeof(T));
}

}  // namespace swaa::simt
