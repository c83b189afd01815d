// row_kernels.inc for AVX-512 (F + BW for the bf16 widening, + F16C): sixteen floats a vector.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#include <immintrin.h>

#include "row_kernels.h"

namespace swaa::cpu::avx512 {
namespace {

struct Vec {
  using T = __m512;
  static constexpr int kWidth = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T splat(float x) { return _mm512_set1_ps(x); }
  static T load(const float* x) { return _mm512_loadu_ps(x); }
  static T load(const bf16* x) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static T load(const fp16* x) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* x, T v) { _mm512_storeu_ps(x, v); }
  static float sum(T v) { return _mm512_reduce_add_ps(v); }
  // out[j] = sum(a[j]) for four vectors: halve each to 256 bits, then two hadds and one add.
  static void sum4(const T (&a)[4], float* out) {
    __m256 h[4];
    for (int j = 0; j < 4; ++j) {
      h[j] = _mm256_add_ps(_mm512_castps512_ps256(a[j]),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[j]), 1)));
    }
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
  }
};

}  // namespace

#include "row_kernels.inc"

}  // namespace swaa::cpu::avx512
