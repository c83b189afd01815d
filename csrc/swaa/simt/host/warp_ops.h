// Host mode: what a warp collective computes once every lane of its mask has arrived. The lane
// inputs/outputs follow the fragment layouts of the PTX ISA ("Matrix fragments for
// mma.m16n8k16 with floating point type", "Warp-level matrix load instruction: ldmatrix"):
//   groupID = lane >> 2, tig (threadID_in_group) = lane % 4; a 32-bit register holds two 16-bit
//   elements, the lower-indexed one in bits 0..15.
//   A (16x16, row): a0,a1 = A[g][2t+{0,1}]  a2,a3 = A[g+8][2t+{0,1}]  a4,a5 = A[g][2t+8+{0,1}]
//                   a6,a7 = A[g+8][2t+8+{0,1}]    (register j holds elements a2j, a2j+1)
//   B (16x8, col):  b0,b1 = B[2t+{0,1}][g]   b2,b3 = B[2t+8+{0,1}][g]
//   C, D (16x8):    c0,c1 = C[g][2t+{0,1}]   c2,c3 = C[g+8][2t+{0,1}]
//   ldmatrix m8n8 .b16: lanes 8i..8i+7 give the addresses of rows 0..7 of matrix i; register i of
//   lane L holds row L/4, columns 2(L%4)+{0,1} of matrix i (with .trans: of its transpose).
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "memory.h"
#include "race_check.h"
#include "runtime.h"

namespace swaa::simt::host {

struct MmaOperands {
  const uint32_t* a;  // 4 registers
  const uint32_t* b;  // 2 registers
  const float* c;     // 4 floats
};

// cuda_fp16.h's host conversion is bit-twiddling per call; an mma converts 384 operands.
inline const std::vector<float>& f16_to_float_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t b = 0; b < 65536; ++b) t[b] = __half2float(__ushort_as_half(uint16_t(b)));
    return t;
  }();
  return table;
}
inline float f16_bits_to_float(uint16_t bits) { return f16_to_float_table()[bits]; }
inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t lo16(uint32_t r) { return uint16_t(r & 0xffffu); }
inline uint16_t hi16(uint32_t r) { return uint16_t(r >> 16); }
inline uint32_t pack16(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

template <float (*ToFloat)(uint16_t)>
void complete_mma(Fiber* const* lanes) {
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto& in = *static_cast<const MmaOperands*>(lanes[lane]->slot.in);
    const int g = lane >> 2, t = lane & 3;
    for (int j = 0; j < 4; ++j) {  // register j: rows g / g+8, columns 2t / 2t+8
      const int row = g + 8 * (j & 1), col = 2 * t + 8 * (j >> 1);
      A[row][col] = ToFloat(lo16(in.a[j]));
      A[row][col + 1] = ToFloat(hi16(in.a[j]));
    }
    for (int j = 0; j < 2; ++j) {
      B[2 * t + 8 * j][g] = ToFloat(lo16(in.b[j]));
      B[2 * t + 8 * j + 1][g] = ToFloat(hi16(in.b[j]));
    }
    for (int j = 0; j < 4; ++j) C[g + 8 * (j >> 1)][2 * t + (j & 1)] = in.c[j];
  }
  // Outputs only after every input was read: d may alias c.
  for (int lane = 0; lane < 32; ++lane) {
    auto* d = static_cast<float*>(lanes[lane]->slot.out);
    const int g = lane >> 2, t = lane & 3;
    for (int j = 0; j < 4; ++j) {
      const int row = g + 8 * (j >> 1), col = 2 * t + (j & 1);
      double acc = 0;  // products of 16-bit floats are exact in fp32; sum them once, then round
      for (int k = 0; k < 16; ++k) acc += double(A[row][k]) * double(B[k][col]);
      d[j] = float(double(C[row][col]) + acc);
    }
  }
}

