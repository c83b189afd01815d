"""Calibrated layer selection: which layers keep full attention (docs/layer-selection.md).

    python -m swaa_ext.recipes.select --model smollm2 --budget 1/4 --out DIR

Measures, on a small calibration set (calibration.py), how much the gold answer's NLL rises
(and how far the answer-token distributions move: the KL) when each layer alone slides under the
recipe (window, sinks, FA decode; layer_scores.py), and keeps full the `--budget` layers that
hurt most (`--metric`: the NLL rise by default, or the KL). Writes DIR/selection.json (its
`config` is the SWAAConfig to adapt with, its `full_attention_layers` the chosen layers, with
the per-layer scores and the settings) and DIR/layer_scores.png. Measurements are cached, so
another budget or metric is instant."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ..config import LAYER_PATTERNS, SWAAConfig
from .calibration import DEFAULT_FAMILIES, FAMILIES, calibration_set
from .eval import DTYPES
from .grid import layers_token
from .layer_scores import METHOD, MeasurementCache, mean_over, measure
from .models import add_model_argument, load
from .prompts import PromptStyle
from .tasks import TaskOptions

SELECTION, PLOT, CACHE = "selection.json", "layer_scores.png", "measurements.jsonl"
METRICS = ("kl", "nll_rise")  # what the ranking can use; both are measured and reported


_DESCRIBED = {"kl": "KL(full attention || this layer slides)", "nll_rise": "rise in gold NLL"}


def parse_budget(text: str) -> Fraction | int:
    """A count of layers ("8") or a fraction of them ("1/4", "0.25", "25%")."""
    text = str(text).strip()
    try:
        if text.endswith("%"):
            value: Fraction | int = Fraction(text[:-1]) / 100
        elif text.isdigit():
            value = int(text)
        else:
            value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--budget must be a layer count (e.g. 8) or a fraction of the layers "
                         f"(e.g. 1/4, 0.25, 25%), got {text!r}") from None
    if isinstance(value, int) and value < 1:
        raise ValueError(f"--budget must keep at least one layer full, got {text!r}")
    if isinstance(value, Fraction) and not 0 < value <= 1:
        raise ValueError(f"--budget as a fraction must be in (0, 1], got {text!r}")
    return value


def budget_layers(budget: Fraction | int, num_layers: int) -> int:
    """Layers to keep full. A fraction rounds down, as the periodic patterns do (every_4th keeps
    7 of 30 layers): the selection then competes with the same count."""
    count = budget if isinstance(budget, int) else math.floor(budget * num_layers)
    if count > num_layers:
        raise ValueError(f"--budget {budget} exceeds the model's {num_layers} layers")
    if count < 1:
        raise ValueError(f"--budget {budget} of {num_layers} layers keeps no layer full; "
                         f"ask for at least 1/{num_layers}")
    return count


def choose(scores: list[float], count: int) -> list[int]:
    """The `count` layers with the highest scores (ties: the lower index), in layer order."""
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[:count])


def coverage(scores: list[float], layers: list[int]) -> float:
    """The share of the summed single-layer scores that `layers` keep full."""
    total = math.fsum(max(s, 0.0) for s in scores)
    return math.fsum(max(scores[i], 0.0) for i in layers) / total if total > 0 else 0.0


def _fraction(text: str) -> float:
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a fraction such as 1/8 or 0.125, "
                                         f"got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def _budget(text: str) -> Fraction | int:
    try:
        return parse_budget(text)
    except ValueError as e:  # argparse then names the argument itself
        raise argparse.ArgumentTypeError(str(e).removeprefix("--budget ")) from None


def _families(text: str) -> list[str]:
    families = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if not families or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(FAMILIES)}, got {text!r}")
    return families


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "swaa_ext" / "select"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m swaa_ext.recipes.select", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(p)
    p.add_argument("--budget", type=_budget, required=True,
                   help="layers to keep full: a count (8) or a fraction of the layers (1/4, 0.25, "
                        "25%%; rounded down)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--length", type=int, default=2048, help="prompt tokens (default: %(default)s)")
    p.add_argument("--window-fraction", type=_fraction, default=0.125,
                   help="window as a fraction of --length (default: 1/8)")
    p.add_argument("--sinks", type=int, default=64, help="default: %(default)s")
    p.add_argument("--fa-decode", action=argparse.BooleanOptionalAction, default=True,
                   help="the target (answer) tokens see the whole context (default: on)")
    p.add_argument("--families", type=_families, default=list(DEFAULT_FAMILIES),
                   help=f"calibration families, from {', '.join(FAMILIES)} "
                        f"(default: {','.join(DEFAULT_FAMILIES)})")
    p.add_argument("--metric", choices=METRICS, default="nll_rise",
                   help="rank by the rise of the gold answer's NLL (default) or the KL to full "
                        "attention; both come from the same (cached) forwards")
    p.add_argument("--samples", type=int, default=1,
                   help="examples per family (default: 1; each is about N / 2 forwards)")
    p.add_argument("--seed", type=int, default=1,
                   help="calibration seed (default 1; the evaluation's default is 0, so its "
                        "samples stay out of the calibration)")
    p.add_argument("--digits", type=int, default=5, help="digits of numeric answers")
    p.add_argument("--no-chat-template", action="store_true", help="plain text prompts")
    p.add_argument("--batch-size", type=int, default=1, help="examples packed per forward")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"where measurements are cached (default: {default_cache_dir()})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _by_family(examples, scores, field: str) -> dict[str, list[float]]:
    families = dict.fromkeys(e.family for e in examples)
    return {f: mean_over([s for e, s in zip(examples, scores) if e.family == f], field)
            for f in families}


def plot(path: Path, kl: list[float], nll_rise: list[float], chosen: list[int], title: str) -> None:
    """Per-layer KL and NLL rise (either can rank), the chosen layers highlighted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = range(len(kl))
    colors = ["tab:red" if i in chosen else "tab:gray" for i in layers]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    top.bar(layers, kl, color=colors)
    top.set_yscale("symlog", linthresh=max(min((v for v in kl if v > 0), default=1e-6), 1e-9))
    top.set_ylabel("KL to full attention\n(nats / answer token)")
    top.set_title(title, fontsize=10)
    bottom.bar(layers, nll_rise, color=colors)
    bottom.axhline(0.0, color="black", linewidth=0.6)
    bottom.set_ylabel("answer NLL rise\n(nats / token)")
    bottom.set_xlabel("layer (red: kept on full attention)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    for name, value, low in (("--length", args.length, 1), ("--samples", args.samples, 1),
                             ("--sinks", args.sinks, 0), ("--batch-size", args.batch_size, 1)):
        if value < low:
            raise SystemExit(f"{name} must be >= {low}, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tokenizer = load(args.model, DTYPES[args.dtype], args.device)
    num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
    try:
        count = budget_layers(args.budget, num_layers)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    load_s = time.perf_counter() - started
    examples = calibration_set(tokenizer, args.families, args.length, args.samples, args.seed,
                               TaskOptions(digits=args.digits),
                               PromptStyle(chat_template=not args.no_chat_template))
    window = max(1, round(args.window_fraction * args.length))
    recipe = SWAAConfig(window=window, sinks=args.sinks, fa_decode=args.fa_decode)
    cache = MeasurementCache((args.cache_dir or default_cache_dir()) / CACHE)
    measured_at = time.perf_counter()
    result = measure(model, examples, recipe, cache, args.batch_size, progress=not args.quiet)
    measure_s = time.perf_counter() - measured_at

    scores = {field: mean_over(result.scores, field) for field in ("kl", "nll_rise")}
    chosen = choose(scores[args.metric], count)
    config = SWAAConfig(window=window, sinks=args.sinks, full_attention_layers=chosen,
                        fa_decode=args.fa_decode)
    patterns = {name: [i for i in range(num_layers) if rule(i)]
                for name, rule in LAYER_PATTERNS.items()}
    selection = {
        "full_attention_layers": chosen,
        "config": config.to_dict(),
        "budget": {"requested": str(args.budget), "layers": count, "of": num_layers},
        "metric": args.metric,
        "method": f"{METHOD}: rank layers by the mean {_DESCRIBED[args.metric]} over the "
                  "calibration examples' answer tokens when the layer alone slides; keep the "
                  "top `budget` full",
        "ranking": sorted(range(num_layers), key=lambda i: (-scores[args.metric][i], i)),
        "scores": {**scores,
                   "kl_by_family": _by_family(examples, result.scores, "kl"),
                   "nll_rise_by_family": _by_family(examples, result.scores, "nll_rise")},
        "reference": {
            "full_nll": sum(s.full_nll for s in result.scores) / len(result.scores),
            "all_sliding_kl": sum(s.all_sliding_kl for s in result.scores) / len(result.scores),
            "all_sliding_nll_rise": sum(s.all_sliding_nll_rise for s in result.scores)
            / len(result.scores),
            # Share of the summed single-layer KL each choice keeps full (additive reading).
            "kl_coverage": {"selected": coverage(scores["kl"], chosen),
                            **{name: coverage(scores["kl"], layers)
                               for name, layers in patterns.items()}},
        },
        "settings": {
            "command": f"{build_parser().prog} {shlex.join(getattr(args, 'argv', sys.argv[1:]))}",
            "model": args.model, "dtype": args.dtype, "device": args.device,
            "length": args.length, "window_fraction": args.window_fraction, "window": window,
            "sinks": args.sinks, "fa_decode": args.fa_decode, "families": args.families,
            "samples": args.samples, "seed": args.seed, "digits": args.digits,
            "chat_template": not args.no_chat_template, "batch_size": args.batch_size,
            "examples": len(examples),
            "prompt_tokens": [min(len(e.prompt_ids) for e in examples),
                              max(len(e.prompt_ids) for e in examples)],
            "threads": torch.get_num_threads(), "torch": torch.__version__,
        },
        "timing": {"load_s": load_s, "measure_s": measure_s,
                   "total_s": time.perf_counter() - started,
                   "measured_examples": result.measured,
                   "cached_examples": len(examples) - result.measured,
                   "resumed_forwards": result.resumed},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / SELECTION).write_text(json.dumps(selection, indent=1) + "\n")
    plot(args.out / PLOT, scores["kl"], scores["nll_rise"], chosen,
         f"{args.model} @ {args.length} tokens, window {window}, {args.sinks} sinks"
         f"{', FA decode' if args.fa_decode else ''}: {count} of {num_layers} layers full "
         f"(by {args.metric})")
    return selection


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    selection = run(args)
    timing = selection["timing"]
    print(f"full_attention_layers: {selection['full_attention_layers']} "
          f"({selection['budget']['layers']} of {selection['budget']['of']}; as a recipe token: "
          f"{layers_token(selection['full_attention_layers'])}); "
          f"{timing['measured_examples']} examples measured, {timing['cached_examples']} cached, "
          f"{timing['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
