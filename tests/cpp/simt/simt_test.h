// Shared bits of the SIMT layer's C++ tests: EXPECT, fp16/bf16 bit helpers, running a check in
// every emulation mode.
#pragma once
#include "swaa/simt/simt.h"

#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../expect.h"


struct ModeCase {
  swaa::simt::Mode mode;
  uint64_t seed;
  const char* name;
};

inline const std::vector<ModeCase>& all_modes() {
  using swaa::simt::Mode;
  static const std::vector<ModeCase> modes = {
      {Mode::Default, 0, "default"},        {Mode::Random, 1, "random(1)"},
      {Mode::Random, 2, "random(2)"},       {Mode::WarpSerial, 0, "warp-serial"},
      {Mode::RaceCheck, 0, "race-check"},
  };
  return modes;
}

// Runs `check(mode name)` once per mode; an exception from the emulator is a failure.
inline void for_each_mode(const char* test, const std::function<void(const char*)>& check) {
  for (const ModeCase& m : all_modes()) {
    swaa::simt::set_mode(m.mode, m.seed);
    try {
      check(m.name);
    } catch (const std::exception& e) {
      EXPECT(false, "%s [%s] threw: %s", test, m.name, e.what());
    }
  }
  swaa::simt::set_mode(swaa::simt::Mode::Default);
}

inline uint16_t f16_bits(float x) { return __half_as_ushort(__float2half(x)); }
inline uint16_t bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16(x)); }

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

inline int report(const char* name) {
  if (failures) {
    std::fprintf(stderr, "%s: %d failure(s)\n", name, failures);
    return 1;
  }
  std::printf("%s: ok\n", name);
  return 0;
}
