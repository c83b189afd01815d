// RaceCheck mode: shadow state for the block's dynamic shared memory.
//
// Plain loads and stores cannot be intercepted, so writes are found by difference: after each run
// of a fiber (between two of its scheduling points) the shared buffer is compared with the view
// committed at the last barrier; the bytes that differ are that thread's writes. They are recorded
// as the thread's private writes and undone, so no other thread sees them before the next
// __syncthreads() (or, for the lanes of one warp, __syncwarp()) -- a thread that reads another's
// data without a barrier reads stale bytes (wrong results, like a real race). Reads through the
// layer's ldmatrix are tracked exactly. Reported: two threads writing one byte in one interval,
// an ldmatrix read of a byte another thread wrote in the interval (read-after-write), and a
// write to a byte another thread read by ldmatrix in the interval (write-after-read). A cp.async
// counts as a write both where it is issued and where its wait_group completes it. Atomics are
// visible at once. Static __shared__ arrays are not tracked (the layer cannot see where they are).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "runtime.h"

namespace swaa::simt::host {

class RaceChecker {
 public:
  RaceChecker(char* base, size_t bytes)
      : base_(reinterpret_cast<uint8_t*>(base)),
        bytes_(bytes),
        committed_(base_, base_ + bytes),
        writer_(bytes, kNone),
        reader_(bytes, kNone) {}

  bool contains(const void* p, size_t n) const {
    auto* q = static_cast<const uint8_t*>(p);
    return bytes_ > 0 && q >= base_ && q + n <= base_ + bytes_;
  }

  // The fiber about to run sees the committed view plus its own private writes.
  void before_run(const Fiber& f) {
    for (auto [offset, value] : f.private_writes) base_[offset] = value;
  }

  // Collects the fiber's writes since the last commit and hides them from everyone else. This scan
  // runs at every switch, so it skips equal 256-byte blocks with one memcmp each.
  void after_run(Fiber& f) {
    f.private_writes.clear();
    constexpr size_t kBlock = 256;
    for (size_t begin = 0; begin < bytes_; begin += kBlock) {
      const size_t n = std::min(kBlock, bytes_ - begin);
      if (std::memcmp(base_ + begin, committed_.data() + begin, n) == 0) continue;
      for (size_t word = begin; word < begin + n; word += 8) {
        const size_t end = std::min(word + 8, begin + n);
        if (end - word == 8 && load64(base_ + word) == load64(committed_.data() + word)) continue;
        for (size_t i = word; i < end; ++i) {
          if (base_[i] == committed_[i]) continue;
          f.private_writes.emplace_back(uint32_t(i), base_[i]);
          if (writer_[i] != int32_t(f.id)) note_write(uint32_t(i), f);  // else checked before
          base_[i] = committed_[i];
        }
      }
    }
  }

  void note_read(const void* p, size_t n, const Fiber& reader, const Site& site) {
    if (!contains(p, n)) return;
    const auto offset = uint32_t(static_cast<const uint8_t*>(p) - base_);
    for (uint32_t o = offset; o < offset + n; ++o) {
      const int32_t w = writer_[o];
      if (conflicts(w, reader)) {
        report("read-after-write", o, "written by " + who(w),
               "read by " + who(reader.id) + " with " + to_string(site));
      }
      int32_t& r = reader_[o];
      r = (r == kNone || r == int32_t(reader.id)) ? int32_t(reader.id) : kManyReaders;
    }
  }

  // A cp.async completing at cp.async.wait_group: its bytes count as written in this interval too.
  void note_async_write(const void* p, size_t n, const Fiber& f) {
    if (!contains(p, n)) return;
    const auto offset = uint32_t(static_cast<const uint8_t*>(p) - base_);
    for (uint32_t o = offset; o < offset + n; ++o) note_write(o, f);
  }

  // Atomics are visible to every thread at once.
  void note_atomic(const void* p, size_t n) {
    if (!contains(p, n)) return;
    const size_t offset = static_cast<const uint8_t*>(p) - base_;
    std::memcpy(committed_.data() + offset, base_ + offset, n);
  }

  // __syncthreads(): every private write becomes visible; a new interval starts.
  void commit_block(const std::vector<Fiber*>& fibers) {
    for (Fiber* f : fibers) {
      for (auto [offset, value] : f->private_writes) base_[offset] = value;
      f->private_writes.clear();
    }
    if (bytes_ > 0) std::memcpy(committed_.data(), base_, bytes_);
    std::fill(writer_.begin(), writer_.end(), kNone);
    std::fill(reader_.begin(), reader_.end(), kNone);
  }

  // __syncwarp(): the warp's private writes become visible (to its lanes, and -- conservatively --
  // to all); the bytes stay owned by the warp, so other warps reading them still conflict.
  void commit_warp(Fiber* const* lanes) {
    for (int l = 0; l < 32; ++l) {
      Fiber& f = *lanes[l];
      for (auto [offset, value] : f.private_writes) {
        base_[offset] = value;
        committed_[offset] = value;
        writer_[offset] = warp_writer(f.warp);
      }
      f.private_writes.clear();
    }
  }

  size_t conflict_count() const { return conflicts_; }
  const std::vector<std::string>& reports() const { return reports_; }

 private:
  static uint64_t load64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }

  static constexpr int32_t kNone = -1;
  static constexpr int32_t kManyReaders = -2;
  static int32_t warp_writer(unsigned warp) { return -3 - int32_t(warp); }

  // Does writer code `w` conflict with an access by `f`?
  static bool conflicts(int32_t w, const Fiber& f) {
    if (w >= 0) return w != int32_t(f.id);
    if (w <= -3) return unsigned(-3 - w) != f.warp;
    return false;
  }

  void note_write(uint32_t o, const Fiber& f) {
    const int32_t w = writer_[o];
    if (conflicts(w, f)) report("write-write", o, "written by " + who(w), "by " + between(f));
    const int32_t r = reader_[o];
    if (r == kManyReaders || (r >= 0 && r != int32_t(f.id))) {
      report("write-after-read", o, "read by " + who(r), "written by " + between(f));
    }
    writer_[o] = int32_t(f.id);
  }

  static std::string between(const Fiber& f) {
    return who(int32_t(f.id)) + " between " + to_string(f.resumed_at) + " and " + to_string(f.site);
  }

  static std::string who(int32_t code) {
    if (code >= 0) return "thread " + std::to_string(code) + " (warp " + std::to_string(code / 32) + ")";
    if (code == kManyReaders) return "several threads";
    return "warp " + std::to_string(-3 - code);
  }

  void report(const char* kind, uint32_t offset, const std::string& first,
              const std::string& second) {
    ++conflicts_;
    // One line per (kind, first access) is enough to find the bug.
    const std::string key = std::string(kind) + first;
    if (reports_.size() >= 8 || std::find(keys_.begin(), keys_.end(), key) != keys_.end()) return;
    keys_.push_back(key);
    reports_.push_back(std::string(kind) + " race on dynamic shared memory byte " +
                       std::to_string(offset) + ", no barrier between: " + first + ", then " +
                       second);
  }

  uint8_t* base_;
  size_t bytes_;
  std::vector<uint8_t> committed_;
  std::vector<int32_t> writer_;
  std::vector<int32_t> reader_;
  size_t conflicts_ = 0;
  std::vector<std::string> reports_;
  std::vector<std::string> keys_;
};

}  // namespace swaa::simt::host
