// Planted bugs that the SIMT layer's host mode must catch, each asserting the specific detection:
// a cp.async pipeline missing either of its two barriers, a missing barrier between plain shared
// stores and loads, two threads writing one word, an early return before a barrier (deadlock),
// divergent barriers and warp collectives, a thread exiting with cp.async copies in flight. The
// bug-free versions must pass in every mode.
#include <thread>

#include "simt_test.h"

using swaa::simt::launch;
using swaa::simt::Mode;

// ---- a double-buffered cp.async -> ldmatrix pipeline -----------------------------------------
// Warp 0 loads each 32x8 fp16 tile (one 16-byte row per lane); both warps read it with ldmatrix.
// kWaitBarrier: makes the landed tile visible to the other warp (read-after-write without it).
// kReuseBarrier: keeps the next prefetch off a buffer still being read (write-after-read).
constexpr int kTileBytes = 512;

template <bool kWaitBarrier, bool kReuseBarrier>
__global__ void pipeline_kernel(const uint16_t* src, int tiles, uint64_t* out) {
  SWAA_DYNAMIC_SMEM(smem);
  const int t = threadIdx.x, lane = t % 32;
  const auto load = [&](int tile) {
    if (t < 32) {
      char* row = smem + tile % 2 * kTileBytes + 16 * t;
      swaa::simt::cp_async_16(row, src + 256 * tile + 8 * t, true);
    }
  };
  load(0);
  swaa::simt::cp_async_commit();
  uint64_t acc = 0;
  for (int k = 0; k < tiles; ++k) {
    if (k + 1 < tiles) load(k + 1);
    swaa::simt::cp_async_commit();
    swaa::simt::cp_async_wait<1>();
    if (kWaitBarrier) __syncthreads();
    uint32_t r[4];
    swaa::simt::ldmatrix_x4(r, smem + k % 2 * kTileBytes + 16 * lane);
    acc = acc * 31 + r[0] + 3ull * r[1] + 5ull * r[2] + 7ull * r[3];
    if (kReuseBarrier) __syncthreads();
  }
  out[t] = acc;
}

// What each thread must compute: ldmatrix_x4 of row-major 32x8 tiles, per the PTX ISA.
static std::vector<uint64_t> pipeline_reference(const std::vector<uint16_t>& src, int tiles) {
  std::vector<uint64_t> want(64);
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32;
    uint64_t acc = 0;
    for (int k = 0; k < tiles; ++k) {
      uint32_t r[4];
      for (int i = 0; i < 4; ++i) {
        const uint16_t* row = &src[256 * k + 8 * (8 * i + lane / 4)];
        r[i] = uint32_t(row[2 * (lane % 4)]) | uint32_t(row[2 * (lane % 4) + 1]) << 16;
      }
      acc = acc * 31 + r[0] + 3ull * r[1] + 5ull * r[2] + 7ull * r[3];
    }
    want[t] = acc;
  }
  return want;
}

struct Outcome {
  bool correct = false;
  std::string error;  // what the emulator threw, if it did
};

template <bool kWaitBarrier, bool kReuseBarrier>
static Outcome run_pipeline(Mode mode, uint64_t seed) {
  const int tiles = 5;
  std::vector<uint16_t> src(256 * tiles);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint16_t(i * 40503u + 17);
  std::vector<uint64_t> out(64, 0);
  swaa::simt::set_mode(mode, seed);
  Outcome o;
  try {
    launch(pipeline_kernel<kWaitBarrier, kReuseBarrier>, dim3(1), dim3(64), 2 * kTileBytes, nullptr,
           src.data(), tiles, out.data());
    o.correct = out == pipeline_reference(src, tiles);
  } catch (const std::runtime_error& e) {
    o.error = e.what();
  }
  swaa::simt::set_mode(Mode::Default);
  return o;
}

static void check_pipeline() {
  for (const ModeCase& m : all_modes()) {
    const Outcome o = run_pipeline<true, true>(m.mode, m.seed);
    EXPECT(o.correct && o.error.empty(), "correct pipeline [%s]: %s", m.name, o.error.c_str());
  }
  // Write-after-read: warp-serial order with eager cp.async overwrites the buffer warp 1 is about
  // to read; race-check reports it whatever the order.
  const Outcome serial = run_pipeline<true, false>(Mode::WarpSerial, 0);
  EXPECT(serial.error.empty() && !serial.correct, "WAR bug: warp-serial gave the right answer");
  int war_wrong = 0;
  for (uint64_t seed = 1; seed <= 16; ++seed) {
    war_wrong += !run_pipeline<true, false>(Mode::Random, seed).correct;
  }
  EXPECT(war_wrong > 0, "WAR bug: no random order out of 16 gave a wrong answer");
  const Outcome war = run_pipeline<true, false>(Mode::RaceCheck, 0);
  EXPECT(contains(war.error, "read-write race on dynamic shared memory"),
         "WAR bug: race check said: %s", war.error.c_str());
  EXPECT(contains(war.error, "(in void pipeline_kernel"), "race report names no kernel: %s",
         war.error.c_str());
  // Read-after-write: race-check reports it; some random orders read a tile before it landed.
  const Outcome raw = run_pipeline<false, true>(Mode::RaceCheck, 0);
  EXPECT(contains(raw.error, "read-write race") && contains(raw.error, "ldmatrix_x4 at "),
         "RAW bug: race check said: %s", raw.error.c_str());
  int wrong = 0;
  for (uint64_t seed = 1; seed <= 16; ++seed) {
    wrong += !run_pipeline<false, true>(Mode::Random, seed).correct;
  }
  EXPECT(wrong > 0, "RAW bug: no random order out of 16 gave a wrong answer");
}

