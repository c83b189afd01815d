"""Side-by-side GPU timing of sink + sliding-window attention, forward, forward + backward and
decode (one query over the shape's keys: the split-KV decode kernel):
swaa_ext's CUDA kernels vs SDPA (full causal, and with the dense SWAA mask where it fits) vs
compiled FlexAttention with the same rule as a block mask, and flash-attn's sliding window (no
sinks: it has none) when flash-attn is installed. Prints a table and writes JSON. Exits cleanly,
saying why, without a GPU.

    python -m bench.gpu_kernels [--quick] [--modes fwd fwd+bwd decode] [--dtype bf16] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import importlib.util
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
QUICK_SHAPES = [  # `make gpu-check`: one shape per head dim, a minute or two with compilation
    Shape(1, 32, 8, 4096, 128, 1024, 64),
    Shape(2, 16, 4, 4096, 64, 512, 64),
]
DENSE_MASK_MAX_LEN = 16384  # the (L, L) bool mask of SDPA costs L^2 bytes
METHODS = ["swaa_ext", "flex_attention", "flash_attn_window", "sdpa_full_causal", "sdpa_dense_mask"]

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (B, H, L, D)


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


def contenders(s: Shape, len_q: int) -> dict[str, Attention | str]:
    """Each method's attention on (B, H, L, D) tensors with len_q queries (bottom-right aligned
    to the shape's keys), or why it is not run for this shape."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    offset = s.length - len_q

    def mask_mod(b, h, i, j):
        return (j <= i + offset) & ((i + offset - j < s.window) | (j < s.sinks))

    block_mask = create_block_mask(mask_mod, None, None, len_q, s.length, device="cuda")
    flex = torch.compile(flex_attention)
    methods: dict[str, Attention | str] = {
        "swaa_ext": lambda q, k, v: swaa_ext.sliding_attention(q, k, v, s.window, s.sinks),
        "flex_attention": lambda q, k, v: flex(q, k, v, block_mask=block_mask, enable_gqa=True),
        # Decode: one query sees the whole cache (SDPA's is_causal is top-left aligned).
        "sdpa_full_causal": lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, is_causal=len_q > 1, enable_gqa=True),
    }
    if importlib.util.find_spec("flash_attn") is None:
        methods["flash_attn_window"] = "flash-attn not installed"
    else:
        from flash_attn import flash_attn_func

        # (B, L, H, D) layout; the window counts W keys including the query: left = W - 1.
        methods["flash_attn_window"] = lambda q, k, v: flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True,
            window_size=(s.window - 1, 0)).transpose(1, 2)
    if s.length <= DENSE_MASK_MAX_LEN:
        mask = swaa_ext.reference.visible(len_q, s.length, s.window, s.sinks, device="cuda")
        methods["sdpa_dense_mask"] = lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=True)
    else:
        methods["sdpa_dense_mask"] = f"dense mask over {DENSE_MASK_MAX_LEN} keys"
    return methods


def bench_shape(s: Shape, mode: str, dtype: torch.dtype) -> dict[str, float | str]:
    """Median ms per method, or the reason it did not run (skipped, or the error it raised)."""
    def rand(heads: int, length: int) -> torch.Tensor:
        return torch.randn(s.batch, heads, length, s.head_dim, device="cuda", dtype=dtype,
                           requires_grad=mode == "fwd+bwd")

    len_q = 1 if mode == "decode" else s.length
    q, k, v = rand(s.heads_q, len_q), rand(s.heads_kv, s.length), rand(s.heads_kv, s.length)
    grad = torch.randn_like(q)
    results: dict[str, float | str] = {}
    for name, attn in contenders(s, len_q).items():
        if isinstance(attn, str):
            results[name] = attn
            continue

        def step(attn=attn) -> None:
            if mode != "fwd+bwd":
                with torch.no_grad():
                    attn(q, k, v)
            else:
                for t in (q, k, v):
                    t.grad = None
                attn(q, k, v).backward(grad)

        try:
            results[name] = time_ms(step)
        except Exception as e:  # noqa: BLE001 -- a contender's failure is a result, not a crash
            results[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
    return results


def print_table(rows: list[dict], dtype: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{dtype}, {torch.cuda.get_device_name()} (median ms)")
    for col in ["mode", "B,Hq/Hkv,L,D", "window+sinks", *METHODS, "flex / swaa"]:
        table.add_column(col, justify="right")
    for row in rows:
        s, ms = row["shape"], row["ms"]
        fmt = lambda x: f"{x:.3f}" if isinstance(x, float) else "-"  # noqa: E731
        ratio = (f"{ms['flex_attention'] / ms['swaa_ext']:.2f}x"
                 if all(isinstance(ms[m], float) for m in ("swaa_ext", "flex_attention")) else "-")
        table.add_row(row["mode"],
                      f"{s['batch']},{s['heads_q']}/{s['heads_kv']},{s['length']},{s['head_dim']}",
                      f"{s['window']}+{s['sinks']}", *(fmt(ms[m]) for m in METHODS), ratio)
    Console().print(table)
    for row in rows:  # why a cell is "-"
        for method, value in row["ms"].items():
            if isinstance(value, str):
                print(f"  {row['mode']} L={row['shape']['length']} {method}: {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes (make gpu-check)")
    parser.add_argument("--modes", nargs="+", choices=("fwd", "fwd+bwd", "decode"),
                        default=["fwd", "fwd+bwd", "decode"])
    parser.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_kernels.json"))
    args = parser.parse_args()
    reason = why_no_gpu()
    if reason is not None:
        print(f"bench/gpu_kernels.py: skipped: {reason}")
        return 0

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    rows = [{"mode": mode, "shape": asdict(s), "ms": bench_shape(s, mode, dtype)}
            for mode in args.modes for s in (QUICK_SHAPES if args.quick else SHAPES)]
    print_table(rows, args.dtype)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(), "dtype": args.dtype,
            "torch": torch.__version__, "capability": torch.cuda.get_device_capability()}
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
