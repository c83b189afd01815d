"""The paged CPU op against vLLM's own CPU attention kernel, one attention call at a time: the
shapes of a serving step (decode, a 512-token prompt chunk, a whole prompt) over one layer's
paged cache, side by side in one process, interleaved and repeated.

    .venv-vllm/bin/python -m bench.paged_cpu                 # bf16 and fp32, 2000 and 8000 keys
    .venv-vllm/bin/python -m bench.paged_cpu --quick         # bf16, 2000 keys, few repetitions

Methods (SmolLM2-135M's attention: 9 query / 3 KV heads, head dim 64; window = keys / 8, 64
sinks; 32-token pages in vLLM's CPU cache):
    vllm_full      vLLM's cpu_attention_with_kv_cache, full causal attention
    vllm_sliding   the same with its sliding window (no sinks)
    window_rows    swaa_ext.sliding_attention_paged, window + sinks, pages in rows
    window_amx     the same on pages in the AMX layout (bf16 on a CPU with AMX; vLLM's own layout
                   there, kv_layout="amx")
    fa_rows        full attention through the same op (full_from = 0: what FA decode's queries see)
    fa_amx         the same, AMX layout

Every repetition times each method once, in a rotating order; the table gives the median time and
the median [min-max] of the per-repetition ratios to vllm_full. Needs vLLM (the .venv-vllm
environment of `make bench-vllm`) for its rows; without it, the swaa_ext rows alone, as ratios to
fa_rows. Prints a table, writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

# In the vLLM environment (`make bench-paged-cpu`) the checkout's swaa_ext has no extension built
# against that torch: take the checkout off the path so the wheel installed there is imported.
if importlib.util.find_spec("vllm") is not None:
    _ROOT = Path(__file__).resolve().parents[1]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tqdm import tqdm  # noqa: E402

import swaa_ext  # noqa: E402

from .report import write_json  # noqa: E402
from .timing import machine_info  # noqa: E402

HEADS_Q, HEADS_KV, HEAD_DIM, PAGE, SINKS = 9, 3, 64, 32, 64
SHAPES = {"decode": 1, "chunk": 512, "prompt": None}  # queries per request (None: every key)
REQUESTS = {"decode": 4, "chunk": 4, "prompt": 1}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="bf16, 2000 keys, 5 repetitions")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"],
                    choices=["bfloat16", "float32"])
    ap.add_argument("--keys", nargs="+", type=int, default=[2000, 8000])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--reps", type=int, default=15, help="repetitions (prompt shapes: a third)")
    ap.add_argument("--out", default="docs/bench/paged_cpu", help="JSON and PNG path stem")
    args = ap.parse_args()
    if args.quick:
        args.dtypes, args.keys, args.reps = ["bfloat16"], [2000], 5
    return args


class Problem:
    """One layer's paged cache (random, every page written) and one step's queries."""

    def __init__(self, dtype: torch.dtype, keys: int, shape: str) -> None:
        generator = torch.Generator().manual_seed(0)
        self.requests = REQUESTS[shape]
        self.keys, self.window = keys, keys // 8
        self.queries = SHAPES[shape] or keys
        pages = -(-keys // PAGE)
        total = self.requests * pages
        cache = torch.randn(total, HEADS_KV, 2 * PAGE, HEAD_DIM, generator=generator).to(dtype)
        self.k_rows, self.v_rows = cache.chunk(2, dim=2)  # vLLM's CPU cache, rows
        self.block_table = torch.randperm(total, generator=generator).int().view(self.requests,
                                                                                 pages)
        self.seq_lens = torch.full((self.requests,), keys, dtype=torch.int32)
        self.cu_q = torch.arange(self.requests + 1, dtype=torch.int32) * self.queries
        self.q = torch.randn(self.requests * self.queries, HEADS_Q, HEAD_DIM,
                             generator=generator).to(dtype)
        self.out = torch.empty_like(self.q)
        self.scale = HEAD_DIM ** -0.5
        self.everything = torch.zeros(self.requests, dtype=torch.int64)  # full_from = 0
        self.amx = swaa_ext.amx_kv_layout_fits(dtype, HEAD_DIM, PAGE)
        if self.amx:  # the same keys and values, stored in the AMX layout
            self.k_amx = torch.empty(total, HEADS_KV, PAGE, HEAD_DIM, dtype=dtype)
            self.v_amx = torch.empty_like(self.k_amx)
            slots = torch.arange(total * PAGE)
            key = self.k_rows.permute(0, 2, 1, 3).reshape(-1, HEADS_KV, HEAD_DIM)
            value = self.v_rows.permute(0, 2, 1, 3).reshape(-1, HEADS_KV, HEAD_DIM)
            swaa_ext.write_paged_cache(key, value, self.k_amx, self.v_amx, slots, "amx")

    def ours(self, layout: str, full: bool):
        k, v = (self.k_amx, self.v_amx) if layout == "amx" else (self.k_rows, self.v_rows)
        full_from = self.everything if full else None
        return lambda: torch.ops.swaa_ext.fwd_paged_out(
            self.q, k, v, self.block_table, self.cu_q, self.seq_lens, self.queries, self.keys,
            self.window, SINKS, full_from, self.scale, self.out, None, layout)

    def vllm(self, sliding: bool):
        from vllm import _custom_ops as ops

        isa = "amx" if self.amx else "vec"
        window = self.window if sliding else -1
        metadata = ops.cpu_attn_get_scheduler_metadata(
            num_reqs=self.requests, num_heads=HEADS_Q, num_kv_heads=HEADS_KV, head_dim=HEAD_DIM,
            seq_lens=self.seq_lens, dtype=self.q.dtype, query_start_loc=self.cu_q, causal=True,
            sliding_window_size=window, isa=isa, enable_kv_split=True, dynamic_causal=None,
            kv_cache_dtype="auto")
        # vLLM reads an amx-isa cache in its AMX layout: hand it ours, which is byte-equal
        # (tests/vllm_plugin: test_amx_cache_write_equals_vllms_amx_write).
        k, v = (self.k_amx, self.v_amx) if self.amx else (self.k_rows, self.v_rows)
        return lambda: ops.cpu_attention_with_kv_cache(
            query=self.q, key_cache=k, value_cache=v, output=self.out, query_start_loc=self.cu_q,
            seq_lens=self.seq_lens, scale=self.scale, causal=True, alibi_slopes=None,
            sliding_window=window, block_table=self.block_table, softcap=0.0,
            scheduler_metadata=metadata, s_aux=None, dynamic_causal=None, k_scale=1.0,
            v_scale=1.0, kv_cache_dtype="auto")


def methods(problem: Problem, with_vllm: bool) -> dict:
    out = {}
    if with_vllm:
        out["vllm_full"] = problem.vllm(sliding=False)
        out["vllm_sliding"] = problem.vllm(sliding=True)
    out["window_rows"] = problem.ours("rows", full=False)
    if problem.amx:
        out["window_amx"] = problem.ours("amx", full=False)
    out["fa_rows"] = problem.ours("rows", full=True)
    if problem.amx:
        out["fa_amx"] = problem.ours("amx", full=True)
    return out


def measure(calls: dict, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each method, `reps` interleaved repetitions in a rotating order."""
    for fn in calls.values():  # warm-up (scratch, thread pools)
        fn()
    times = {name: [] for name in calls}
    names = list(calls)
    for r in range(reps):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    try:
        import vllm  # noqa: F401
        with_vllm = True
        torch._C._cpu._init_amx()  # vLLM's AMX kernel needs the tile permission, as its worker asks
    except ImportError:
        with_vllm = False
    base = "vllm_full" if with_vllm else "fa_rows"
    rows = []
    grid = [(d, n, s) for d in args.dtypes for n in args.keys for s in args.shapes]
    for dtype_name, keys, shape in tqdm(grid, desc="problems"):
        problem = Problem(getattr(torch, dtype_name), keys, shape)
        reps = args.reps if shape != "prompt" else max(3, args.reps // 3)
        times = measure(methods(problem, with_vllm), reps)
        for name, seconds in times.items():
            ratios = sorted(b / t for b, t in zip(times[base], seconds))
            rows.append({"dtype": dtype_name, "keys": keys, "shape": shape,
                         "requests": problem.requests, "queries": problem.queries,
                         "window": problem.window, "method": name,
                         "median_ms": statistics.median(seconds) * 1e3,
                         "ratio": statistics.median(ratios), "ratio_min": ratios[0],
                         "ratio_max": ratios[-1], "reps": reps})
    print_table(rows, base)
    run = {"machine": machine_info(), "base": base, "heads": [HEADS_Q, HEADS_KV],
           "head_dim": HEAD_DIM, "page_size": PAGE, "sinks": SINKS, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(run, out.with_suffix(".json"))
    plot(rows, base, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def print_table(rows: list[dict], base: str) -> None:
    table = Table(title=f"paged attention, one call (ms, and speed as x {base}: median [min-max] "
                        "of the per-repetition ratios)")
    for column in ("dtype", "keys", "shape", "method", "ms", f"x {base}"):
        table.add_column(column, justify="right" if column in ("keys", "ms") else "left")
    for r in rows:
        table.add_row(r["dtype"], str(r["keys"]),
                      f"{r['shape']} ({r['requests']} x {r['queries']} q)", r["method"],
                      f"{r['median_ms']:.3f}",
                      f"{r['ratio']:.2f}x [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]")
    Console().print(table)


def plot(rows: list[dict], base: str, path: Path) -> None:
    problems = sorted({(r["dtype"], r["keys"], r["shape"]) for r in rows})
    names = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(problems)), 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [next((r["ratio"] for r in rows if (r["dtype"], r["keys"], r["shape"]) == p
                        and r["method"] == name), 0) for p in problems]
        ax.bar([j + i * width for j in range(len(problems))], values, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(problems))])
    ax.set_xticklabels([f"{d}\n{n} keys\n{s}" for d, n, s in problems], fontsize=8)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_ylabel(f"speed, x {base} (median of repetitions)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
