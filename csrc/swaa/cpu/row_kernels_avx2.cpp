// row_kernels.inc for AVX2 + FMA (+ F16C for fp16): eight floats a vector.
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "row_kernels.h"

namespace swaa::cpu::avx2 {
namespace {

struct Vec {
  using T = __m256;
  static constexpr int kWidth = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T splat(float x) { return _mm256_set1_ps(x); }
  static T load(const float* x) { return _mm256_loadu_ps(x); }
  // bf16 is the high half of a float's bits; fp16 converts with F16C.
  static T load(const bf16* x) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static T load(const fp16* x) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* x, T v) { _mm256_storeu_ps(x, v); }
  static float sum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  // out[j] = sum(a[j]) for four vectors: two hadds and one add.
  static void sum4(const T (&a)[4], float* out) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
  }
};

}  // namespace

#include "row_kernels.inc"

}  // namespace swaa::cpu::avx2
