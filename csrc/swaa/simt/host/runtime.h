// Host mode core: the per-OS-thread emulator, the block scheduler, barriers and the generic warp
// collective (arrive; the last lane of the mask computes every lane's result; all continue).
//
// One OS thread runs one launch at a time; all emulator state but the mode is thread_local, so
// OpenMP threads may emulate different launches concurrently. Blocks run one after another;
// inside a block the fibers (one per CUDA thread) switch only at barriers, warp collectives and
// block end, and the Mode decides which runnable fiber goes next:
//   Default    round-robin over threads; cp.async copies happen at cp.async.wait_group;
//   Random     a seeded random runnable thread at every switch; each cp.async copies at issue or
//              at its wait_group, by a seeded coin flip;
//   WarpSerial the lowest-numbered warp that can run goes on until all its threads wait;
//              cp.async copies happen at issue (catches write-after-read on pipelined buffers);
//   RaceCheck  round-robin; cp.async copies at issue; each thread has a private copy of dynamic
//              shared memory, merged at every barrier (__syncwarp for its warp), where
//              conflicting accesses are reported (race_check.h).
#pragma once
#include <dlfcn.h>
#include <cxxabi.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <source_location>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fiber.h"

namespace swaa::simt {
enum class Mode { Default, Random, WarpSerial, RaceCheck };
}  // namespace swaa::simt

namespace swaa::simt::host {

struct Site {
  const char* what = "";  // e.g. "__syncthreads()"
  const char* file = "";
  unsigned line = 0;
  const char* function = "";  // the (device) function holding the call
  bool operator==(const Site& o) const {
    return line == o.line && (file == o.file || std::strcmp(file, o.file) == 0) &&
           (what == o.what || std::strcmp(what, o.what) == 0);
  }
};
inline Site make_site(const char* what, const std::source_location& loc) {
  return {what, loc.file_name(), static_cast<unsigned>(loc.line()), loc.function_name()};
}
inline std::string to_string(const Site& s) {
  if (s.line == 0) return s.what;  // kernel entry / exit
  return std::string(s.what) + " at " + s.file + ":" + std::to_string(s.line) + " (in " +
         s.function + ")";
}

enum class FiberState : uint8_t { Runnable, AtBarrier, AtWarp, Done };

enum class WarpOp : uint8_t {
  SyncWarp, Shfl, ShflXor, ShflDown, ShflUp, Ballot, Any, All, MmaF16, MmaBf16,
  Ldmatrix1, Ldmatrix2, Ldmatrix4, Ldmatrix1T, Ldmatrix2T, Ldmatrix4T,
};

// What a lane hands to a warp collective: pointers into its own (suspended, so live) stack.
struct LaneSlot {
  const void* in = nullptr;
  void* out = nullptr;
  int arg = 0;
  int width = 32;
};

struct CpAsyncCopy {
  void* dst;
  const void* src;
  unsigned bytes;  // 4, 8 or 16
  bool pred;
  bool done;  // already copied at issue (WarpSerial, RaceCheck, half of Random's)
  Site site;  // where it was issued (the exit check names it)
};

struct Fiber {
  explicit Fiber(size_t stack_bytes) : stack(stack_bytes) {}
  Stack stack;
  Context ctx;
  uint3 thread_idx{};
  unsigned id = 0, lane = 0, warp = 0;
  FiberState state = FiberState::Runnable;
  Site site;  // where it waits now (or last waited)
  LaneSlot slot;
  std::vector<CpAsyncCopy> uncommitted;
  std::vector<std::vector<CpAsyncCopy>> groups;  // committed, oldest first
  void* asan_fake_stack = nullptr;
};

struct WarpCollective {
  WarpOp op{};
  uint32_t mask = 0;
  uint32_t arrived = 0;
  Site site;
  unsigned first_lane = 0;
};

class RaceChecker;

// The mode is process-wide, so a mode set from Python reaches the OpenMP threads that emulate;
// each launch takes a snapshot of it.
inline std::atomic<Mode> global_mode{Mode::Default};
inline std::atomic<uint64_t> global_seed{0};

// Everything about the launch and the block being run on this OS thread.
struct Emulator {
  Mode mode = Mode::Default;  // this launch's snapshot of global_mode / global_seed
  uint64_t seed = 0;
  std::mt19937_64 rng;
  std::vector<std::unique_ptr<Fiber>> pool;  // fibers (and their stacks) reused across launches
  size_t stack_bytes = 0;
  Context scheduler;
  const void* asan_scheduler_bottom = nullptr;
  size_t asan_scheduler_size = 0;
  void* asan_scheduler_fake_stack = nullptr;
  // current launch
  bool active = false;
  void (*invoke)(void (*)(), void*) = nullptr;
  void (*kernel)() = nullptr;
  void* params = nullptr;
  dim3 grid_dim, block_dim;
  uint3 block_idx{};
  unsigned nthreads = 0;
  char* dynamic_smem = nullptr;
  size_t dynamic_smem_bytes = 0;
  // current block
  Fiber* current = nullptr;
  unsigned done = 0;
  unsigned barrier_arrived = 0;
  Site barrier_site;
  Site barrier_opened;    // the barrier that started the current interval
  Site barrier_previous;  // the one before (RaceCheck reports name the interval)
  std::vector<WarpCollective> warps;
  unsigned cursor = 0;
  std::exception_ptr error;
  std::unique_ptr<RaceChecker> race;
  bool commit_block_writes = false;    // RaceCheck: a barrier completed
  int commit_warp_writes = -1;         // RaceCheck: a __syncwarp completed (warp id)
};

inline thread_local Emulator* tls_emulator = nullptr;
inline thread_local std::unique_ptr<Emulator> tls_emulator_owner;

inline Emulator& emulator() {
  if (!tls_emulator) {
    tls_emulator_owner = std::make_unique<Emulator>();
    tls_emulator = tls_emulator_owner.get();
  }
  return *tls_emulator;
}

inline Fiber& current_fiber() {
  Emulator* e = tls_emulator;
  if (!e || !e->current) {
    throw std::logic_error("swaa::simt: a device function ran outside swaa::simt::launch");
  }
  return *e->current;
}

// "0-31,64,96-127"
inline std::string describe_threads(const std::vector<unsigned>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(ids[i]);
    if (j > i) {
      out += '-';
      out += std::to_string(ids[j]);
    }
    i = j + 1;
  }
  return out;
}