inline void complete_ldmatrix(Emulator& e, Fiber* const* lanes, int count, bool trans,
                              const Site& site) {
  uint16_t m[4][8][8];
  for (int i = 0; i < count; ++i) {
    for (int r = 0; r < 8; ++r) {
      const Fiber& supplier = *lanes[8 * i + r];
      const void* row = supplier.slot.in;
      check_shared(site, supplier, row, 16, 16);
      std::memcpy(m[i][r], row, 16);
      if (e.race) e.race->note_read(row, 16, supplier, site);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    auto* out = static_cast<uint32_t*>(lanes[lane]->slot.out);
    const int row = lane / 4, col = 2 * (lane % 4);
    for (int i = 0; i < count; ++i) {
      out[i] = trans ? pack16(m[i][col][row], m[i][col + 1][row])
                     : pack16(m[i][row][col], m[i][row][col + 1]);
    }
  }
}

// Which lane `lane` reads in a shuffle; `lane` itself when the source is outside its segment.
inline unsigned shuffle_source(WarpOp op, unsigned lane, int arg, int width) {
  const unsigned w = unsigned(width), segment = lane / w * w, in_segment = lane % w;
  switch (op) {
    case WarpOp::Shfl: return segment + unsigned(arg) % w;
    case WarpOp::ShflXor: {
      const unsigned src = lane ^ unsigned(arg);
      return src >= segment + w ? lane : src;
    }
    case WarpOp::ShflDown: return in_segment + unsigned(arg) >= w ? lane : lane + unsigned(arg);
    case WarpOp::ShflUp: return in_segment < unsigned(arg) ? lane : lane - unsigned(arg);
    default: return lane;
  }
}

inline void complete_shuffle(const WarpCollective& w, Fiber* const* lanes) {
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!((w.mask >> lane) & 1)) continue;
    const LaneSlot& s = lanes[lane]->slot;
    if (s.width < 1 || s.width > 32 || (s.width & (s.width - 1))) {
      fail(to_string(w.site) + ": width must be a power of two in [1, 32]");
    }
    const unsigned src = shuffle_source(w.op, lane, s.arg, s.width);
    if (!((w.mask >> src) & 1)) {
      fail(to_string(w.site) + ": lane " + std::to_string(lane) + " reads lane " +
           std::to_string(src) + ", which is not in the mask");
    }
    std::memcpy(s.out, lanes[src]->slot.in, 8);
  }
}

inline void complete_vote(const WarpCollective& w, Fiber* const* lanes) {
  uint32_t ballot = 0;
  for (unsigned lane = 0; lane < 32; ++lane) {
    if ((w.mask >> lane) & 1 && *static_cast<const int*>(lanes[lane]->slot.in) != 0) {
      ballot |= 1u << lane;
    }
  }
  uint32_t result = ballot;
  if (w.op == WarpOp::Any) result = ballot != 0;
  if (w.op == WarpOp::All) result = ballot == w.mask;
  for (unsigned lane = 0; lane < 32; ++lane) {
    if ((w.mask >> lane) & 1) *static_cast<uint32_t*>(lanes[lane]->slot.out) = result;
  }
}

inline void complete_warp_op(Emulator& e, const WarpCollective& w, Fiber* const* lanes) {
  switch (w.op) {
    case WarpOp::SyncWarp: return;
    case WarpOp::Shfl:
    case WarpOp::ShflXor:
    case WarpOp::ShflDown:
    case WarpOp::ShflUp: return complete_shuffle(w, lanes);
    case WarpOp::Ballot:
    case WarpOp::Any:
    case WarpOp::All: return complete_vote(w, lanes);
    case WarpOp::MmaF16: return complete_mma<f16_bits_to_float>(lanes);
    case WarpOp::MmaBf16: return complete_mma<bf16_bits_to_float>(lanes);
    case WarpOp::Ldmatrix1: return complete_ldmatrix(e, lanes, 1, false, w.site);
    case WarpOp::Ldmatrix2: return complete_ldmatrix(e, lanes, 2, false, w.site);
    case WarpOp::Ldmatrix4: return complete_ldmatrix(e, lanes, 4, false, w.site);
    case WarpOp::Ldmatrix1T: return complete_ldmatrix(e, lanes, 1, true, w.site);
    case WarpOp::Ldmatrix2T: return complete_ldmatrix(e, lanes, 2, true, w.site);
    case WarpOp::Ldmatrix4T: return complete_ldmatrix(e, lanes, 4, true, w.site);
  }
}

// mma and ldmatrix are .aligned: every lane executes the same instruction with a full mask.
inline bool is_aligned_op(WarpOp op) { return op >= WarpOp::MmaF16; }

}  // namespace swaa::simt::host
