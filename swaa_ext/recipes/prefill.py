"""Prefill-only timing of grid configurations on random tokens (no generation, no accuracy):
`python -m swaa_ext.recipes.prefill --lengths 1024,2048`. Configurations alternate within every
repetition, and the first repetition is a discarded warm-up. Per configuration: the median
seconds, and the speed-up against `fa` (the model's own attention) and `fa_kernel` (our kernel at
full width) as the median and range of the per-repetition ratios, beside the FLOP model's
prediction (cost.py); `--out` writes the rows as JSON."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from .cost import prompt_flops
from .eval import DTYPES, _csv
from .grid import RECOMMENDED, GridEntry, build_grid
from .models import add_model_argument, load
from .runner import ConfigSwitch

BASELINES = ("fa", "fa_kernel")


def measure(model: PreTrainedModel, grid: Sequence[GridEntry], lengths: Sequence[int],
            reps: int, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (length, configuration): the timed repetitions' seconds, their median, and per
    baseline in the grid the speed-up (baseline seconds / these, repetition by repetition: median,
    low, high) and the FLOP model's. The model is left as it was given."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if not lengths or any(int(n) < 1 for n in lengths):
        raise ValueError(f"lengths must be prompt lengths >= 1, got {list(lengths)}")
    hf = model.config.get_text_config().to_dict()
    switch, generator = ConfigSwitch(model), torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    try:
        for length in lengths:
            ids = torch.randint(0, hf["vocab_size"], (1, length), generator=generator)
            times: dict[str, list[float]] = {e.name: [] for e in grid}
            for rep in range(reps + 1):
                for entry in grid:
                    switch.set(entry, length)
                    with torch.inference_mode():
                        start = time.perf_counter()
                        model(ids, logits_to_keep=1)
                        if rep:
                            times[entry.name].append(time.perf_counter() - start)
            flops = {e.name: prompt_flops(hf, length, e.swaa_config(length) if e.window_fraction
                                          else None) for e in grid}
            for entry in grid:
                mine, config = times[entry.name], entry.swaa_config(length)
                speedup = {}
                for base in (b for b in BASELINES if b in times):
                    ratios = [b / m for b, m in zip(times[base], mine)]
                    speedup[base] = {"median": statistics.median(ratios), "low": min(ratios),
                                     "high": max(ratios),
                                     "predicted": flops[base] / flops[entry.name]}
                rows.append({"config": entry.name, "length": length,
                             "window": config.window if config and entry.window_fraction
                             else None,
                             "full_attention_layers": entry.full_attention_layers,
                             "seconds": mine, "median_s": statistics.median(mine),
                             "prompt_flops": flops[entry.name], "speedup": speedup})
    finally:
        switch.reset()
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    bases = [b for b in BASELINES if any(b in r["speedup"] for r in rows)]
    lines = ["| prompt tokens | configuration | window | prefill ms (median) | "
             + " | ".join(f"vs {b}: measured [range] (FLOP model)" for b in bases) + " |",
             "|---|---|---|---|" + "---|" * len(bases)]
    for r in rows:
        cells = []
        for b in bases:
            s = r["speedup"].get(b)
            cells.append("–" if s is None else f"{s['median']:.2f}x [{s['low']:.2f}–"
                                               f"{s['high']:.2f}] ({s['predicted']:.2f}x)")
        lines.append(f"| {r['length']} | {r['config']} | {r['window'] or 'all'} | "
                     f"{r['median_s'] * 1e3:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m swaa_ext.recipes.prefill", description=__doc__)
    add_model_argument(p)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--lengths", type=_csv(int), default=[1024, 2048])
    p.add_argument("--configs", type=_csv(str),
                   default=["fa", "fa_kernel", "swa", "swa+sinks", RECOMMENDED])
    p.add_argument("--window-fractions", type=_csv(float), default=[0.25])
    p.add_argument("--sinks", type=int, default=64)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (plus one warm-up)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load(args.model, DTYPES[args.dtype])
    grid = build_grid(args.configs, args.window_fractions, args.sinks)
    print(f"threads={torch.get_num_threads()} reps={args.reps} (+1 warm-up)", flush=True)
    rows = measure(model, grid, args.lengths, args.reps)
    print(markdown(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": {k: str(v) if isinstance(v, Path) else v
                                                     for k, v in vars(args).items()},
                                        "threads": torch.get_num_threads(), "rows": rows},
                                       indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
