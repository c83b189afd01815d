"""Side-by-side GPU timing of the sink + sliding-window forward: swaa_ext's CUDA kernel vs SDPA
(full causal, and with the dense SWAA mask where it fits) vs compiled FlexAttention with the same
rule as a block mask. Prints a table and writes JSON. Exits cleanly, saying why, without a GPU.

    python -m bench.gpu_kernels [--dtype bf16] [--out bench/results/gpu_kernels.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import swaa_ext


@dataclass(frozen=True)
class Shape:
    batch: int
    heads_q: int
    heads_kv: int
    length: int
    head_dim: int
    window: int
    sinks: int


SHAPES = [
    Shape(1, 32, 8, 4096, 128, 1024, 64),
    Shape(1, 32, 8, 16384, 128, 2048, 64),
    Shape(1, 32, 8, 32768, 128, 2048, 64),
    Shape(4, 16, 4, 8192, 64, 1024, 64),
]
DENSE_MASK_MAX_LEN = 16384  # the (L, L) bool mask of SDPA costs L^2 bytes


def why_no_gpu() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("swaa_ext::fwd", "CUDA"):
        return "swaa_ext._C was built without the CUDA kernels (nvcc / CUDA torch missing)"
    return None


def time_ms(fn: Callable[[], object], warmup: int = 3, iters: int = 10) -> float:
    """Median of `iters` CUDA-event timings, after `warmup` runs (compilation included there)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_shape(s: Shape, dtype: torch.dtype) -> dict[str, float | None]:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    q = torch.randn(s.batch, s.heads_q, s.length, s.head_dim, device="cuda", dtype=dtype)
    k = torch.randn(s.batch, s.heads_kv, s.length, s.head_dim, device="cuda", dtype=dtype)
    v = torch.randn_like(k)

    def mask_mod(b, h, i, j):
        return (j <= i) & ((i - j < s.window) | (j < s.sinks))

    block_mask = create_block_mask(mask_mod, None, None, s.length, s.length, device="cuda")
    flex = torch.compile(flex_attention)
    results: dict[str, float | None] = {
        "swaa_ext": time_ms(lambda: swaa_ext.sliding_attention(q, k, v, s.window, s.sinks)),
        "sdpa_full_causal": time_ms(
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)),
        "flex_attention": time_ms(lambda: flex(q, k, v, block_mask=block_mask, enable_gqa=True)),
        "sdpa_dense_mask": None,
    }
    if s.length <= DENSE_MASK_MAX_LEN:
        mask = swaa_ext.reference.visible(s.length, s.length, s.window, s.sinks, device="cuda")
        results["sdpa_dense_mask"] = time_ms(
            lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_kernels.json"))
    args = parser.parse_args()
    reason = why_no_gpu()
    if reason is not None:
        print(f"bench/gpu_kernels.py: skipped: {reason}")
        return 0

    from rich.console import Console
    from rich.table import Table

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    rows = []
    for s in SHAPES:
        rows.append({"shape": asdict(s), "ms": bench_shape(s, dtype)})
    table = Table(title=f"forward, {args.dtype}, {torch.cuda.get_device_name()} (median ms)")
    for col in ("B,Hq/Hkv,L,D", "window+sinks", "swaa_ext", "flex", "sdpa causal", "sdpa mask",
                "flex / swaa"):
        table.add_column(col, justify="right")
    for row in rows:
        s, ms = row["shape"], row["ms"]
        fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        table.add_row(f"{s['batch']},{s['heads_q']}/{s['heads_kv']},{s['length']},{s['head_dim']}",
                      f"{s['window']}+{s['sinks']}", fmt(ms["swaa_ext"]), fmt(ms["flex_attention"]),
                      fmt(ms["sdpa_full_causal"]), fmt(ms["sdpa_dense_mask"]),
                      f"{ms['flex_attention'] / ms['swaa_ext']:.2f}x")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(), "dtype": args.dtype,
            "torch": torch.__version__}
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
