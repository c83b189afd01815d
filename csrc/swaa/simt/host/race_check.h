// RaceCheck mode: every thread gets its own copy of the block's dynamic shared memory.
//
// SWAA_DYNAMIC_SMEM hands each thread a pointer to its private copy, so its plain stores (and its
// cp.async copies) stay invisible to the other threads until the next __syncthreads() (for the
// lanes of one warp: __syncwarp()); a thread that reads another's data without a barrier reads
// stale bytes -- wrong results, as a real race may give. At each barrier every copy is compared
// with the view committed at the previous one; the bytes a thread changed are its writes, and they
// are merged and handed to everyone. Reported, per barrier interval: two threads writing one byte,
// and a byte read by one thread and written by another (read-after-write or write-after-read:
// within one interval both are races).
// What counts as an access: a read is an ldmatrix row or a simt::ld_shared; a write is a byte
// that changed (any store), a simt::st_shared (even of the value already there) or a cp.async,
// which counts both in the interval of its issue and in that of the wait_group that completes it.
// Plain C++ reads (`x = s[i]`) are not seen: kernels read shared memory through ld_shared.
// Atomics act on every copy at once. Static __shared__ arrays are shared as usual and not tracked.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "runtime.h"

namespace swaa::simt::host {

class RaceChecker {
 public:
  // `committed` is the block's real dynamic shared memory (already poisoned by the caller).
  RaceChecker(char* committed, size_t bytes, unsigned nthreads)
      : committed_(reinterpret_cast<uint8_t*>(committed)),
        bytes_(bytes),
        stride_((bytes + 127) / 128 * 128),
        nthreads_(nthreads),
        copies_(static_cast<uint8_t*>(::operator new(std::max<size_t>(stride_ * nthreads, 1),
                                                     std::align_val_t(128)))),
        start_(committed_, committed_ + bytes),
        writer_(bytes, kNone),
        reader_(bytes, kNone),
        read_site_(bytes, 0),
        dirty_((bytes + kBlock - 1) / kBlock, false) {
    for (unsigned t = 0; t < nthreads_; ++t) {
      if (bytes_ > 0) std::memcpy(copy(t), committed_, bytes_);
    }
    sites_.push_back(Site{});
  }
  ~RaceChecker() { ::operator delete(copies_, std::align_val_t(128)); }
  RaceChecker(const RaceChecker&) = delete;
  RaceChecker& operator=(const RaceChecker&) = delete;

  char* private_smem(unsigned thread) { return reinterpret_cast<char*>(copy(thread)); }

  // An ldmatrix row or an ld_shared read by `reader` from its own copy.
  void note_read(const void* p, size_t n, const Fiber& reader, const Site& site) {
    uint32_t offset;
    if (!offset_in_copy(p, n, reader.id, offset)) return;
    const uint16_t site_index = intern(site);
    for (uint32_t o = offset; o < offset + n; ++o) {
      int32_t& r = reader_[o];
      r = (r == kNone || r == int32_t(reader.id)) ? int32_t(reader.id) : kManyReaders;
      read_site_[o] = site_index;
    }
  }

  // Bytes written by `f` that the diff at the barrier may not see: an st_shared (even of the
  // value already there), or a cp.async completing at cp.async.wait_group (its bytes count as
  // written in that interval too).
  void note_written(const void* p, size_t n, const Fiber& f) {
    uint32_t offset;
    if (!offset_in_copy(p, n, f.id, offset)) return;
    for (uint32_t o = offset; o < offset + n; ++o) note_write(o, int32_t(f.id));
  }

  // Atomics act on shared memory as a whole: the new bytes go to every copy at once.
  void note_atomic(const void* p, size_t n, const Fiber& f) {
    uint32_t offset;
    if (!offset_in_copy(p, n, f.id, offset)) return;
    const uint8_t* value = copy(f.id) + offset;
    std::memcpy(committed_ + offset, value, n);
    std::memcpy(start_.data() + offset, value, n);
    for (unsigned t = 0; t < nthreads_; ++t) {
      if (t != f.id) std::memcpy(copy(t) + offset, value, n);
    }
  }

  // __syncthreads() completed: merge every thread's writes, report conflicts, start an interval.
  void commit_block(const Site& opened, const Site& closed) {
    changed_.clear();
    for (unsigned t = 0; t < nthreads_; ++t) collect_writes(t, int32_t(t));
    report_read_write_conflicts();
    for (size_t b = 0; b < dirty_.size(); ++b) {  // hand the merged bytes to everyone
      if (!dirty_[b]) continue;
      const size_t begin = b * kBlock, n = std::min(kBlock, bytes_ - begin);
      std::memcpy(start_.data() + begin, committed_ + begin, n);
      for (unsigned t = 0; t < nthreads_; ++t) std::memcpy(copy(t) + begin, committed_ + begin, n);
      dirty_[b] = false;
    }
    std::fill(writer_.begin(), writer_.end(), kNone);
    std::fill(reader_.begin(), reader_.end(), kNone);
    flush_reports(opened, closed);
  }

  // __syncwarp() completed: the warp's writes become visible (to all, conservatively); the bytes
  // stay owned by the warp, so other warps touching them in this interval still conflict.
  void commit_warp(unsigned warp) {
    changed_.clear();
    for (unsigned t = 32 * warp; t < 32 * warp + 32; ++t) collect_writes(t, warp_writer(warp));
    for (uint32_t o : changed_) {
      start_[o] = committed_[o];
      for (unsigned t = 0; t < nthreads_; ++t) copy(t)[o] = committed_[o];
    }
  }

