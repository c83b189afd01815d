"""Ragged-batch benchmark: one `sliding_attention_varlen` call against a per-sequence loop of
`sliding_attention` and against SDPA on the padded batch with a dense mask, side by side.

    python -m bench.varlen            # 8 sequences of 512..8192 tokens (a few minutes)
    python -m bench.varlen --quick    # 8 sequences of 64..1024 tokens (seconds)

The padded batch is what a framework without varlen pays: every row padded to the longest, a
(B, 1, L, L) mask that hides padding, other rows and everything outside sinks + window. Prints a
table, writes JSON and a PNG bar chart.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tqdm import tqdm  # noqa: E402

import swaa_ext  # noqa: E402
from swaa_ext import reference  # noqa: E402

from .problem import FLOPS_PER_PAIR_DIM, visible_pairs  # noqa: E402
from .report import write_json  # noqa: E402
from .timing import machine_info, median, time_calls  # noqa: E402

METHODS = {"varlen": "swaa_ext varlen (one call)", "loop": "swaa_ext, one call per sequence",
           "sdpa_padded": "SDPA, padded batch + dense mask"}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short sequences, seconds")
    ap.add_argument("--lengths", type=int, nargs="+", help="sequence lengths of the batch")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--sinks", type=int, default=64)
    ap.add_argument("--heads", type=int, nargs=2, default=[16, 4], metavar=("HQ", "HKV"))
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls (median); a call over "
                                                          "5 s ends the repeats")
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--out", type=Path, help="output prefix (default bench/results/varlen[_quick])")
    args = ap.parse_args()
    if args.lengths is None:
        args.lengths = ([64, 128, 192, 256, 384, 512, 768, 1024] if args.quick else
                        [512, 1024, 1536, 2048, 3072, 4096, 6144, 8192])
    if args.quick:
        args.window = min(args.window, 128)
        args.sinks = min(args.sinks, 16)
    if args.out is None:
        args.out = Path("bench/results") / ("varlen_quick" if args.quick else "varlen")
    return args


class Batch:
    """The ragged batch in the varlen layout, and the same batch padded for SDPA."""

    def __init__(self, args: argparse.Namespace, requires_grad: bool) -> None:
        gen = torch.Generator().manual_seed(0)
        hq, hkv = args.heads
        lengths = torch.tensor(args.lengths)
        self.lengths, self.window, self.sinks = args.lengths, args.window, args.sinks
        self.cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        total, width = int(lengths.sum()), max(args.lengths)
        self.q = torch.randn(total, hq, args.head_dim, generator=gen)
        self.k = torch.randn(total, hkv, args.head_dim, generator=gen)
        self.v = torch.randn(total, hkv, args.head_dim, generator=gen)
        for t in (self.q, self.k, self.v):
            t.requires_grad_(requires_grad)
        self.grad = torch.randn_like(self.q)
        # Right padding to the longest row (real tokens first: the rule's positions hold as is).
        self.index = torch.cat([b * width + torch.arange(n) for b, n in enumerate(args.lengths)])
        self.width = width
        real = torch.zeros(len(args.lengths), width, dtype=torch.bool)
        for b, n in enumerate(args.lengths):
            real[b, :n] = True
        rule = reference.visible(width, width, args.window, args.sinks)  # (1, 1, L, L)
        # Padding queries keep their own diagonal so that no row is empty (SDPA gives NaN there).
        self.mask = (rule & real[:, None, None, :]) | torch.eye(width, dtype=torch.bool)
        self.flops = {mode: sum(FLOPS_PER_PAIR_DIM[mode] * args.head_dim * hq *
                                visible_pairs(n, n, args.window, args.sinks)
                                for n in args.lengths) for mode in FLOPS_PER_PAIR_DIM}

    def padded(self, t: torch.Tensor) -> torch.Tensor:
        """(total, H, D) -> (B, H, L, D), zeros past each row's length."""
        out = t.new_zeros(len(self.lengths) * self.width, *t.shape[1:]).index_copy(0, self.index, t)
        return out.view(len(self.lengths), self.width, *t.shape[1:]).transpose(1, 2)

    def run(self, method: str) -> torch.Tensor:
        q, k, v = self.q, self.k, self.v
        if method == "varlen":
            n = max(self.lengths)
            return swaa_ext.sliding_attention_varlen(q, k, v, self.cu, self.cu, n, n,
                                                     self.window, self.sinks)
        if method == "loop":
            outs = []
            for s in range(len(self.lengths)):
                a, b = int(self.cu[s]), int(self.cu[s + 1])
                rows = [t[a:b].transpose(0, 1)[None] for t in (q, k, v)]
                outs.append(swaa_ext.sliding_attention(*rows, self.window,
                                                       self.sinks)[0].transpose(0, 1))
            return torch.cat(outs)
        out = F.scaled_dot_product_attention(self.padded(q), self.padded(k), self.padded(v),
                                             attn_mask=self.mask, enable_gqa=True)
        return out.transpose(1, 2).reshape(-1, *q.shape[1:]).index_select(0, self.index)


