// Planted bugs for the host mode's memory checks -- what x86 tolerates and a GPU refuses -- each
// asserting the diagnostic (file:line, block, thread): ldmatrix / cp.async / ld_shared addresses
// outside the block's shared memory, misaligned global accesses, dynamic shared memory above the
// target's limit; and the race check's tracking of plain shared-memory reads and writes. The
// bug-free versions (static __shared__ included) pass in every mode.
#include "simt_test.h"

using swaa::simt::Mode;

static std::string error_of(const std::function<void()>& run) {
  try {
    run();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

static std::string at(int line) { return std::string(__FILE__) + ":" + std::to_string(line); }

// Checks `error` names every part, in every mode.
static void expect_in_every_mode(const char* what, const std::function<void()>& run,
                                 const std::vector<std::string>& parts) {
  for (const ModeCase& m : all_modes()) {
    swaa::simt::set_mode(m.mode, m.seed);
    const std::string e = error_of(run);
    bool ok = !e.empty();
    for (const std::string& part : parts) ok = ok && contains(e, part);
    EXPECT(ok, "%s [%s]: %s", what, m.name, e.c_str());
  }
  swaa::simt::set_mode(Mode::Default);
}

// ---- shared-memory addresses ------------------------------------------------------------------
// kRowBase: where lane 0's row is, as an offset from the dynamic shared memory; kGlobalRows reads
// the rows from global memory instead (a pointer mixed up with its shared copy).
static const int kLdmatrixLine = __LINE__ + 6;
template <bool kGlobalRows>
__global__ void ldmatrix_rows_kernel(const uint16_t* gmem, int row_base, uint32_t* out) {
  SWAA_DYNAMIC_SMEM(smem);
  const uint16_t* rows = kGlobalRows ? gmem : reinterpret_cast<const uint16_t*>(smem) + row_base;
  uint32_t r[4];
  swaa::simt::ldmatrix_x4(r, rows + 8 * (threadIdx.x % 32));
  out[threadIdx.x] = r[0];
}

static void check_ldmatrix_addresses() {
  std::vector<uint16_t> gmem(256);
  std::vector<uint32_t> out(64);
  // 32 rows of 16 bytes need 512 bytes; 256 hold rows 0-15 only, so lane 16 is the first outside.
  expect_in_every_mode("ldmatrix past the end", [&] {
    run_kernel(ldmatrix_rows_kernel<false>, dim3(2), dim3(64), 256, gmem.data(), 0, out.data());
  }, {"block (0,0,0): ldmatrix_x4 at " + at(kLdmatrixLine), "lane 16)",
      "accesses 16 bytes at", "outside the block's shared memory"});
  expect_in_every_mode("ldmatrix of global memory", [&] {
    run_kernel(ldmatrix_rows_kernel<true>, dim3(1), dim3(32), 512, gmem.data(), 0, out.data());
  }, {"ldmatrix_x4 at " + at(kLdmatrixLine), "thread 0 (warp 0, lane 0)", "outside"});
  expect_in_every_mode("ldmatrix before the start", [&] {
    run_kernel(ldmatrix_rows_kernel<false>, dim3(1), dim3(32), 512, gmem.data(), -8, out.data());
  }, {"ldmatrix_x4 at " + at(kLdmatrixLine), "thread 0 (warp 0, lane 0)", "outside"});
}

static const int kCpAsyncLine = __LINE__ + 5;
static const int kCpAsyncCaLine = __LINE__ + 6;
__global__ void cp_async_dst_kernel(const uint8_t* src, int chunks, int src_offset) {
  SWAA_DYNAMIC_SMEM(smem);  // 4-byte copies to [0, 256), then 16-byte chunks from 256 on
  const int t = threadIdx.x;
  if (t < chunks) swaa::simt::cp_async_16(smem + 256 + 16 * t, src + 16 * t, true);
  swaa::simt::cp_async_commit();
  swaa::simt::cp_async_ca<4>(smem + 4 * t, src + 4 * t + src_offset, true);
  swaa::simt::cp_async_commit();
  swaa::simt::cp_async_wait<0>();
}

static void check_cp_async_addresses() {
  std::vector<uint8_t> src(1024 + 16);
  const auto* base = src.data() + (16 - reinterpret_cast<uintptr_t>(src.data()) % 16) % 16;
  expect_in_every_mode("cp.async past the end", [&] {  // 33 chunks, room for 32
    run_kernel(cp_async_dst_kernel, dim3(1), dim3(64), 768, base, 33, 0);
  }, {"cp_async_16 at " + at(kCpAsyncLine), "thread 32 (warp 1, lane 0)", "outside"});
  expect_in_every_mode("cp.async.ca misaligned source", [&] {
    run_kernel(cp_async_dst_kernel, dim3(1), dim3(64), 768, base, 32, 2);
  }, {"cp_async_ca at " + at(kCpAsyncCaLine), "4 bytes of global memory", "not 4-byte aligned"});
  // The bug-free launch passes.
  expect_in_every_mode("(control)", [&] {
    run_kernel(cp_async_dst_kernel, dim3(1), dim3(64), 768, base, 32, 0);
    throw std::runtime_error("no error");
  }, {"no error"});
}

// Static __shared__ is shared memory too; one element past a dynamic buffer is not.
static const int kLdSharedLine = __LINE__ + 11;
__global__ void shared_reads_kernel(int past_end, uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[32 * 8];  // ldmatrix rows: 16-byte aligned
  SWAA_DYNAMIC_SMEM(smem);
  auto* dyn = reinterpret_cast<float*>(smem);
  const int t = threadIdx.x;
  for (int c = 0; c < 8; ++c) swaa::simt::st_shared(tile + 8 * t + c, uint16_t(t * 8 + c));
  swaa::simt::st_shared(dyn + t, float(t));
  __syncthreads();
  uint32_t r[1];
  swaa::simt::ldmatrix_x1(r, tile + 8 * (t % 8));
  const float x = swaa::simt::ld_shared(dyn + (t + past_end) % 33);
  out[t] = r[0] + uint32_t(x);
}

static void check_shared_reads() {
  for (const ModeCase& m : all_modes()) {
    swaa::simt::set_mode(m.mode, m.seed);
    std::vector<uint32_t> out(32);
    const std::string e = error_of(
        [&] { run_kernel(shared_reads_kernel, dim3(1), dim3(32), 32 * 4, 0, out.data()); });
    bool right = e.empty();
    for (int t = 0; t < 32; ++t) {
      const uint32_t row = t / 4, col = 2 * (t % 4);
      right = right && out[t] == ((row * 8 + col) | (row * 8 + col + 1) << 16) + uint32_t(t);
    }
    EXPECT(right, "static __shared__ + dynamic reads [%s]: %s", m.name, e.c_str());
  }
  swaa::simt::set_mode(Mode::Default);
  std::vector<uint32_t> out(32);
  expect_in_every_mode("ld_shared one past the end", [&] {
    run_kernel(shared_reads_kernel, dim3(1), dim3(32), 32 * 4, 1, out.data());
  }, {"ld_shared at " + at(kLdSharedLine), "thread 31 (warp 0, lane 31)", "4 bytes at",
      "outside"});
}

// ---- misaligned global accesses ---------------------------------------------------------------
// The forward's output store writes two 16-bit elements as one 32-bit word: fine on an even
// element offset, a misaligned-address fault on a GPU on an odd one.
static const int kStoreLine = __LINE__ + 4;
__global__ void packed_store_kernel(__half* out, int element_offset) {
  auto* word = reinterpret_cast<uint32_t*>(out + element_offset + 2 * threadIdx.x);
  const uint32_t one_two = 0x40003c00u;  // (1.0, 2.0) in fp16
  swaa::simt::st_global(word, one_two);
}

static const int kLoad8Line = __LINE__ + 3;
static const int kLoad16Line = __LINE__ + 3;
__global__ void wide_load_kernel(const char* p, int offset8, int offset16, float* out) {
  const float2 a = swaa::simt::ld_global(reinterpret_cast<const float2*>(p + offset8));
  const float4 b = swaa::simt::ld_global(reinterpret_cast<const float4*>(p + offset16));
  out[threadIdx.x] = a.x + b.x;
}

static void check_global_alignment() {
  std::vector<__half> halves(130);
  expect_in_every_mode("4-byte store at an odd element", [&] {
    run_kernel(packed_store_kernel, dim3(1), dim3(64), 0, halves.data(), 1);
  }, {"st_global at " + at(kStoreLine), "4 bytes of global memory", "not 4-byte aligned"});
  alignas(16) char bytes[64] = {};
  std::vector<float> out(32);
  expect_in_every_mode("8-byte load at 4 bytes", [&] {
    run_kernel(wide_load_kernel, dim3(1), dim3(32), 0, bytes, 4, 0, out.data());
  }, {"ld_global at " + at(kLoad8Line), "not 8-byte aligned"});
  expect_in_every_mode("16-byte load at 8 bytes", [&] {
    run_kernel(wide_load_kernel, dim3(1), dim3(32), 0, bytes, 8, 8, out.data());
  }, {"ld_global at " + at(kLoad16Line), "not 16-byte aligned"});
  swaa::simt::set_mode(Mode::Default);
  EXPECT(error_of([&] {
           run_kernel(packed_store_kernel, dim3(1), dim3(64), 0, halves.data(), 0);
           run_kernel(wide_load_kernel, dim3(1), dim3(32), 0, bytes, 8, 16, out.data());
         }).empty(),
         "aligned global accesses refused");
}

// ---- dynamic shared memory above the target's limit -------------------------------------------
__global__ void empty_kernel() {}

static void check_smem_limit() {
  auto run = [](size_t bytes) { run_kernel(empty_kernel, dim3(1), dim3(32), bytes); };
  EXPECT(swaa::simt::target_sm() == 80, "default target sm_%d", swaa::simt::target_sm());
  EXPECT(error_of([&] { run(163 * 1024); }).empty(), "163 KiB refused on sm_80");
  const std::string e = error_of([&] { run(163 * 1024 + 1); });
  // The launch call (in run_kernel) is named.
  EXPECT(contains(e, "simt_test.h:") && contains(e, "more than sm_80 allows") &&
             contains(e, "163 KiB"),
         "164 KiB on sm_80: %s", e.c_str());
  swaa::simt::set_target_sm(90);
  EXPECT(error_of([&] { run(227 * 1024); }).empty(), "227 KiB refused on sm_90");
  EXPECT(contains(error_of([&] { run(228 * 1024); }), "more than sm_90 allows per block (227 KiB"),
         "228 KiB on sm_90 accepted");
  swaa::simt::set_target_sm(86);
  EXPECT(contains(error_of([&] { run(100 * 1024); }), "sm_86"), "100 KiB on sm_86 accepted");
  EXPECT(contains(error_of([] { swaa::simt::set_target_sm(75); }), "unknown target sm_75"),
         "sm_75 accepted");
  swaa::simt::set_target_sm(80);
}

// ---- the race check sees plain shared-memory reads and writes ----------------------------------
// kBug 0: correct (barrier between write and read). 1: read-after-write without the barrier.
// 2: write-after-read (an in-place shift: each thread reads its neighbour's word, then overwrites
// its own, which the neighbour on its left reads). 3: two threads store the value already there.
static const int kRaceReadLine = __LINE__ + 8;
template <int kBug>
__global__ void plain_race_kernel(int* out) {
  SWAA_DYNAMIC_SMEM(smem);
  auto* s = reinterpret_cast<int*>(smem);
  const int t = threadIdx.x, n = blockDim.x;
  swaa::simt::st_shared(s + t, 10 * t);
  if (kBug != 1) __syncthreads();
  const int v = swaa::simt::ld_shared(s + (t + 1) % n);
  if (kBug == 2) swaa::simt::st_shared(s + t, v);
  if (kBug == 3) swaa::simt::st_shared(s + n + t / 2, -1);  // the 0xff poison: no byte changes
  __syncthreads();
  out[t] = v;
}

template <int kBug>
static std::string race_report(std::vector<int>& out) {
  swaa::simt::set_mode(Mode::RaceCheck);
  const std::string e =
      error_of([&] { run_kernel(plain_race_kernel<kBug>, dim3(1), dim3(64), 512, out.data()); });
  swaa::simt::set_mode(Mode::Default);
  return e;
}

static void check_plain_races() {
  std::vector<int> out(64);
  for (const ModeCase& m : all_modes()) {
    swaa::simt::set_mode(m.mode, m.seed);
    const std::string e =
        error_of([&] { run_kernel(plain_race_kernel<0>, dim3(1), dim3(64), 512, out.data()); });
    bool right = e.empty();
    for (int t = 0; t < 64; ++t) right = right && out[t] == 10 * ((t + 1) % 64);
    EXPECT(right, "plain shared exchange with barrier [%s]: %s", m.name, e.c_str());
  }
  swaa::simt::set_mode(Mode::Default);
  const std::string raw = race_report<1>(out);
  EXPECT(contains(raw, "read-write race on dynamic shared memory") &&
             contains(raw, "with ld_shared at " + at(kRaceReadLine)),
         "RAW through ld_shared: %s", raw.c_str());
  const std::string war = race_report<2>(out);
  EXPECT(contains(war, "read-write race") && contains(war, "ld_shared at " + at(kRaceReadLine)),
         "WAR through ld_shared / st_shared: %s", war.c_str());
  const std::string ww = race_report<3>(out);
  EXPECT(contains(ww, "write-write race") &&
             contains(ww, "written by thread 0 (warp 0) and by thread 1 (warp 0)"),
         "same-value write-write through st_shared: %s", ww.c_str());
}

int main() {
  check_ldmatrix_addresses();
  check_cp_async_addresses();
  check_shared_reads();
  check_global_alignment();
  check_smem_limit();
  check_plain_races();
  return report("simt memory checks");
}
