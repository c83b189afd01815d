// The SIMT layer (docs/architecture.md, "Testing CUDA kernels without a GPU"): the only header a kernel includes for CUDA features. Include it
// FIRST (before any CUDA header), because host mode must define `__shared__` before
// crt/host_defines.h does.
//
// Device mode (nvcc, __CUDACC__): <cuda_runtime.h>, <cuda_fp16.h>, <cuda_bf16.h> and thin
// inline-PTX wrappers (device.h). Host mode (g++ -DSWAA_SIMT_HOST, no nvcc): the same kernel
// source runs on the CPU (host/): every CUDA thread is a fiber, blocks run one at a time, warp
// collectives and the mma/ldmatrix wrappers complete when every lane of the mask has arrived,
// using the PTX ISA fragment layouts.
//
// API (both modes):
//   namespace swaa::simt {
//   // D = A*B + C, mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32
//   void mma_m16n8k16_f16 (float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
//                          const float (&c)[4]);
//   void mma_m16n8k16_bf16(...same...);
//   // ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: lanes 8i..8i+7 pass the row
//   // addresses of matrix i (lanes past 8*count pass anything); reg i gets matrix i's fragment.
//   void ldmatrix_x1(uint32_t (&r)[1], const void* smem_row);
//   // ... ldmatrix_x2 (r[2]), ldmatrix_x4 (r[4]), and the _trans variants of all three
//   // cp.async.cg.shared.global, 16 bytes; when !pred the 16 destination bytes are zero-filled and
//   // gmem_src is not read. Both pointers 16-byte aligned.
//   void cp_async_16(void* smem_dst, const void* gmem_src, bool pred);
//   // cp.async.ca.shared.global of kBytes = 4, 8 or 16 (zero-fill when !pred); both pointers
//   // kBytes-aligned. For rows of floats whose length need not be a multiple of 4.
//   template <int kBytes> void cp_async_ca(void* smem_dst, const void* gmem_src, bool pred);
//   void cp_async_commit();
//   template <int N> void cp_async_wait();   // cp.async.wait_group N
//   // Plain 1/2/4/8/16-byte loads and stores (device: `*p`, `*p = v`). Host mode checks that the
//   // address is naturally aligned and, for the _shared ones, inside the block's shared memory;
//   // RaceCheck records ld_shared / st_shared as reads / writes. Kernels access shared memory
//   // through them (or ldmatrix / cp.async), and global memory through them where a wider
//   // access (a packed pair, a vector type) could be misaligned.
//   T ld_shared(const T* p);   void st_shared(T* p, T v);
//   T ld_global(const T* p);   void st_global(T* p, T v);
//   // Device: kernel<<<grid, block, smem, stream>>>(args...), raising the dynamic-smem limit
//   // first when smem_bytes > 48 KiB; returns the first error. Host: runs the grid on the CPU in
//   // the current Mode; returns cudaSuccess or throws std::runtime_error with diagnostics
//   // (file:line, block, thread).
//   cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes,
//                      cudaStream_t stream, Args&&... args);
//   // Host mode only (process-wide, read at the start of each launch):
//   enum class Mode { Default, Random, WarpSerial, RaceCheck };
//   void set_mode(Mode mode, uint64_t seed = 0);  Mode mode();
//   // The GPU whose per-block limits launches are checked against: 80 (default, the strictest
//   // of the targets we build for: 163 KiB of dynamic shared memory), 86, 87, 89, 90 (227 KiB).
//   void set_target_sm(int sm);  int target_sm();
//   }
//   SWAA_DYNAMIC_SMEM(name);  // `char* name`: the block's dynamic shared memory, 128-B aligned
//   SWAA_UNROLL for (...)     // unroll this loop (nvcc `#pragma unroll`, g++ `GCC unroll`)
//   SWAA_NO_UNROLL for (...)  // keep it rolled (`unroll 1`)
//
// Host mode refuses what a GPU would not do, naming the file:line, block and thread: ldmatrix /
// cp.async / ld_shared / st_shared addresses outside the block's shared memory (the thread's
// dynamic shared memory or a static __shared__ variable) or misaligned; misaligned cp.async
// sources and ld_global / st_global addresses; dynamic shared memory above the target's limit
// (at launch, naming the launch call). Plain C++ loads and stores are not checked.
//
// Rules a kernel must follow to be emulatable (checked where possible; violations throw in host
// mode):
//   - launch only through swaa::simt::launch; all inline PTX only through these wrappers; no `asm`
//     and no __CUDA_ARCH__ branches in kernel bodies; no mutable globals in kernels;
//   - 1-D blocks of any multiple of 32 threads up to 1024; warp collectives with full-warp masks;
//   - every thread reaches every __syncthreads() (no early return before a barrier; one
//     __syncthreads() per source line, so diagnostics can name it);
//   - dynamic shared memory via SWAA_DYNAMIC_SMEM; static `__shared__` variables are function-local
//     and have no initialiser (as CUDA requires). Host mode: a static `__shared__` array is a
//     `static thread_local`, i.e. shared by the fibers of the block being run on this OS thread and
//     NOT reset between blocks, so it is only ever read after this block wrote it (as on a GPU).
//     Dynamic shared memory is filled with 0xff bytes (NaN as float/half/bf16) at each block start.
//   - host-mode fibers have small stacks (256 KiB; SWAA_SIMT_STACK_KB overrides): no big local
//     arrays.
//   - RaceCheck mode tracks dynamic shared memory only (see host/race_check.h): put every buffer
//     that threads exchange data through in dynamic shared memory, and read it through ldmatrix
//     or ld_shared (plain C++ reads are not seen). There each thread's SWAA_DYNAMIC_SMEM points at
//     its own copy, so never pass shared-memory pointers between threads (through memory or
//     shuffles; the address checks then refuse the access).
//
// Host-mode schedules (set_mode; details in host/runtime.h), each catching what others miss:
//   Default     round-robin; cp.async lands at its wait_group (a read before the wait + barrier
//               sees stale bytes / the 0xff poison).
//   Random      seeded random order; each cp.async lands at issue or at its wait (coin flip).
//   WarpSerial  one warp as far as it goes, then the next; cp.async lands at issue (catches a
//               prefetch overwriting a buffer other warps still read).
//   RaceCheck   private shared-memory copies merged at barriers; reports read-write and
//               write-write races per barrier interval (reads: ldmatrix, ld_shared; writes: any
//               changed byte, st_shared, cp.async), and plain reads of another thread's
//               unsynchronised writes see stale bytes.
// Every mode reports divergent barriers / warp collectives and deadlocks (early exit before a
// barrier) with the file:line of each barrier or collective involved and the threads waiting there,
// and a thread that exits with cp.async copies it never waited for (with the oldest one's file:line).
#pragma once

#if defined(__CUDACC__)
#include "device.h"
#elif defined(SWAA_SIMT_HOST)
#include "host/host.h"
#else
#error "swaa/simt/simt.h: compile with nvcc (device mode) or with -DSWAA_SIMT_HOST (CPU emulation)"
#endif

// Before a loop over fragment arrays that nvcc might not unroll on its own (an array indexed
// by a runtime index leaves registers for the stack). The host compiler takes its own spelling.
// SWAA_NO_UNROLL: keep a loop rolled, so one trip's values are live at a time (register
// pressure over instruction count).
#if defined(__CUDACC__)
#define SWAA_UNROLL _Pragma("unroll")
#define SWAA_NO_UNROLL _Pragma("unroll 1")
#else
#define SWAA_UNROLL _Pragma("GCC unroll 16")
#define SWAA_NO_UNROLL _Pragma("GCC unroll 1")
#endif
