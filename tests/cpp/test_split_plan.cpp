// The CPU split-KV plan (csrc/swaa/cpu/split_plan.h): long decodes with fewer work items than
// threads are split, prefill and single-threaded runs are not, an item has at most one part
// per kMinTilesPerSplit tiles, partial rows are laid out without overlap, and the parts of a split
// item visit every key tile of the item exactly once.
#include <cstdio>
#include <vector>

#include "swaa/cpu/split_plan.h"

using namespace swaa;
using namespace swaa::cpu;

static int failures = 0;
#define CHECK(cond)                                               \
  do {                                                            \
    if (!(cond)) {                                                \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                 \
    }                                                             \
  } while (0)

// A varlen batch of (len_q, len_k) sequences, GQA 8 / 2, window 1500, 70 sinks.
struct Batch {
  std::vector<int32_t> cu_q{0}, cu_k{0};
  AttentionParams p{};
  Batch(std::vector<std::pair<int32_t, int32_t>> lens, int64_t heads_kv = 2) {
    for (auto [lq, lk] : lens) cu_q.push_back(cu_q.back() + lq), cu_k.push_back(cu_k.back() + lk);
    p.batch = int64_t(lens.size()), p.heads_q = 8, p.heads_kv = heads_kv, p.head_dim = 64;
    p.cu_seqlens_q = cu_q.data(), p.cu_seqlens_k = cu_k.data();
    p.len_q = p.len_k = 1 << 20, p.window = 1500, p.sinks = 70;
  }
};

int main() {
  {  // one request decoding over 6000 keys, 2 KV heads, two threads: 4 parts per item.
    Batch batch({{1, 6000}});
    const SplitPlan plan = plan_splits(batch.p, 2);
    CHECK(plan.splits[0] == 4);
    CHECK(plan.partial_rows == 4 * 8 * 1);
    // The parts of item (0, 0) cover its visited tiles once, in order.
    const Sequence seq(batch.p, 0);
    const TwoRanges tiles = key_blocks(seq.rule, 0, 1, kBlockN, seq.len_k);
    const int64_t visits = visited_count(tiles);
    CHECK(plan.splits[0] <= ceil_div(visits, kMinTilesPerSplit));
    std::vector<int> seen(ceil_div(seq.len_k, kBlockN), 0);
    for (int64_t s = 0; s < plan.splits[0]; ++s) {
      for (int64_t t = s * visits / plan.splits[0]; t < (s + 1) * visits / plan.splits[0]; ++t)
        ++seen[nth_visited(tiles, t)];
    }
    int64_t total = 0;
    for (int x : seen) {
      CHECK(x <= 1);
      total += x;
    }
    CHECK(total == visits);
    CHECK(seen[0] == 1 && seen.back() == 1);  // the sink tile and the query's own tile
  }
  {  // one thread: nothing to share.
    Batch batch({{1, 6000}});
    CHECK(plan_splits(batch.p, 1).splits[0] == 1);
    CHECK(plan_splits(batch.p, 1).partial_rows == 0);
  }
  {  // a prompt (64 queries) and a short decode: neither is split; a long decode beside is.
    Batch batch({{64, 6000}, {1, 100}, {2, 3000}});
    const SplitPlan plan = plan_splits(batch.p, 2);
    CHECK(plan.splits[0] == 1 && plan.splits[1] == 1);
    CHECK(plan.splits[2] > 1);
    CHECK(plan.partial_begin[2] == 0 && plan.partial_rows == plan.splits[2] * 8 * 2);
  }
  {  // enough items already (32 KV heads): no split.
    Batch batch({{1, 6000}}, 8);
    batch.p.heads_q = 64;
    CHECK(plan_splits(batch.p, 2).splits[0] == 1);
  }
  {  // paged: tiles narrow to the page size, so more tiles, capped by kMinTilesPerSplit.
    Batch batch({{1, 600}});
    std::vector<int32_t> table(64, 0);
    batch.p.block_table = table.data(), batch.p.page_size = 16, batch.p.block_table_stride = 64;
    CHECK(key_tile_width(batch.p) == 16);
    const SplitPlan plan = plan_splits(batch.p, 2);
    CHECK(plan.splits[0] == 4);  // 38 tiles of 16 keys -> at most 4 parts of >= 8 tiles
  }
  std::printf("%s\n", failures ? "split plan: FAILED" : "split plan: ok");
  return failures ? 1 : 0;
}
