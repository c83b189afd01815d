// Host mode: what a GPU would refuse and x86 tolerates, checked so the emulator refuses it too --
// shared-memory accesses outside the block's shared memory, misaligned global accesses, and
// dynamic shared memory above the target GPU's per-block limit.
//
// "The block's shared memory" is the running thread's view of the dynamic shared memory
// (RaceCheck: its private copy) or a static `__shared__` variable. Host mode makes the latter a
// `static thread_local`, so it lies in a PT_TLS segment of this OS thread; those segments are
// found with dl_iterate_phdr. (Any other thread_local would pass too; kernels have none, since
// they keep no mutable globals.)
#pragma once
#include <link.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "race_check.h"
#include "runtime.h"

namespace swaa::simt::host {

// The GPU whose limits a launch is checked against (process-wide, read at each launch).
inline std::atomic<int> global_target_sm{80};

// Largest dynamic shared memory one block may opt in to (CUDA C++ Programming Guide, "Technical
// Specifications per Compute Capability"); 0 for a target the table does not know. On a GPU a
// block's static __shared__ variables count against it too; host mode cannot size them.
inline size_t max_dynamic_smem_bytes(int sm) {
  switch (sm) {
    case 80: case 87: return 163 * 1024;
    case 86: case 89: return 99 * 1024;
    case 90: return 227 * 1024;
    default: return 0;
  }
}

struct MemoryRange {
  uintptr_t begin = 0, end = 0;
  bool holds(const void* p, size_t n) const {
    const auto a = reinterpret_cast<uintptr_t>(p);
    return a >= begin && a + n <= end;
  }
};

// This OS thread's TLS segments, re-read when an address is in none of them (a module's segment
// is allocated when the thread first touches one of its thread_locals).
inline thread_local std::vector<MemoryRange> tls_segments;

inline void read_tls_segments() {
  tls_segments.clear();
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void*) {
        if (!info->dlpi_tls_data) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          if (info->dlpi_phdr[i].p_type != PT_TLS) continue;
          const auto begin = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
          tls_segments.push_back({begin, begin + info->dlpi_phdr[i].p_memsz});
        }
        return 0;
      },
      nullptr);
}

inline bool in_static_shared(const void* p, size_t n) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (const MemoryRange& r : tls_segments) {
      if (r.holds(p, n)) return true;
    }
    if (attempt == 0) read_tls_segments();
  }
  return false;
}

// Thread `f`'s view of the block's dynamic shared memory.
inline MemoryRange dynamic_smem_of(const Emulator& e, const Fiber& f) {
  const char* base = e.race ? e.race->private_smem(f.id) : e.dynamic_smem;
  const auto begin = reinterpret_cast<uintptr_t>(base);
  return {begin, base ? begin + e.dynamic_smem_bytes : begin};
}

inline std::string address(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

inline std::string thread_name(const Fiber& f) {
  return "thread " + std::to_string(f.id) + " (warp " + std::to_string(f.warp) + ", lane " +
         std::to_string(f.lane) + ")";
}

// [p, p + n) must lie in the shared memory thread `f` can address, aligned to `align` bytes.
inline void check_shared(const Site& site, const Fiber& f, const void* p, size_t n,
                         size_t align) {
  const Emulator& e = *tls_emulator;
  const MemoryRange dyn = dynamic_smem_of(e, f);
  if (!dyn.holds(p, n) && !in_static_shared(p, n)) {
    fail(to_string(site) + ": " + thread_name(f) + " accesses " + std::to_string(n) +
         " bytes at " + address(p) + ", outside the block's shared memory (dynamic: " +
         std::to_string(e.dynamic_smem_bytes) + " bytes at " +
         address(reinterpret_cast<const void*>(dyn.begin)) +
         " for this thread; or a static __shared__ variable)");
  }
  if (reinterpret_cast<uintptr_t>(p) % align != 0) {
    fail(to_string(site) + ": " + thread_name(f) + " accesses shared memory at " + address(p) +
         ", which is not " + std::to_string(align) + "-byte aligned");
  }
}

// A 1/2/4/8/16-byte global access must be naturally aligned (a GPU raises a misaligned-address
// fault; x86 just does it).
inline void check_global_aligned(const Site& site, const void* p, size_t n) {
  if (reinterpret_cast<uintptr_t>(p) % n != 0) {
    fail(to_string(site) + ": " + thread_name(current_fiber()) + " accesses " +
         std::to_string(n) + " bytes of global memory at " + address(p) +
         ", which is not " + std::to_string(n) + "-byte aligned");
  }
}

}  // namespace swaa::simt::host
