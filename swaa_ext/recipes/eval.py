"""Long-context evaluation of SWAA configurations: `python -m swaa_ext.recipes.eval --help`.

Generates the tasks locally from a seed, runs every sample under every configuration of the grid
(greedy), and writes results.json, results.md and tradeoff.png (accuracy against prefill time)."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .grid import DEFAULT_RECIPES, build_grid, describe
from .models import add_model_argument, load
from .prompts import PromptStyle
from .report import markdown, paired, plot, summarize, write_json
from .runner import run_grid
from .tasks import TASKS, TaskOptions, make_samples

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _csv(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        return [kind(x) for x in text.split(",") if x.strip()]
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m swaa_ext.recipes.eval", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_argument(p)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tasks", type=_csv(str), default=["passkey"],
                   help=f"comma-separated, from {', '.join(TASKS)}")
    p.add_argument("--lengths", type=_csv(int), default=[1024], help="prompt lengths in tokens")
    p.add_argument("--depths", type=_csv(float), default=[0.1, 0.3, 0.5, 0.7, 0.9],
                   help="needle depths (fractions of the haystack); sample i uses depth i mod n")
    p.add_argument("--samples", type=int, default=10, help="samples per task and length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", type=_csv(str), default=list(DEFAULT_RECIPES),
                   help="recipes (see swaa_ext.recipes.grid), e.g. fa,swa,swa+sinks64+fa_decode+odd")
    p.add_argument("--window-fractions", type=_csv(float), default=[0.25],
                   help="windows as fractions of each prompt's length")
    p.add_argument("--sinks", type=int, default=64, help="sinks for recipes that say just 'sinks'")
    p.add_argument("--digits", type=int, default=5, help="digits of numeric answers")
    p.add_argument("--thinking", action="store_true",
                   help="chain-of-thought prompting; the answer is read after </think>")
    p.add_argument("--thinking-budget", type=int, default=PromptStyle.thinking_budget,
                   help="with --thinking: new tokens the model may spend reasoning, on top of "
                        "the task's answer allowance")
    p.add_argument("--answer-prefix", action="store_true",
                   help="start the answer for the model (RULER-style, e.g. 'The pass key is'); then "
                        "the first answer token comes from the last prompt token, which FA decode "
                        "does not cover")
    p.add_argument("--no-chat-template", action="store_true", help="plain text prompts")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("eval_results"), help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.samples < 1:
        raise SystemExit("--samples must be >= 1")
    if args.thinking_budget < 1:
        raise SystemExit("--thinking-budget must be >= 1")
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = build_grid(args.configs, args.window_fractions, args.sinks)
    started = time.perf_counter()
    model, tokenizer = load(args.model, DTYPES[args.dtype], args.device)
    load_s = time.perf_counter() - started
    style = PromptStyle(chat_template=not args.no_chat_template, thinking=args.thinking,
                        answer_prefix=args.answer_prefix, thinking_budget=args.thinking_budget)
    samples = make_samples(tokenizer, args.tasks, args.lengths, args.depths, args.samples,
                           args.seed, TaskOptions(digits=args.digits), style)
    records = run_grid(model, tokenizer, samples, grid, style, progress=not args.quiet)
    meta = {
        "command": f"{getattr(args, 'prog', build_parser().prog)} {shlex.join(sys.argv[1:])}",
        "model": args.model, "dtype": args.dtype, "tasks": args.tasks, "lengths": args.lengths,
        "depths": args.depths, "samples": args.samples, "seed": args.seed,
        "window_fractions": args.window_fractions, "sinks": args.sinks, "digits": args.digits,
        "thinking": args.thinking,
        "thinking_budget": args.thinking_budget if args.thinking else None,
        "answer_prefix": args.answer_prefix,
        "chat_template": not args.no_chat_template,
        "device": args.device if args.device != "cpu" else f"cpu ({_cpu_name()})",
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "load_s": load_s,
        "total_s": time.perf_counter() - started,
        "prompt_tokens": sorted({s.n_tokens for s in samples}),
    }
    summary = summarize(records, [describe(e) for e in grid])
    pairs = paired(records, [row["name"] for row in summary])
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", meta, summary, records, pairs)
    table = markdown(meta, summary, pairs)
    (args.out / "results.md").write_text(table)
    plot(args.out / "tradeoff.png", summary,
         f"{args.model}: {', '.join(args.tasks)} @ {', '.join(map(str, args.lengths))} tokens")
    return {"meta": meta, "summary": summary, "markdown": table, "records": records,
            "model": model, "tokenizer": tokenizer}


def main(argv: list[str] | None = None) -> int:
    result = run(build_parser().parse_args(argv))
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