// ---- a missing barrier between plain shared-memory stores and loads -----------------------------
template <bool kBarrier>
__global__ void exchange_kernel(float* out) {
  SWAA_DYNAMIC_SMEM(smem);
  auto* s = reinterpret_cast<float*>(smem);
  const int t = threadIdx.x;
  s[t] = float(t) * 2.0f;
  if (kBarrier) __syncthreads();
  out[t] = s[(t + 32) % 64];
}

static bool exchange_correct(bool barrier, Mode mode, uint64_t seed = 0) {
  std::vector<float> out(64, -1.0f);
  swaa::simt::set_mode(mode, seed);
  if (barrier) {
    launch(exchange_kernel<true>, dim3(1), dim3(64), 256, nullptr, out.data());
  } else {
    launch(exchange_kernel<false>, dim3(1), dim3(64), 256, nullptr, out.data());
  }
  swaa::simt::set_mode(Mode::Default);
  for (int t = 0; t < 64; ++t) {
    if (out[t] != float((t + 32) % 64) * 2.0f) return false;
  }
  return true;
}

static void check_missing_barrier() {
  for (const ModeCase& m : all_modes()) {
    EXPECT(exchange_correct(true, m.mode, m.seed), "exchange with barrier [%s] wrong", m.name);
  }
  // Race-check hides other threads' writes until a barrier: whatever the order, reads are stale.
  EXPECT(!exchange_correct(false, Mode::RaceCheck), "missing barrier: race check read fresh data");
  EXPECT(!exchange_correct(false, Mode::WarpSerial),
         "missing barrier: warp-serial read fresh data");
}

// ---- two threads writing one word ---------------------------------------------------------------
__global__ void write_write_kernel(int* out) {
  SWAA_DYNAMIC_SMEM(smem);
  auto* s = reinterpret_cast<int*>(smem);
  s[threadIdx.x / 2] = int(threadIdx.x);  // threads 2i and 2i+1 both write word i
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x / 2];
}

