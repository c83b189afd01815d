// EXPECT for the C++ tests: records a failure with file:line and a message, and keeps going so
// one run reports every broken case (the first 30 are printed). main() returns failures == 0.
#pragma once
#include <cstdio>

inline int failures = 0;
#define EXPECT(cond, ...)                                           \
  do {                                                              \
    if (!(cond)) {                                                  \
      if (++failures <= 30) {                                       \
        std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
        std::fprintf(stderr, __VA_ARGS__);                          \
        std::fprintf(stderr, "\n");                                 \
      }                                                             \
    }                                                               \
  } while (0)
