"""The decode kernel's launch shape on the report's machines, from decode_plan.h itself (built and
run on the host, like the traits probe): blocks per decode step of one layer, against the tile
kernel's one block per query head, and the K/V bytes each reads from memory."""

from __future__ import annotations

from . import build
from .machines import MACHINES

# The problem: one sequence, 32 query heads sharing 8 KV heads, one new token, D=128.
BATCH, HEADS_Q, HEADS_KV, LEN_Q, HEAD_DIM = 1, 32, 8, 1, 128
KEY_LENGTHS = (32 * 1024, 128 * 1024)
# (name, window, sinks, full_from given): FA decode (every key) and a sliding layer.
RULES = (("full attention / FA decode", None, 0, True), ("window 4096 + 64 sinks", 4096, 64, False))

_PROGRAM = r"""
#include <cstdio>
#include "swaa/cuda/decode_plan.h"
using namespace swaa;
static const int64_t any_full_from = 0;  // only "given or not" matters to the plan
static void plan(long long sms, long long lk, long long window, long long sinks, int full_from) {
  AttentionParams p{};
  p.batch = %(batch)d, p.heads_q = %(heads_q)d, p.heads_kv = %(heads_kv)d, p.len_q = %(len_q)d;
  p.head_dim = %(head_dim)d, p.len_k = lk, p.window = window, p.sinks = sinks;
  p.full_from = full_from ? &any_full_from : nullptr;
  const cuda::DecodePlan r = cuda::plan_decode(p, sms);
  std::printf("{\"sms\": %%lld, \"len_k\": %%lld, \"window\": %%lld, \"sinks\": %%lld, "
              "\"full_from\": %%d, \"use_decode\": %%d, \"row_groups\": %%lld, "
              "\"key_tiles\": %%lld, \"num_splits\": %%lld, \"blocks\": %%lld, "
              "\"block_n\": %%lld},\n", sms, lk, window, sinks, full_from, int(r.use_decode),
              (long long)r.row_groups, (long long)r.key_tiles, (long long)r.num_splits,
              (long long)r.blocks, (long long)cuda::decode_block_n(p.head_dim));
}
int main() {
  std::printf("[");
%(calls)s
  std::printf("{}]\n");
}
"""


def launch_shapes(nvcc: str, out_dir: str, tile_block_rows: int) -> list[dict]:
    """`tile_block_rows`: the tile kernel's kBlockM at HEAD_DIM (the traits probe's block_m)."""
    calls = []
    for arch, machine in MACHINES.items():
        for len_k in KEY_LENGTHS:
            for _, window, sinks, full_from in RULES:
                calls.append(f"  plan({machine.sms}, {len_k}, {min(window or len_k, len_k)}, "
                             f"{sinks}, {int(full_from)});")
    source = _PROGRAM % {"batch": BATCH, "heads_q": HEADS_Q, "heads_kv": HEADS_KV,
                         "len_q": LEN_Q, "head_dim": HEAD_DIM, "calls": "\n".join(calls)}
    plans = [p for p in build.run_host_program(nvcc, out_dir, "decode_plan", source) if p]
    by_sms = {m.sms: (arch, m.name) for arch, m in MACHINES.items()}
    rows = []
    for p in plans:
        rule = next(name for name, w, s, f in RULES
                    if s == p["sinks"] and f == bool(p["full_from"]))
        # The K and V tiles one (query or KV) head's queries stream, 2-byte elements; both kernels
        # use the same key tiles (decode_block_n).
        kv_bytes = 2 * p["key_tiles"] * p["block_n"] * HEAD_DIM * 2
        per_split = -(-p["key_tiles"] // p["num_splits"])
        rows.append({
            "arch": by_sms[p["sms"]][0], "machine": by_sms[p["sms"]][1], "sms": p["sms"],
            "len_k": p["len_k"], "rule": rule, "use_decode": bool(p["use_decode"]),
            "tile_kernel_block_rows": tile_block_rows,
            "tile_kernel_blocks": -(-LEN_Q // tile_block_rows) * HEADS_Q * BATCH,
            "tile_kernel_key_tiles_per_block": p["key_tiles"],
            "decode_blocks": p["blocks"], "num_splits": p["num_splits"],
            "row_groups": p["row_groups"], "key_tiles_per_split": per_split,
            "tile_kernel_kv_bytes": HEADS_Q * BATCH * kv_bytes,
            "decode_kv_bytes": HEADS_KV * BATCH * p["row_groups"] * kv_bytes,
        })
    return rows


def markdown(rows: list[dict]) -> list[str]:
    block_rows = rows[0]["tile_kernel_block_rows"] if rows else "?"
    lines = [
        "## Decode launch shape (decode_plan.h)", "",
        f"One decode step of one layer: B={BATCH}, {HEADS_Q} query / {HEADS_KV} KV heads, "
        f"len_q={LEN_Q}, D={HEAD_DIM}. The tile kernel runs one {block_rows}-row block per query "
        "head (1 "
        "row used), each walking the live key range alone; the decode kernel packs the 4 query "
        "heads of a KV head into one block's rows and splits the key range so every SM gets 2 "
        "blocks. K/V bytes: what the blocks read from memory (L2 may serve the tile kernel's "
        "repeats of a KV head; the decode kernel has none). Computed from the rule, not measured.",
        "",
        "| machine | keys | rule | tile kernel blocks (key tiles each) | decode blocks = KV heads "
        "× splits | key tiles per split | K/V MiB read: tile kernel / decode |",
        "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['machine']} | {r['len_k'] // 1024}k | {r['rule']} | "
            f"{r['tile_kernel_blocks']} ({r['tile_kernel_key_tiles_per_block']}) | "
            f"{r['decode_blocks']} = {HEADS_KV} × {r['num_splits']} | "
            f"{r['key_tiles_per_split']} | {r['tile_kernel_kv_bytes'] / 2**20:.0f} / "
            f"{r['decode_kv_bytes'] / 2**20:.0f} |")
    return lines + [""]
