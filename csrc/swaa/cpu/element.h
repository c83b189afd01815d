// Element types the CPU kernels read and write. float and double are computed as themselves;
// bfloat16 and float16 are 16-bit storage (a paged KV cache kept in the model's dtype), converted
// to float32 as a tile is loaded and back as the output is stored, never as a whole tensor.
// The torch boundary hands at::BFloat16 / at::Half data as these (same bits, same size).
#pragma once
#include <cstdint>
#include <cstring>

namespace swaa::cpu {

struct bf16 {
  uint16_t bits;
};
struct fp16 {
  uint16_t bits;
};

// The type a storage element is computed in.
template <typename S> struct ComputeOf { using type = S; };
template <> struct ComputeOf<bf16> { using type = float; };
template <> struct ComputeOf<fp16> { using type = float; };
template <typename S> using compute_t = typename ComputeOf<S>::type;

template <typename T> inline T to_compute(T x) { return x; }
inline float to_compute(bf16 x) {
  const uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float to_compute(fp16 x) {
  _Float16 h;
  std::memcpy(&h, &x.bits, sizeof h);
  return float(h);
}

// Rounds to nearest even, as torch's conversions do.
template <typename S> inline S from_compute(compute_t<S> x) { return x; }
template <> inline bf16 from_compute<bf16>(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40u)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}
template <> inline fp16 from_compute<fp16>(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  fp16 out;
  std::memcpy(&out.bits, &h, sizeof h);
  return out;
}

}  // namespace swaa::cpu
