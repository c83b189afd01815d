// Host mode: fibers = a stack (mmap'ed, guard page below) + a saved context, switched
// cooperatively.
// x86-64 uses a tiny assembly switch (callee-saved registers only: fibers never change the MXCSR
// or x87 control word, which they inherit from the thread that runs the emulator); other
// targets (or -DSWAA_SIMT_UCONTEXT) fall back to ucontext. Under AddressSanitizer every switch is
// announced with __sanitizer_{start,finish}_switch_fiber so ASan knows which stack is live.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>

#if defined(__SANITIZE_ADDRESS__)  // GCC
#define SWAA_SIMT_ASAN 1
#elif defined(__has_feature)      // clang
#if __has_feature(address_sanitizer)
#define SWAA_SIMT_ASAN 1
#endif
#endif
#ifndef SWAA_SIMT_ASAN
#define SWAA_SIMT_ASAN 0
#endif
#if SWAA_SIMT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__) && !defined(SWAA_SIMT_UCONTEXT)
#define SWAA_SIMT_UCONTEXT 1
#endif

#if defined(SWAA_SIMT_UCONTEXT)
#include <ucontext.h>
#else
extern "C" void swaa_simt_switch(void** save_sp, void* load_sp);
extern "C" void swaa_simt_trampoline();
// One copy per binary (COMDAT group), hidden so two extensions never interpose each other's.
asm(R"(
.pushsection .text.swaa_simt_switch,"axG",@progbits,swaa_simt_switch,comdat
.weak swaa_simt_switch
.hidden swaa_simt_switch
.type swaa_simt_switch,@function
.weak swaa_simt_trampoline
.hidden swaa_simt_trampoline
.type swaa_simt_trampoline,@function
.p2align 4
swaa_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size swaa_simt_switch, .-swaa_simt_switch
.p2align 4
swaa_simt_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
.size swaa_simt_trampoline, .-swaa_simt_trampoline
.popsection
)");
#endif

namespace swaa::simt::host {

// A fiber stack: [guard page | usable bytes], reused across blocks and launches.
class Stack {
 public:
  explicit Stack(size_t usable_bytes) {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_ = (usable_bytes + page_ - 1) / page_ * page_;
    void* p = mmap(nullptr, size_ + page_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    base_ = static_cast<char*>(p);
    mprotect(base_, page_, PROT_NONE);  // overflow faults instead of corrupting a neighbour
  }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  ~Stack() { munmap(base_, size_ + page_); }
  char* bottom() const { return base_ + page_; }
  size_t size() const { return size_; }

 private:
  char* base_ = nullptr;
  size_t size_ = 0;
  size_t page_ = 0;
};

struct Context {
#if defined(SWAA_SIMT_UCONTEXT)
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
};

using FiberEntry = void (*)(void*);

#if defined(SWAA_SIMT_UCONTEXT)
inline void ucontext_entry(unsigned hi, unsigned lo, unsigned fhi, unsigned flo) {
  void* arg = reinterpret_cast<void*>((uint64_t(hi) << 32) | lo);
  auto entry = reinterpret_cast<FiberEntry>((uint64_t(fhi) << 32) | flo);
  entry(arg);
  std::abort();  // entries never return
}
#endif

// Prepares `ctx` so that switching to it calls entry(arg) on `stack`. entry must never return.
inline void context_init(Context& ctx, Stack& stack, FiberEntry entry, void* arg) {
#if SWAA_SIMT_ASAN
  ASAN_UNPOISON_MEMORY_REGION(stack.bottom(), stack.size());  // frames of abandoned fibers
#endif
#if defined(SWAA_SIMT_UCONTEXT)
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.bottom();
  ctx.uc.uc_stack.ss_size = stack.size();
  ctx.uc.uc_link = nullptr;
  const auto a = reinterpret_cast<uint64_t>(arg);
  const auto f = reinterpret_cast<uint64_t>(entry);
  makecontext(&ctx.uc, reinterpret_cast<void (*)()>(ucontext_entry), 4, unsigned(a >> 32),
              unsigned(a), unsigned(f >> 32), unsigned(f));
#else
  // Frame popped by swaa_simt_switch: [r15][r14][r13][r12][rbx][rbp][return address]; after the
  // ret, rsp = top, 16-byte aligned as the trampoline's call instruction needs.
  auto top = reinterpret_cast<uintptr_t>(stack.bottom() + stack.size()) & ~uintptr_t(15);
  auto* frame = reinterpret_cast<uint64_t*>(top) - 7;
  frame[0] = frame[1] = 0;                                // r15, r14
  frame[2] = reinterpret_cast<uint64_t>(entry);           // r13: called by the trampoline
  frame[3] = reinterpret_cast<uint64_t>(arg);             // r12: its argument
  frame[4] = frame[5] = 0;                                // rbx, rbp (0 ends frame-pointer walks)
  frame[6] = reinterpret_cast<uint64_t>(&swaa_simt_trampoline);
  ctx.sp = frame;
#endif
}

inline void context_switch(Context& from, Context& to) {
#if defined(SWAA_SIMT_UCONTEXT)
  swapcontext(&from.uc, &to.uc);
#else
  swaa_simt_switch(&from.sp, to.sp);
#endif
}

}  // namespace swaa::simt::host
