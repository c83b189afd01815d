"""Learned sink logits (gpt-oss's `sinks`) on the CPU: swaa_ext with `sink_logits=` against
gpt-oss's own eager attention (transformers' `GptOss` eager formula: masked scores, the sink
column, softmax) and compiled FlexAttention (forward only: no CPU backward), and swaa_ext without
sink logits (what the epilogue costs). Interleaved: each repetition calls every method once, in
a rotated order; reported are medians, per-repetition ratios to swaa_ext with sink logits (median
and range), and each method's max |difference| from it.

    python -m bench.sink_logits           # gpt-oss-like heads, L = 1k..4k (minutes)
    python -m bench.sink_logits --quick   # seconds

Prints a table, writes JSON and a PNG (bench/results/sink_logits[_quick].*).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: E402
from tqdm import tqdm  # noqa: E402

import swaa_ext  # noqa: E402
from swaa_ext import reference  # noqa: E402

from .report import write_json  # noqa: E402
from .timing import machine_info  # noqa: E402

METHODS = {"swaa_sinks": "swaa_ext, sink_logits", "swaa_plain": "swaa_ext, no sink logits",
           "eager_sinks": "gpt-oss eager (transformers)",
           "flex_sinks": "FlexAttention, compiled (sink key)"}
_compiled_flex = torch.compile(flex_attention, dynamic=False)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short sequences, seconds")
    ap.add_argument("--lengths", type=int, nargs="+")
    ap.add_argument("--windows", type=int, nargs="+", default=[128, 0],
                    help="sliding windows (gpt-oss: 128); 0 = full causal (its other layers)")
    ap.add_argument("--heads", type=int, nargs=2, default=[16, 2], metavar=("HQ", "HKV"))
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.lengths is None:
        args.lengths = [256, 512] if args.quick else [1024, 2048, 4096]
    if args.quick:
        args.repeats = min(args.repeats, 3)
    if args.out is None:
        args.out = Path("bench/results") / ("sink_logits_quick" if args.quick else "sink_logits")
    return args


class _GptOssModule(nn.Module):
    """What gpt-oss's eager attention reads from its module: the KV groups and the sinks."""

    def __init__(self, groups: int, sinks: torch.Tensor) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.sinks = nn.Parameter(sinks)
        self.training = False


def build(method: str, length: int, window: int | None, sinks: torch.Tensor, groups: int,
          scale: float):
    """The method as a callable (q, k, v) -> out (B, Hq, L, D)."""
    if method == "swaa_sinks":
        return lambda q, k, v: swaa_ext.sliding_attention(q, k, v, window, sink_logits=sinks)
    if method == "swaa_plain":
        return lambda q, k, v: swaa_ext.sliding_attention(q, k, v, window)
    if method == "eager_sinks":
        from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

        module = _GptOssModule(groups, sinks)
        visible = reference.visible(length, length, window)
        additive = torch.zeros(length, length).masked_fill_(~visible[0, 0], float("-inf"))
        return lambda q, k, v: eager_attention_forward(module, q, k, v, additive[None, None],
                                                       scale)[0].transpose(1, 2)

    # Compiled FlexAttention on the CPU has no LSE output (inference only), so the sink is what
    # it is by definition: key L, seen by every query, scored t_h by a score_mod, value 0.
    def rule(b, h, q_idx, kv_idx):
        return (kv_idx == length) | ((kv_idx <= q_idx) & (q_idx - kv_idx < (window or length)))

    def sink_score(score, b, h, q_idx, kv_idx):
        return torch.where(kv_idx == length, sinks[h], score)

    mask = create_block_mask(rule, None, None, length, length + 1, device="cpu", _compile=True)

    def flex(q, k, v):
        pad = k.new_zeros(k.shape[0], k.shape[1], 1, k.shape[3])
        return _compiled_flex(q, torch.cat([k, pad], 2), torch.cat([v, pad], 2),
                              score_mod=sink_score, block_mask=mask, enable_gqa=True)
    return flex


