// exp(x) on 16 float lanes for the AVX-512 code of the row kernels (vec_math.cpp) and of the
// AMX softmax (amx_tiles.cpp). Internal to each file that includes it (anonymous namespace) and
// compiled for AVX-512 only, so no copy of it can reach code that runs on a CPU without it.
#pragma once
#include <immintrin.h>

namespace swaa::cpu {
namespace {

// For x <= 0 (scores minus their row max): Cephes' expf, 2^n * p(r) with n = round(x / ln 2)
// and r = x - n ln 2 (ln 2 split in two for precision), relative error ~1e-7; 2^n applied by
// scalef. Below the smallest normal's log the result is 0, so exp(-inf) = 0 exactly.
__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
  const __m512 min_x = _mm512_set1_ps(-87.3365f);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, min_x, _CMP_LT_OQ);  // false for NaN
  x = _mm512_max_ps(x, min_x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_scalef_ps(_knot_mask16(underflow), y, n);
}

}  // namespace
}  // namespace swaa::cpu
