// Host mode: running a grid -- blocks one at a time, the fibers of a block under the current Mode,
// barriers, warp collectives, and the diagnostics for divergence and deadlock.
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "memory.h"
#include "race_check.h"
#include "runtime.h"
#include "warp_ops.h"

namespace swaa::simt::host {

inline void execute_copy(const CpAsyncCopy& c) {
  if (c.pred) {
    std::memcpy(c.dst, c.src, c.bytes);
  } else {
    std::memset(c.dst, 0, c.bytes);
  }
}

// A thread must wait for every cp.async it issued before it exits: the PTX ISA does not promise
// that a finished block's shared memory stays valid for copies still in flight (the next block
// on the SM may own it). The emulator would let them land anyway, so it fails the thread
// instead, naming the first such copy. (Committed empty groups are no copies: harmless.)
inline void check_no_copies_in_flight(const Fiber& f) {
  size_t pending = f.uncommitted.size();
  const CpAsyncCopy* first = f.uncommitted.empty() ? nullptr : &f.uncommitted.front();
  for (auto it = f.groups.rbegin(); it != f.groups.rend(); ++it) {
    pending += it->size();
    if (!it->empty()) first = &it->front();
  }
  if (pending == 0) return;
  fail("thread " + std::to_string(f.id) + " exited with " + std::to_string(pending) +
       " cp.async copies in flight (the oldest issued at " + to_string(first->site) +
       "): wait for every copy a thread issued (cp_async_wait<0>) before it exits");
}

inline Fiber* fiber_at(Emulator& e, unsigned id) { return e.pool[id].get(); }

inline char* dynamic_smem() {
  Emulator& e = *tls_emulator;
  return e.race ? e.race->private_smem(current_fiber().id) : e.dynamic_smem;
}

inline void fiber_main(void* arg) {
  Fiber& f = *static_cast<Fiber*>(arg);
  Emulator& e = *tls_emulator;
  asan_back_in_fiber(e, f);
  try {
    e.invoke(e.kernel, e.params);
    check_no_copies_in_flight(f);
  } catch (...) {
    if (!e.error) e.error = std::current_exception();
  }
  f.state = FiberState::Done;
  f.site = {"exit", "", 0};
  ++e.done;
  asan_leave_fiber(e, f, true);
  context_switch(f.ctx, e.scheduler);
  std::abort();  // a finished fiber is never resumed
}

// ---- barriers and warp collectives (called from the running fiber) ---------------------------

inline std::vector<unsigned> threads_where(Emulator& e, FiberState state, const Site* site) {
  std::vector<unsigned> ids;
  for (unsigned i = 0; i < e.nthreads; ++i) {
    const Fiber& f = *fiber_at(e, i);
    if (f.state == state && (!site || f.site == *site)) ids.push_back(i);
  }
  return ids;
}

inline void syncthreads(const Site& s) {
  Emulator& e = *tls_emulator;
  Fiber& f = current_fiber();
  if (e.barrier_arrived > 0 && !(s == e.barrier_site)) {
    fail("divergent barrier: thread " + std::to_string(f.id) + " reached " + to_string(s) +
         " while threads " +
         describe_threads(threads_where(e, FiberState::AtBarrier, &e.barrier_site)) +
         " wait at " + to_string(e.barrier_site) +
         " (every thread must reach the same __syncthreads())");
  }
  if (e.barrier_arrived == 0) e.barrier_site = s;
  f.state = FiberState::AtBarrier;
  f.site = s;
  if (++e.barrier_arrived == e.nthreads) {
    for (unsigned i = 0; i < e.nthreads; ++i) fiber_at(e, i)->state = FiberState::Runnable;
    e.barrier_arrived = 0;
    e.barrier_previous = e.barrier_opened;
    e.barrier_opened = s;
    if (e.race) e.commit_block_writes = true;
  }
  yield();
}

inline std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

inline void warp_arrive(WarpOp op, uint32_t mask, const Site& s, const LaneSlot& slot) {
  Emulator& e = *tls_emulator;
  Fiber& f = current_fiber();
  WarpCollective& w = e.warps[f.warp];
  if (!((mask >> f.lane) & 1)) {
    fail(to_string(s) + ": thread " + std::to_string(f.id) + " passes mask " + hex(mask) +
         ", which excludes its own lane " + std::to_string(f.lane));
  }
  if (is_aligned_op(op) && mask != 0xffffffffu) fail(to_string(s) + ": needs a full warp");
  if (w.arrived == 0) {
    w.op = op;
    w.mask = mask;
    w.site = s;
    w.first_lane = f.lane;
  } else if (w.op != op || w.mask != mask || (is_aligned_op(op) && !(w.site == s))) {
    fail("divergent warp collective in warp " + std::to_string(f.warp) + ": thread " +
         std::to_string(f.id) + " reached " + to_string(s) + " (mask " + hex(mask) +
         ") while its warp's lane " + std::to_string(w.first_lane) + " waits at " +
         to_string(w.site) + " (mask " + hex(w.mask) + ")");
  }
  f.slot = slot;
  f.state = FiberState::AtWarp;
  f.site = s;
  w.arrived |= 1u << f.lane;
  if (w.arrived == w.mask) {
    Fiber* lanes[32];
    for (unsigned l = 0; l < 32; ++l) lanes[l] = fiber_at(e, f.warp * 32 + l);
    complete_warp_op(e, w, lanes);
    for (unsigned l = 0; l < 32; ++l) {
      if ((w.mask >> l) & 1) lanes[l]->state = FiberState::Runnable;
    }
    w.arrived = 0;
    if (op == WarpOp::SyncWarp && e.race) e.commit_warp_writes = int(f.warp);
  }
  yield();
}

// ---- the scheduler (runs on the OS thread's own stack) ---------------------------------------

inline int pick_next(Emulator& e) {
  const unsigned n = e.nthreads;
  switch (e.mode) {
    case Mode::Random: {  // the first runnable thread from a random start: O(1) when most can run
      const unsigned start = unsigned(e.rng() % n);
      for (unsigned k = 0; k < n; ++k) {
        const unsigned i = (start + k) % n;
        if (fiber_at(e, i)->state == FiberState::Runnable) return int(i);
      }
      return -1;
    }
    case Mode::WarpSerial:  // lowest thread first = one warp at a time, as far as it goes
      for (unsigned i = 0; i < n; ++i) {
        if (fiber_at(e, i)->state == FiberState::Runnable) return int(i);
      }
      return -1;
    case Mode::Default:
    case Mode::RaceCheck:
      for (unsigned k = 0; k < n; ++k) {
        const unsigned i = (e.cursor + k) % n;
        if (fiber_at(e, i)->state == FiberState::Runnable) {
          e.cursor = i + 1;
          return int(i);
        }
      }
      return -1;
  }
  return -1;
}

[[noreturn]] inline void deadlock(Emulator& e) {
  std::vector<std::pair<Site, std::vector<unsigned>>> waiting;  // in thread order
  std::vector<unsigned> exited;
  for (unsigned i = 0; i < e.nthreads; ++i) {
    const Fiber& f = *fiber_at(e, i);
    if (f.state == FiberState::Done) {
      exited.push_back(i);
      continue;
    }
    auto it = std::find_if(waiting.begin(), waiting.end(),
                           [&](const auto& g) { return g.first == f.site; });
    if (it == waiting.end()) {
      waiting.push_back({f.site, {i}});
    } else {
      it->second.push_back(i);
    }
  }
  std::string msg = "deadlock:";
  for (const auto& [site, ids] : waiting) {
    msg += " threads " + describe_threads(ids) + " wait at " + to_string(site) + ";";
  }
  if (!exited.empty()) msg += " threads " + describe_threads(exited) + " have exited;";
  msg += " every thread must reach every __syncthreads(), and every lane of a mask the same "
         "warp collective";
  fail(msg);
}

inline void run_block(Emulator& e) {
  const Site entry{"kernel entry", "", 0};
  e.done = 0;
  e.barrier_arrived = 0;
  e.barrier_opened = e.barrier_previous = entry;
  e.cursor = 0;
  e.error = nullptr;
  e.warps.assign(e.nthreads / 32, WarpCollective{});
  if (e.dynamic_smem) std::memset(e.dynamic_smem, 0xff, e.dynamic_smem_bytes);
  for (unsigned i = 0; i < e.nthreads; ++i) {
    Fiber& f = *fiber_at(e, i);
    f.thread_idx = uint3{i, 0, 0};
    f.id = i;
    f.lane = i % 32;
    f.warp = i / 32;
    f.state = FiberState::Runnable;
    f.site = entry;
    f.uncommitted.clear();
    f.groups.clear();
    f.asan_fake_stack = nullptr;
    context_init(f.ctx, f.stack, fiber_main, &f);
  }
  if (e.mode == Mode::RaceCheck) {
    e.race = std::make_unique<RaceChecker>(e.dynamic_smem, e.dynamic_smem_bytes, e.nthreads);
  }
  while (e.done < e.nthreads) {
    const int next = pick_next(e);
    if (next < 0) deadlock(e);
    Fiber& f = *fiber_at(e, unsigned(next));
    e.current = &f;
    asan_enter_fiber(e, f);
    context_switch(e.scheduler, f.ctx);
    asan_back_in_scheduler(e);
    e.current = nullptr;
    if (e.error) std::rethrow_exception(e.error);
    if (e.race && e.commit_warp_writes >= 0) {
      e.race->commit_warp(unsigned(e.commit_warp_writes));
      e.commit_warp_writes = -1;
    }
    if (e.race && e.commit_block_writes) {
      e.race->commit_block(e.barrier_previous, e.barrier_opened);
      e.commit_block_writes = false;
    }
  }
  if (e.race) {
    e.race->commit_block(e.barrier_opened, Site{"kernel exit", "", 0});  // the last writes land
    if (e.race->conflict_count() > 0) {
      std::string msg = "race check found " + std::to_string(e.race->conflict_count()) +
                        " conflicting shared-memory accesses:";
      for (const auto& r : e.race->reports()) msg += "\n  " + r;
      fail(msg);
    }
  }
}

inline size_t fiber_stack_bytes() {
  size_t kib = SWAA_SIMT_ASAN ? 1024 : 256;  // ASan's redzones need room
  if (const char* env = std::getenv("SWAA_SIMT_STACK_KB")) kib = std::strtoull(env, nullptr, 10);
  return kib * 1024;
}

struct AlignedFree {
  void operator()(char* p) const { ::operator delete(p, std::align_val_t(128)); }
};

// Leaves the emulator ready for the next launch however this one ends.
struct LaunchScope {
  Emulator& e;
  std::unique_ptr<char, AlignedFree> smem;
  ~LaunchScope() {
    e.active = false;
    e.current = nullptr;
    e.race.reset();
    e.dynamic_smem = nullptr;
    e.dynamic_smem_bytes = 0;
    e.commit_block_writes = false;
    e.commit_warp_writes = -1;
  }
};

// A launch's grid, and the file:line of the launch call (where the dim3 was converted).
struct LaunchGrid {
  LaunchGrid(dim3 dims_, std::source_location loc_ = std::source_location::current())
      : dims(dims_), loc(loc_) {}
  dim3 dims;
  std::source_location loc;
};

inline void run_grid(void (*invoke)(void (*)(), void*), void (*kernel)(), void* params,
                     const LaunchGrid& launch_grid, dim3 block, size_t smem_bytes) {
  Emulator& e = emulator();
  if (e.active) throw std::logic_error("swaa::simt: launch from inside a kernel");
  e.kernel = kernel;
  const dim3 grid = launch_grid.dims;
  const auto invalid = [&](const std::string& what) {
    throw std::invalid_argument(
        "swaa::simt::launch " + kernel_name(kernel) + " at " + launch_grid.loc.file_name() + ":" +
        std::to_string(launch_grid.loc.line()) + ": " + what);
  };
  if (block.y != 1 || block.z != 1 || block.x == 0 || block.x % 32 != 0 || block.x > 1024) {
    invalid("blocks must be 1-D with a multiple of 32 threads (at most 1024)");
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) invalid("empty grid");
  const int sm = global_target_sm.load();
  if (const size_t limit = max_dynamic_smem_bytes(sm); smem_bytes > limit) {
    invalid(std::to_string(smem_bytes) + " bytes of dynamic shared memory, more than sm_" +
            std::to_string(sm) + " allows per block (" + std::to_string(limit / 1024) +
            " KiB; swaa::simt::set_target_sm picks the GPU the emulator checks against)");
  }

  LaunchScope scope{e, nullptr};
  e.active = true;
  e.invoke = invoke;
  e.params = params;
  e.grid_dim = grid;
  e.block_dim = block;
  e.nthreads = block.x;
  e.mode = global_mode.load();
  e.seed = global_seed.load();
  e.rng.seed(e.seed);
  if (smem_bytes > 0) {  // exactly the requested size, so ASan sees overruns
    scope.smem.reset(static_cast<char*>(::operator new(smem_bytes, std::align_val_t(128))));
  }
  e.dynamic_smem = scope.smem.get();
  e.dynamic_smem_bytes = smem_bytes;
  const size_t stack_bytes = fiber_stack_bytes();
  if (stack_bytes != e.stack_bytes) {
    e.pool.clear();
    e.stack_bytes = stack_bytes;
  }
  while (e.pool.size() < e.nthreads) e.pool.push_back(std::make_unique<Fiber>(stack_bytes));
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        e.block_idx = uint3{x, y, z};
        run_block(e);
      }
    }
  }
}

}  // namespace swaa::simt::host