def measure(batch: Batch, method: str, mode: str, repeats: int) -> tuple[dict, torch.Tensor]:
    kept = {}

    def call() -> None:
        if mode == "fwd":
            with torch.no_grad():
                kept["out"] = batch.run(method)
            return
        for t in (batch.q, batch.k, batch.v):
            t.grad = None
        out = batch.run(method)
        out.backward(batch.grad)
        kept["out"] = out.detach()

    wall, cpu = time_calls(call, repeats)
    return {"times_s": wall, "cpu_times_s": cpu, "seconds": median(wall)}, kept["out"]


def main() -> None:
    args = parse_args()
    info = machine_info()
    print(f"{info['cpu']}, {info['torch_threads']} threads, load {info['load_average_1_5_15']}; "
          f"lengths {args.lengths}, window {args.window}, sinks {args.sinks}, heads "
          f"{args.heads[0]}/{args.heads[1]}, D={args.head_dim}, fp32")
    rows = []
    with tqdm(total=len(args.modes) * len(METHODS), desc="varlen bench", unit="run") as bar:
        for mode in args.modes:
            batch = Batch(args, requires_grad=mode == "fwd+bwd")
            expected = None
            for method in METHODS:
                bar.set_postfix_str(f"{mode} {method}")
                row, out = measure(batch, method, mode, args.repeats)
                expected = out if expected is None else expected
                row |= {"method": method, "mode": mode, "flops": batch.flops[mode],
                        "gflops": batch.flops[mode] / row["seconds"] / 1e9,
                        "max_abs_diff": (out - expected).abs().max().item()}
                rows.append(row)
                bar.update()
    for row in rows:
        ours = next(r for r in rows if r["mode"] == row["mode"] and r["method"] == "varlen")
        row["varlen_speedup"] = row["seconds"] / ours["seconds"]
    info["load_average_after"] = list(os.getloadavg())

    table = Table(title=f"ragged batch of {len(args.lengths)} sequences ({min(args.lengths)}.."
                        f"{max(args.lengths)} tokens), window {args.window}, sinks {args.sinks}")
    for col in ("mode", "method", "time ms", "GFLOP/s (visible pairs)", "varlen speedup",
                "max |diff| vs varlen"):
        table.add_column(col, justify="left" if col in ("mode", "method") else "right")
    for row in rows:
        table.add_row(row["mode"], METHODS[row["method"]], f"{row['seconds'] * 1e3:.1f}",
                      f"{row['gflops']:.1f}",
                      "" if row["method"] == "varlen" else f"{row['varlen_speedup']:.2f}x",
                      f"{row['max_abs_diff']:.1e}")
    Console(width=160).print(table)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json({"machine": info, "settings": settings, "results": rows},
               args.out.with_suffix(".json"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, method in enumerate(METHODS):
        times = [next(r["seconds"] for r in rows if r["mode"] == m and r["method"] == method)
                 for m in args.modes]
        ax.bar([j + 0.27 * (i - 1) for j in range(len(args.modes))], times, width=0.27,
               label=METHODS[method], color=f"C{i}")
    ax.set(xticks=range(len(args.modes)), xticklabels=args.modes, ylabel="seconds", yscale="log",
           title=f"ragged batch, lengths {min(args.lengths)}..{max(args.lengths)}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
