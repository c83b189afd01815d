// AVX2 + FMA row kernels with a scalar fallback, chosen once at run time (vec_math.h); the
// decode row kernels come in AVX2 and AVX-512 builds of one source (row_kernels.inc).
#include "vec_math.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include <sys/syscall.h>
#include <unistd.h>

#include "exp512.h"
#include "row_kernels.h"

namespace swaa::cpu {

namespace {
// Linux hands a process the AMX tile registers only when asked (arch_prctl, Linux 5.16+);
// without that permission the first tile instruction faults.
bool os_grants_amx_tiles() {
  constexpr long kReqXcompPerm = 0x1023, kXfeatureTileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureTileData) == 0;
}
}  // namespace

// The best instruction set this CPU has, capped by SWAA_CPU_ISA (scalar / avx2 / avx512 / amx) so
// that the tests can run every path on one machine.
Isa cpu_isa() {
  static const Isa isa = [] {
    Isa best = Isa::kScalar;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
      best = Isa::kAvx2;
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
        best = Isa::kAvx512;
        if (__builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("amx-tile") &&
            __builtin_cpu_supports("amx-bf16") && os_grants_amx_tiles()) {
          best = Isa::kAmx;
        }
      }
    }
    const char* cap = std::getenv("SWAA_CPU_ISA");
    if (cap == nullptr || *cap == '\0' || std::strcmp(cap, "amx") == 0) return best;
    if (std::strcmp(cap, "scalar") == 0) return Isa::kScalar;
    if (std::strcmp(cap, "avx2") == 0) return std::min(best, Isa::kAvx2);
    if (std::strcmp(cap, "avx512") == 0) return std::min(best, Isa::kAvx512);
    std::fprintf(stderr, "swaa_ext: SWAA_CPU_ISA=%s is not one of scalar, avx2, avx512, amx; "
                 "ignored\n", cap);
    return best;
  }();
  return isa;
}
namespace {

#define SWAA_AVX2 __attribute__((target("avx2,fma,f16c")))

bool cpu_has_avx2() { return cpu_isa() >= Isa::kAvx2; }

// exp(x) for x <= 0 (inputs here are scores minus their row max): Cephes' expf, 2^n * p(r) with
// n = round(x / ln 2) and r = x - n ln 2 (ln 2 split in two for precision), relative error
// ~1e-7. Below the smallest normal's log the result is 0, so exp(-inf) = 0 exactly.
SWAA_AVX2 inline __m256 exp256(__m256 x) {
  const __m256 min_x = _mm256_set1_ps(-87.3365f);
  const __m256 underflow = _mm256_cmp_ps(x, min_x, _CMP_LT_OQ);  // false for NaN: stays NaN
  x = _mm256_max_ps(x, min_x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i pow2n = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n));
  return _mm256_andnot_ps(underflow, y);
}

SWAA_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

SWAA_AVX2 inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

// Lanes [0, n) of a partial vector (n < 8), the rest `fill`.
SWAA_AVX2 inline __m256 load_partial(const float* x, int64_t n, float fill) {
  alignas(32) float buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = i < n ? x[i] : fill;
  return _mm256_load_ps(buf);
}

SWAA_AVX2 float row_max_avx2(const float* x, int64_t n) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  __m256 m = _mm256_set1_ps(neg_inf);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  if (i < n) m = _mm256_max_ps(m, load_partial(x + i, n - i, neg_inf));
  return hmax(m);
}

template <bool kSum>
SWAA_AVX2 float exp_shifted_avx2(float* x, int64_t n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(x + i, e);
    if constexpr (kSum) sum = _mm256_add_ps(sum, e);
  }
  float tail = 0;  // lanes past n must not count toward the sum
  if (i < n) {
    alignas(32) float buf[8];
    _mm256_store_ps(buf, exp256(_mm256_sub_ps(load_partial(x + i, n - i, 0.0f), s)));
    for (int64_t j = 0; j < n - i; ++j) tail += (x[i + j] = buf[j]);
  }
  return kSum ? hsum(sum) + tail : 0.0f;
}

// The same two functions sixteen lanes wide (the softmax of a 64-key tile: 4 vectors a row).
#define SWAA_AVX512 __attribute__((target("avx512f,avx2,fma")))

SWAA_AVX512 float row_max_avx512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n) {
    const __mmask16 lanes = _cvtu32_mask16((1u << (n - i)) - 1);
    m = _mm512_mask_max_ps(m, lanes, m, _mm512_maskz_loadu_ps(lanes, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

template <bool kSum>
SWAA_AVX512 float exp_shifted_avx512(float* x, int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = _cvtu32_mask16(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, x + i), s));
    _mm512_mask_storeu_ps(x + i, lanes, e);
    if constexpr (kSum) sum = _mm512_mask_add_ps(sum, lanes, sum, e);
  }
  return kSum ? _mm512_reduce_add_ps(sum) : 0.0f;
}

// float -> the bit patterns of bf16 (rounded to nearest even; NaN kept quiet) in 32-bit lanes.
SWAA_AVX512 inline __m512i bf16_bits(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_srli_epi32(
      _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000))), 16);
}