// The mode is set here and the launch runs on another OS thread, as OpenMP workers would.
static void check_write_write() {
  std::vector<int> out(32);
  swaa::simt::set_mode(Mode::RaceCheck);
  std::string error;
  std::thread worker([&] {
    try {
      launch(write_write_kernel, dim3(1), dim3(32), 64, nullptr, out.data());
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
  });
  worker.join();
  swaa::simt::set_mode(Mode::Default);
  EXPECT(contains(error, "write-write race") &&
             contains(error, "written by thread 0 (warp 0) and by thread 1 (warp 0)"),
         "write-write: %s", error.c_str());
}

// ---- deadlocks and divergence -------------------------------------------------------------------
static const int kEarlyReturnBarrierLine = __LINE__ + 5;
__global__ void early_return_kernel(int* out) {
  if (blockIdx.x == 1 && threadIdx.x >= 32) return;  // the planted bug
  out[blockIdx.x * 64 + threadIdx.x] = 1;
  // the barrier the remaining threads wait at:
  __syncthreads();
}

static const int kFirstBarrierLine = __LINE__ + 4;
static const int kSecondBarrierLine = __LINE__ + 5;
__global__ void divergent_barrier_kernel() {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

static const int kMmaLine = __LINE__ + 6;
__global__ void partial_mma_kernel() {
  const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  const float c[4] = {0, 0, 0, 0};
  float d[4];
  if (threadIdx.x % 32 < 16) {
    swaa::simt::mma_m16n8k16_f16(d, a, b, c);
  }
  __syncthreads();
}

static const int kShuffleLine = __LINE__ + 5;
__global__ void divergent_collective_kernel(int* out) {
  int v = int(threadIdx.x);
  uint32_t r[1];
  if (threadIdx.x % 32 < 16) {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  } else {
    swaa::simt::ldmatrix_x1(r, nullptr);
  }
  out[threadIdx.x] = v;
}

static std::string error_of(const std::function<void()>& run) {
  try {
    run();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

static std::string at(int line) { return std::string(__FILE__) + ":" + std::to_string(line); }

static void check_deadlocks() {
  for (const ModeCase& m : all_modes()) {
    swaa::simt::set_mode(m.mode, m.seed);
    std::vector<int> out(128);
    const std::string e1 = error_of([&] {
      launch(early_return_kernel, dim3(2), dim3(64), 0, nullptr, out.data());
    });
    const std::string barrier = "threads 0-31 wait at __syncthreads() at " +
                                at(kEarlyReturnBarrierLine);
    EXPECT(contains(e1, "block (1,0,0): deadlock") &&
               contains(e1, "(in void early_return_kernel") && contains(e1, barrier) &&
               contains(e1, "threads 32-63 have exited"),
           "early return [%s]: %s", m.name, e1.c_str());

    const std::string e2 =
        error_of([] { launch(divergent_barrier_kernel, dim3(1), dim3(64), 0, nullptr); });
    EXPECT(contains(e2, "divergent barrier") && contains(e2, at(kFirstBarrierLine)) &&
               contains(e2, at(kSecondBarrierLine)),
           "divergent barrier [%s]: %s", m.name, e2.c_str());

    const std::string e3 =
        error_of([] { launch(partial_mma_kernel, dim3(1), dim3(64), 0, nullptr); });
    EXPECT(contains(e3, "deadlock") &&
               contains(e3, "wait at mma_m16n8k16_f16 at " + at(kMmaLine)) &&
               contains(e3, "wait at __syncthreads() at " + at(kMmaLine + 2)),
           "partial mma [%s]: %s", m.name, e3.c_str());

    const std::string e4 = error_of([&] {
      launch(divergent_collective_kernel, dim3(1), dim3(32), 0, nullptr, out.data());
    });
    EXPECT(contains(e4, "divergent warp collective in warp 0") && contains(e4, at(kShuffleLine)) &&
               contains(e4, at(kShuffleLine + 2)),
           "divergent collective [%s]: %s", m.name, e4.c_str());

    // After all that, the emulator still runs a correct kernel.
    EXPECT(exchange_correct(true, m.mode, m.seed), "emulator broken after errors [%s]", m.name);
    swaa::simt::set_mode(m.mode, m.seed);
  }
  swaa::simt::set_mode(Mode::Default);
  const std::string bad_block =
      error_of([] { launch(divergent_barrier_kernel, dim3(1), dim3(48), 0, nullptr); });
  EXPECT(contains(bad_block, "multiple of 32"), "48-thread block: %s", bad_block.c_str());
}

// ---- a thread that exits with copies in flight ------------------------------------------------
// Warp 1 prefetches a row it never waits for when it has nothing to do (the shape of a dK/dV
// block with no query tile); kWait: it waits first, as every thread must.
constexpr int kStrayCopyLine = __LINE__ + 7;
template <bool kWait>
__global__ void stray_copy_kernel(const uint16_t* src, float* out) {
  SWAA_DYNAMIC_SMEM(smem);
  const int t = threadIdx.x;
  swaa::simt::cp_async_commit();  // an empty group is no copy: never reported
  if (t >= 32) {
    swaa::simt::cp_async_16(smem + 16 * (t - 32), src + 8 * (t - 32), true);
    swaa::simt::cp_async_commit();
    if (kWait) swaa::simt::cp_async_wait<0>();
    return;
  }
  out[t] = float(t);
}

static void check_copies_in_flight_at_exit() {
  std::vector<uint16_t> src(256, 1);
  std::vector<float> out(32);
  for (const ModeCase& m : all_modes()) {
    swaa::simt::set_mode(m.mode, m.seed);
    const std::string stray = error_of([&] {
      launch(stray_copy_kernel<false>, dim3(2), dim3(64), 512, nullptr, src.data(), out.data());
    });
    EXPECT(contains(stray, "block (0,0,0)") && contains(stray, "exited with 1 cp.async copies in flight") &&
               contains(stray, "cp_async_16 at " + at(kStrayCopyLine)),
           "copies in flight at exit [%s]: %s", m.name, stray.c_str());
    const std::string waited = error_of([&] {
      launch(stray_copy_kernel<true>, dim3(2), dim3(64), 512, nullptr, src.data(), out.data());
    });
    EXPECT(waited.empty(), "copies waited for [%s]: %s", m.name, waited.c_str());
  }
  swaa::simt::set_mode(Mode::Default);
}

int main() {
  check_pipeline();
  check_missing_barrier();
  check_write_write();
  check_deadlocks();
  check_copies_in_flight_at_exit();
  return report("simt planted bugs");
}
