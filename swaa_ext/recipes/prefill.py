"""Prefill-only timing of grid configurations on random tokens (no generation, no accuracy):
`python -m swaa_ext.recipes.prefill --lengths 1024,2048`. Configurations alternate within every
repetition, and the first repetition is a discarded warm-up; prints the median seconds and the
ratios against `fa` (the model's own attention) and `fa_kernel` (our kernel at full width)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from .eval import DTYPES, _csv
from .grid import RECOMMENDED, build_grid
from .models import add_model_argument, load
from .runner import ConfigSwitch


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
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load(args.model, DTYPES[args.dtype])
    grid, switch = build_grid(args.configs, args.window_fractions, args.sinks), ConfigSwitch(model)
    print(f"threads={torch.get_num_threads()} reps={args.reps} (+1 warm-up)")
    generator = torch.Generator().manual_seed(0)
    try:
        for length in args.lengths:
            ids = torch.randint(0, model.config.vocab_size, (1, length), generator=generator)
            times: dict[str, list[float]] = {e.name: [] for e in grid}
            for rep in range(args.reps + 1):
                for entry in grid:
                    switch.set(entry, length)
                    with torch.inference_mode():
                        start = time.perf_counter()
                        model(ids, logits_to_keep=1)
                        if rep:
                            times[entry.name].append(time.perf_counter() - start)
            med = {name: statistics.median(t) for name, t in times.items()}
            for name, m in med.items():
                ratios = "  ".join(f"{med[b] / m:.2f}x vs {b}" for b in ("fa", "fa_kernel")
                                   if b in med)
                print(f"L={length:<6} {name:<32} {m * 1e3:8.0f} ms  {ratios}", flush=True)
    finally:
        switch.reset()
    return 0


if __name__ == "__main__":
    sys.exit(main())