template <typename S>
SWAA_AVX512 void scale_into_avx512(const float* x, float a, int64_t n, S* out) {
  const __m512 va = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), va);
    if constexpr (std::is_same_v<S, float>) {
      _mm512_storeu_ps(out + i, v);
    } else if constexpr (std::is_same_v<S, bf16>) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi32_epi16(bf16_bits(v)));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                          _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
  for (; i < n; ++i) out[i] = from_compute<S>(a * x[i]);
}

SWAA_AVX2 void scale_row_avx2(float* y, int64_t n, float a) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), va));
  for (; i < n; ++i) y[i] *= a;
}

SWAA_AVX2 void softmax_grad_row_avx2(const float* p, float* dp, int64_t n, float delta) {
  const __m256 vd = _mm256_set1_ps(delta);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_sub_ps(_mm256_loadu_ps(dp + i), vd);
    _mm256_storeu_ps(dp + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), g));
  }
  for (; i < n; ++i) dp[i] = p[i] * (dp[i] - delta);
}

SWAA_AVX2 void axpy_avx2(float* y, float a, const float* x, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

void axpy(float* y, float a, const float* x, int64_t n) {
  if (cpu_has_avx2()) return axpy_avx2(y, a, x, n);
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

template <typename S>
void scale_into(const float* x, float a, int64_t n, S* out) {
  if (cpu_isa() >= Isa::kAvx512) return scale_into_avx512(x, a, n, out);
  for (int64_t i = 0; i < n; ++i) out[i] = from_compute<S>(a * x[i]);
}
template void scale_into<float>(const float*, float, int64_t, float*);
template void scale_into<bf16>(const float*, float, int64_t, bf16*);
template void scale_into<fp16>(const float*, float, int64_t, fp16*);

template <typename S>
void row_scores(const float* q, int64_t rows, const S* k, int64_t ldk, int64_t cols, int64_t d,
                float* scores, int64_t lds) {
  if (cpu_isa() >= Isa::kAvx512 && d % 16 == 0) {
    return avx512::row_scores(q, rows, k, ldk, cols, d, scores, lds);
  }
  if (cpu_isa() >= Isa::kAvx2 && d % 8 == 0) {
    return avx2::row_scores(q, rows, k, ldk, cols, d, scores, lds);
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float sum = 0;
      for (int64_t i = 0; i < d; ++i) sum += q[r * d + i] * to_compute(k[c * ldk + i]);
      scores[r * lds + c] = sum;
    }
  }
}

template <typename S>
void row_accumulate(const float* p, int64_t ldp, int64_t rows, const S* v, int64_t ldv,
                    int64_t cols, int64_t d, float* acc) {
  if (cpu_isa() >= Isa::kAvx512 && d % 16 == 0) {
    return avx512::row_accumulate(p, ldp, rows, v, ldv, cols, d, acc);
  }
  if (cpu_isa() >= Isa::kAvx2 && d % 8 == 0) {
    return avx2::row_accumulate(p, ldp, rows, v, ldv, cols, d, acc);
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t i = 0; i < d; ++i) acc[r * d + i] += p[r * ldp + c] * to_compute(v[c * ldv + i]);
    }
  }
}

#define SWAA_ROW_KERNELS(S)                                                                    \
  template void row_scores<S>(const float*, int64_t, const S*, int64_t, int64_t, int64_t, float*, \
                              int64_t);                                                        \
  template void row_accumulate<S>(const float*, int64_t, int64_t, const S*, int64_t, int64_t,    \
                                  int64_t, float*);
SWAA_ROW_KERNELS(float)
SWAA_ROW_KERNELS(bf16)
SWAA_ROW_KERNELS(fp16)

float row_max(const float* x, int64_t n) {
  if (cpu_isa() >= Isa::kAvx512) return row_max_avx512(x, n);
  if (cpu_has_avx2()) return row_max_avx2(x, n);
  return *std::max_element(x, x + n);
}

float exp_shifted_sum(float* x, int64_t n, float shift) {
  if (cpu_isa() >= Isa::kAvx512) return exp_shifted_avx512<true>(x, n, shift);
  if (cpu_has_avx2()) return exp_shifted_avx2<true>(x, n, shift);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - shift));
  return sum;
}

void exp_shifted(float* x, int64_t n, float shift) {
  if (cpu_isa() >= Isa::kAvx512) {
    exp_shifted_avx512<false>(x, n, shift);
    return;
  }
  if (cpu_has_avx2()) {
    exp_shifted_avx2<false>(x, n, shift);
    return;
  }
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i] - shift);
}

void scale_row(float* y, int64_t n, float a) {
  if (cpu_has_avx2()) return scale_row_avx2(y, n, a);
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

void softmax_grad_row(const float* p, float* dp, int64_t n, float delta) {
  if (cpu_has_avx2()) return softmax_grad_row_avx2(p, dp, n, delta);
  for (int64_t i = 0; i < n; ++i) dp[i] = p[i] * (dp[i] - delta);
}

}  // namespace swaa::cpu