// The kernel's symbol when the dynamic symbol table has it (else ""; sites name their functions).
inline std::string kernel_name(void (*kernel)()) {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(kernel), &info) || !info.dli_sname) return "";
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled ? demangled : info.dli_sname;
  std::free(demangled);
  return name;
}

inline std::string where(const Emulator& e) {
  std::ostringstream s;
  s << "swaa::simt: ";
  if (const std::string name = kernel_name(e.kernel); !name.empty()) s << name << ", ";
  s << "block (" << e.block_idx.x << "," << e.block_idx.y << "," << e.block_idx.z << ")";
  return s.str();
}

[[noreturn]] inline void fail(const std::string& what) {
  throw std::runtime_error(where(emulator()) + ": " + what);
}

// ---- switching -------------------------------------------------------------------------------

inline void asan_enter_fiber(Emulator& e, Fiber& f) {
#if SWAA_SIMT_ASAN
  __sanitizer_start_switch_fiber(&e.asan_scheduler_fake_stack, f.stack.bottom(), f.stack.size());
#else
  (void)e, (void)f;
#endif
}
inline void asan_back_in_scheduler(Emulator& e) {
#if SWAA_SIMT_ASAN
  __sanitizer_finish_switch_fiber(e.asan_scheduler_fake_stack, nullptr, nullptr);
#else
  (void)e;
#endif
}
inline void asan_back_in_fiber(Emulator& e, Fiber& f) {
#if SWAA_SIMT_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &e.asan_scheduler_bottom,
                                  &e.asan_scheduler_size);
#else
  (void)e, (void)f;
#endif
}
inline void asan_leave_fiber(Emulator& e, Fiber& f, bool final) {
#if SWAA_SIMT_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &f.asan_fake_stack, e.asan_scheduler_bottom,
                                 e.asan_scheduler_size);
#else
  (void)e, (void)f, (void)final;
#endif
}

// Suspends the running fiber; the scheduler decides who runs next.
inline void yield() {
  Emulator& e = *tls_emulator;
  Fiber& f = *e.current;
  asan_leave_fiber(e, f, false);
  context_switch(f.ctx, e.scheduler);
  asan_back_in_fiber(e, f);
}

}  // namespace swaa::simt::host