  size_t conflict_count() const { return conflicts_; }
  const std::vector<std::string>& reports() const { return reports_; }

 private:
  static constexpr size_t kBlock = 256;  // granularity of the comparisons and the hand-out
  static constexpr int32_t kNone = -1;
  static constexpr int32_t kManyReaders = -2;
  static int32_t warp_writer(unsigned warp) { return -3 - int32_t(warp); }

  uint8_t* copy(unsigned thread) { return copies_ + size_t(thread) * stride_; }

  bool offset_in_copy(const void* p, size_t n, unsigned thread, uint32_t& offset) {
    const auto* q = static_cast<const uint8_t*>(p);
    const uint8_t* base = copy(thread);
    if (bytes_ == 0 || q < base || q + n > base + bytes_) return false;
    offset = uint32_t(q - base);
    return true;
  }

  uint16_t intern(const Site& site) {
    for (size_t i = 0; i < sites_.size(); ++i) {
      if (sites_[i] == site) return uint16_t(i);
    }
    if (sites_.size() == 65535) return 0;
    sites_.push_back(site);
    return uint16_t(sites_.size() - 1);
  }

  // The bytes where thread t's copy differs from the view at the last commit are its writes; they
  // are merged into committed_ (start_ stays the reference until the commit is done).
  void collect_writes(unsigned t, int32_t writer_code) {
    const uint8_t* mine = copy(t);
    const uint8_t* start = start_.data();
    for (size_t begin = 0; begin < bytes_; begin += kBlock) {
      const size_t n = std::min(kBlock, bytes_ - begin);
      if (std::memcmp(mine + begin, start + begin, n) == 0) continue;
      dirty_[begin / kBlock] = true;
      for (size_t i = begin; i < begin + n; ++i) {
        if (mine[i] == start[i]) continue;
        note_write(uint32_t(i), writer_code, int32_t(t));
        committed_[i] = mine[i];
        changed_.push_back(uint32_t(i));
      }
    }
  }

  static bool same_writer(int32_t a, int32_t b) {
    if (a == b) return true;
    // A thread and the warp that committed its lane's writes are one writer.
    if (a <= -3 && b >= 0) return unsigned(-3 - a) == unsigned(b) / 32;
    if (b <= -3 && a >= 0) return unsigned(-3 - b) == unsigned(a) / 32;
    return false;
  }

  void note_write(uint32_t o, int32_t writer_code, int32_t thread = kNone) {
    const int32_t w = writer_[o];
    if (w != kNone && !same_writer(w, writer_code) &&
        !(thread >= 0 && same_writer(w, thread))) {
      add_report("write-write", o, "written by " + who(w) + " and by " + who(writer_code));
    }
    writer_[o] = writer_code;
  }

  static bool conflicts(int32_t writer, int32_t reader) {
    if (writer == kNone || reader == kNone) return false;
    if (reader == kManyReaders) return true;
    return !same_writer(writer, reader);
  }

  void report_read_write_conflicts() {
    for (uint32_t o = 0; o < bytes_; ++o) {
      if (!conflicts(writer_[o], reader_[o])) continue;
      add_report("read-write", o,
                 "read by " + who(reader_[o]) + " with " + to_string(sites_[read_site_[o]]) +
                     " and written by " + who(writer_[o]));
    }
  }

  static std::string who(int32_t code) {
    if (code >= 0) {
      return "thread " + std::to_string(code) + " (warp " + std::to_string(code / 32) + ")";
    }
    if (code == kManyReaders) return "several threads";
    return "the lanes of warp " + std::to_string(-3 - code);
  }

  void add_report(const char* kind, uint32_t offset, const std::string& what) {
    ++conflicts_;
    // One line per (kind, accesses) is enough to find the bug.
    const std::string key = std::string(kind) + what;
    if (pending_.size() + reports_.size() >= 8 ||
        std::find(keys_.begin(), keys_.end(), key) != keys_.end()) {
      return;
    }
    keys_.push_back(key);
    pending_.push_back(std::string(kind) + " race on dynamic shared memory byte " +
                       std::to_string(offset) + ": " + what);
  }

  void flush_reports(const Site& opened, const Site& closed) {
    for (auto& r : pending_) {
      reports_.push_back(r + ", with no barrier between (interval from " + to_string(opened) +
                         " to " + to_string(closed) + ")");
    }
    pending_.clear();
  }

  uint8_t* committed_;
  size_t bytes_;
  size_t stride_;
  unsigned nthreads_;
  uint8_t* copies_;
  std::vector<uint8_t> start_;  // the committed view at the last commit
  std::vector<int32_t> writer_;
  std::vector<int32_t> reader_;
  std::vector<uint16_t> read_site_;
  std::vector<Site> sites_;
  std::vector<uint32_t> changed_;
  std::vector<bool> dirty_;  // blocks of kBlock bytes that someone wrote since the last commit
  size_t conflicts_ = 0;
  std::vector<std::string> pending_;
  std::vector<std::string> reports_;
  std::vector<std::string> keys_;
};

}  // namespace swaa::simt::host