def run_case(mode: str, length: int, window: int | None, args, bar) -> list[dict]:
    hq, hkv = args.heads
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, hq, length, args.head_dim, generator=gen)
    k = torch.randn(1, hkv, length, args.head_dim, generator=gen)
    v = torch.randn(1, hkv, length, args.head_dim, generator=gen)
    sinks = torch.randn(hq, generator=gen)
    scale = 1 / math.sqrt(args.head_dim)
    methods = [m for m in METHODS if not (mode == "fwd+bwd" and m == "flex_sinks")]
    calls, outs = {}, {}
    for name in methods:
        attn = build(name, length, window, sinks, hq // hkv, scale)
        if mode == "fwd":
            def call(attn=attn, name=name):
                with torch.no_grad():
                    outs[name] = attn(q, k, v)
        else:
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]
            grad = torch.randn(q.shape, generator=gen)

            def call(attn=attn, leaves=leaves, grad=grad):
                attn(*leaves).backward(grad)
        call()  # warm-up (compiles FlexAttention)
        calls[name] = call
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.repeats):  # interleaved, the order rotated each repetition
        for name in methods[r % len(methods):] + methods[:r % len(methods)]:
            bar.set_postfix_str(f"{mode} L={length} w={window} {name}", refresh=False)
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    rows = []
    for name in methods:
        ratios = [a / b for a, b in zip(times[name], times["swaa_sinks"])]
        diff = None
        if mode == "fwd" and name != "swaa_plain":
            diff = (outs[name].float() - outs["swaa_sinks"].float()).abs().max().item()
        rows.append(dict(method=name, mode=mode, len_k=length, window=window or 0,
                         heads=[hq, hkv], head_dim=args.head_dim, times_s=times[name],
                         median_s=statistics.median(times[name]),
                         ratio_median=statistics.median(ratios),
                         ratio_range=[min(ratios), max(ratios)], max_abs_diff=diff))
    return rows


def print_table(rows: list[dict], info: dict) -> None:
    table = Table(title=f"learned sink logits, {info['cpu']}, {info['torch_threads']} threads; "
                        "ratio = time / swaa_ext with sink logits (per repetition: median, range)")
    for col in ("mode", "L", "window", "method", "median ms", "ratio", "range", "max |diff|"):
        table.add_column(col, justify="left" if col in ("mode", "method") else "right")
    for r in rows:
        diff = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        table.add_row(r["mode"], str(r["len_k"]), str(r["window"] or "full"),
                      r["method"], f"{r['median_s'] * 1e3:.1f}",
                      f"{r['ratio_median']:.2f}x",
                      f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}", diff)
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print("; ".join(f"{name}: {label}" for name, label in METHODS.items()))


def plot(rows: list[dict], path: Path) -> None:
    modes = sorted({r["mode"] for r in rows})
    windows = sorted({r["window"] for r in rows})
    fig, axes = plt.subplots(len(modes), len(windows), figsize=(5 * len(windows), 4 * len(modes)),
                             squeeze=False)
    for i, mode in enumerate(modes):
        for j, window in enumerate(windows):
            ax = axes[i][j]
            for method, label in METHODS.items():
                pts = sorted((r["len_k"], r["median_s"]) for r in rows
                             if (r["method"], r["mode"], r["window"]) == (method, mode, window))
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=label)
            ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="seconds",
                   title=f"{mode}, window {window or 'full'}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    cases = [(m, n, w or None) for m in args.modes for w in args.windows for n in args.lengths]
    rows = []
    with tqdm(cases, desc="sink logits") as bar:
        for mode, length, window in bar:
            rows += run_case(mode, length, window, args, bar)
    info = machine_info()
    print_table(rows, info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json({"machine": info, "settings": {k: str(v) for k, v in vars(args).items()},
                "rows": rows}, args.out.with_suffix(".json"))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and .png")


if __name__ == "__main__":
    main()
