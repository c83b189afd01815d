"""bench/vllm.py's output: per dtype x prompt length, the median [min-max] over repetitions of each
measure and of its ratio to stock vLLM full attention (taken per repetition), beside the FLOP
model's predicted prompt ratio; as tables, JSON (settings, machine, summary and every run's row)
and a bar chart of the ratios."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from .report import write_json  # noqa: E402
from .timing import machine_info  # noqa: E402

BASE = "stock_full"
METRICS = (("prompt_tokens_per_s", "prompt tok/s"), ("generated_tokens_per_s", "gen tok/s"),
           ("kv_bytes_per_request", "KV MiB/request"), ("max_concurrency", "max concurrency"))
SCALE = {"kv_bytes_per_request": 2**-20}  # shown in MiB
CONTENDED = 0.8  # a run whose threads got less CPU than this share of its wall time


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarise(rows: list[dict], flops: dict) -> list[dict]:
    """One entry per (dtype, length, config), in run order: each metric's spread over reps and
    the spread of its per-repetition ratio to stock_full (same dtype, length and rep)."""
    base = {(r["dtype"], r["length"], r["rep"]): r for r in rows if r["config"] == BASE}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dtype"], row["length"], row["config"]), []).append(row)
    summary = []
    for (dtype, length, config), reps in groups.items():
        entry = {"dtype": dtype, "length": length, "config": config,
                 "flop_model_prompt_ratio": flops.get((length, config)),
                 "kv_groups": reps[0]["kv_groups"], "metrics": {}, "vs_stock_full": {},
                 "min_cpu_share": min(r["cpu_share"] for r in reps)}
        for key, _ in METRICS:
            entry["metrics"][key] = spread([r[key] for r in reps])
            pairs = [(r, base.get((dtype, length, r["rep"]))) for r in reps]
            entry["vs_stock_full"][key] = spread([r[key] / b[key] for r, b in pairs
                                                  if b and b[key]])
        summary.append(entry)
    return summary


def cell(stats: dict | None, fmt: str, scale: float = 1.0, suffix: str = "") -> str:
    if stats is None:
        return "-"
    mid = f"{stats['median'] * scale:{fmt}}{suffix}"
    if stats["n"] < 2 or stats["min"] == stats["max"]:  # one rep, or the same every time
        return mid
    return f"{mid} [{stats['min'] * scale:{fmt}}-{stats['max'] * scale:{fmt}}]"


def warn_contended(rows: list[dict]) -> None:
    slow = [r for r in rows if r["cpu_share"] < CONTENDED]
    if slow:
        print(f"WARNING: {len(slow)} of {len(rows)} runs got under {CONTENDED:.0%} of their "
              f"threads' CPU time (other jobs on the cores): "
              + ", ".join(f"{r['config']}/{r['dtype']}/{r['length']}/rep {r['rep'] + 1} "
                          f"{r['cpu_share']:.2f}" for r in slow[:10])
              + (" ..." if len(slow) > 10 else ""))


def print_tables(summary: list[dict], settings: dict) -> None:
    console = Console(width=240)
    for dtype in settings["dtypes"]:
        for length in settings["lengths"]:
            shape = settings["per_length"][length]
            table = Table(title=escape(
                f"vLLM CPU, SmolLM2-135M, {dtype}, {shape['prompts']} prompts x {length} tokens"
                f" + {settings['new_tokens']} new, window {shape['window']}, {settings['sinks']}"
                f" sinks, max model len {shape['max_model_len']}: median [min-max] of "
                f"{settings['reps']} reps; x = ratio to {BASE}, per rep"))
            table.add_column("config")
            for _, label in METRICS:
                table.add_column(label, justify="right")
                table.add_column("x", justify="right")
                if label == "prompt tok/s":
                    table.add_column("FLOP model", justify="right")
            table.add_column("min CPU share", justify="right")
            table.add_column("KV groups")
            for entry in summary:
                if (entry["dtype"], entry["length"]) != (dtype, length):
                    continue
                cells = [entry["config"]]
                for key, _ in METRICS:
                    cells.append(cell(entry["metrics"][key], ".1f", SCALE.get(key, 1.0)))
                    cells.append(cell(entry["vs_stock_full"][key], ".2f", suffix="x"))
                    if key == "prompt_tokens_per_s":
                        model = entry["flop_model_prompt_ratio"]
                        cells.append("-" if model is None else f"{model:.2f}x")
                cells.append(f"{entry['min_cpu_share']:.2f}")
                cells.append(", ".join(f"{g['spec'].removesuffix('Spec')} x{g['layers']}"
                                       for g in entry["kv_groups"]))
                table.add_row(*map(escape, cells))
            console.print(table)


def plot(summary: list[dict], settings: dict, path: Path) -> None:
    """Median ratio to stock_full with min-max error bars, prompt and generation, one panel per
    dtype x length; the FLOP model's prompt ratio as a black tick on the prompt bar."""
    dtypes, lengths = settings["dtypes"], settings["lengths"]
    fig, axes = plt.subplots(len(dtypes), len(lengths), squeeze=False,
                             figsize=(1.6 + 5.5 * len(lengths), 4.2 * len(dtypes)))
    measures = (("prompt_tokens_per_s", "prompt tok/s"), ("generated_tokens_per_s", "gen tok/s"))
    for ax, (dtype, length) in zip(axes.flat, [(d, n) for d in dtypes for n in lengths]):
        entries = [e for e in summary if (e["dtype"], e["length"]) == (dtype, length)
                   and e["config"] != BASE]
        ax.set_title(f"{dtype}, {length}-token prompts, window "
                     f"{settings['per_length'][length]['window']}", fontsize=9)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_ylabel(f"ratio to {BASE}")
        xs = range(len(entries))
        for offset, (key, label) in zip((-0.2, 0.2), measures):
            stats = [e["vs_stock_full"][key] for e in entries]
            if any(s is None for s in stats):
                continue  # no stock_full rows to compare with
            mid = [s["median"] for s in stats]
            err = [[m - s["min"] for m, s in zip(mid, stats)],
                   [s["max"] - m for m, s in zip(mid, stats)]]
            ax.bar([x + offset for x in xs], mid, width=0.4, yerr=err, capsize=3, label=label)
        model = [e["flop_model_prompt_ratio"] for e in entries]
        ax.scatter([x - 0.2 for x in xs], model, marker="_", s=300, color="black", zorder=3,
                   label="FLOP model (prompt)")
        ax.set_xticks(list(xs), [e["config"] for e in entries], rotation=30, ha="right",
                      fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"vLLM CPU, SmolLM2-135M: median [min-max] of {settings['reps']} reps",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict], settings: dict, flops: dict, out: Path) -> None:
    summary = summarise(rows, flops)
    print_tables(summary, settings)
    warn_contended(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json({"settings": settings, "machine": machine_info(), "summary": summary,
                "runs": rows}, out.with_suffix(".json"))
    plot(summary, settings, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
