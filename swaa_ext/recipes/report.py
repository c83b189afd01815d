"""Aggregates run records into accuracy (with Wilson 95 % intervals) and cost per configuration,
overall and by task, length and depth, and paired comparisons of the configurations (exact
McNemar on the same prompts); writes them as JSON, a markdown table and the paper's trade-off
plot (accuracy against prefill time).

    python -m swaa_ext.recipes.report DIR   # rewrite DIR/results.md (and the JSON's summary)
                                            # from DIR/results.json's records
    python -m swaa_ext.recipes.report DIR --add MORE   # ... with MORE's configurations added
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .grid import GridEntry
from .runner import Record
from .scoring import THINK_CLOSE, THINK_OPEN, mcnemar_exact, wilson_interval

BASELINES = ("fa", "fa_kernel")  # prefill speed-ups are reported against both


def _accuracy(records: Sequence[Record]) -> dict[str, Any]:
    """Accuracy with its Wilson interval, and the rate of answers of the right form (right or
    wrong; over the records that say, None without any): a format learned vs a retrieval."""
    k, n = sum(r.correct for r in records), len(records)
    low, high = wilson_interval(k, n)
    formed = [r.well_formed for r in records if r.well_formed is not None]
    return {"correct": k, "n": n, "accuracy": k / n, "ci95": [low, high],
            "well_formed": sum(formed) if formed else None,
            "form_rate": sum(formed) / len(formed) if formed else None}


def _reasoning(records: Sequence[Record]) -> dict[str, Any]:
    """How the completions used the reasoning block (read with thinking prompts): closed (the
    answer is read after it), opened but never closed (no answer), or never opened (the whole
    completion is read); and the mean number of new tokens."""
    closed = sum(THINK_CLOSE in r.completion for r in records)
    unclosed = sum(THINK_OPEN in r.completion and THINK_CLOSE not in r.completion
                   for r in records)
    return {"closed": closed, "unclosed": unclosed, "absent": len(records) - closed - unclosed,
            "new_tokens_mean": statistics.fmean(r.new_tokens for r in records)}


def _paired_speedup(records: Sequence[Record], baseline: Sequence[Record]) -> float | None:
    """Geometric mean over samples of baseline prefill / this prefill, paired by sample (the
    configurations ran back to back on each sample, so load drift cancels)."""
    base = {(r.task, r.target_tokens, r.index): r.prefill_s for r in baseline}
    ratios = [base[key] / r.prefill_s for r in records
              if (key := (r.task, r.target_tokens, r.index)) in base and r.prefill_s > 0]
    return math.exp(statistics.fmean(math.log(x) for x in ratios)) if ratios else None


def _grouped(records: Sequence[Record], key: Callable[[Record], Any]) -> dict[Any, list[Record]]:
    groups: dict[Any, list[Record]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return groups


def summarize(records: Sequence[Record], configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration, in grid order."""
    by_config = _grouped(records, lambda r: r.config)
    rows = []
    for config in configs:
        rs = by_config.get(config["name"], [])
        if not rs:
            continue
        windows = sorted({r.window for r in rs if r.window is not None})
        mem = [r.peak_mem_bytes for r in rs if r.peak_mem_bytes is not None]
        decode_tokens = sum(max(r.new_tokens - 1, 0) for r in rs)
        rows.append({
            **config, **_accuracy(rs),
            "windows": windows,
            "prefill_s_median": statistics.median(r.prefill_s for r in rs),
            "prefill_s_mean": statistics.fmean(r.prefill_s for r in rs),
            "decode_s_per_token": (sum(r.decode_s for r in rs) / decode_tokens
                                   if decode_tokens else None),
            "peak_mem_bytes_max": max(mem) if mem else None,
            "kv_cache_bytes_mean": statistics.fmean(r.kv_cache_bytes for r in rs),
            "prefill_speedup": {b: _paired_speedup(rs, by_config.get(b, [])) for b in BASELINES
                                if b in by_config},
            "reasoning": _reasoning(rs),
            "by_task": {t: _accuracy(g) for t, g in sorted(_grouped(rs, lambda r: r.task).items())},
            "by_length": {str(n): _accuracy(g) for n, g in
                          sorted(_grouped(rs, lambda r: r.target_tokens).items())},
            "by_depth": {f"{d:g}": _accuracy(g) for d, g in
                         sorted(_grouped(rs, lambda r: r.depth).items())},
        })
    return rows


def _prompt(r: Record) -> tuple[str, int, int]:
    return r.task, r.target_tokens, r.index


def paired(records: Sequence[Record], names: Sequence[str]) -> list[dict[str, Any]]:
    """Every two configurations (in grid order) on the prompts both ran: how many only the first
    got right, how many only the second, and the exact McNemar p of that split. Each grid
    configuration runs the same prompts, so these pairs are the accuracy difference's test."""
    outcome = {name: {_prompt(r): r.correct for r in group}
               for name, group in _grouped(records, lambda r: r.config).items()}
    rows = []
    for first, second in itertools.combinations([n for n in names if n in outcome], 2):
        shared = outcome[first].keys() & outcome[second].keys()
        only_first = sum(outcome[first][k] and not outcome[second][k] for k in shared)
        only_second = sum(outcome[second][k] and not outcome[first][k] for k in shared)
        rows.append({"first": first, "second": second, "prompts": len(shared),
                     "only_first": only_first, "only_second": only_second,
                     "p_mcnemar": mcnemar_exact(only_first, only_second)})
    return rows


def write_json(path: Path, meta: dict[str, Any], summary: list[dict[str, Any]],
               records: Sequence[Record], pairs: list[dict[str, Any]] | None = None) -> None:
    pairs = paired(records, [row["name"] for row in summary]) if pairs is None else pairs
    path.write_text(json.dumps({"meta": meta, "summary": summary, "paired": pairs,
                                "records": [asdict(r) for r in records]}, indent=1))


def _fmt_acc(a: dict[str, Any]) -> str:
    low, high = a["ci95"]
    return f"{a['accuracy']:.2f} [{low:.2f}, {high:.2f}] ({a['correct']}/{a['n']})"


def _fmt(value: float | None, spec: str, scale: float = 1.0, unit: str = "") -> str:
    return "–" if value is None else format(value * scale, spec) + unit


def _breakdown(summary: list[dict[str, Any]], field: str, title: str) -> list[str]:
    keys = sorted({k for row in summary for k in row[field]},
                  key=lambda k: (float(k) if k.replace(".", "", 1).isdigit() else math.inf, k))
    lines = [f"\n**Accuracy by {title}**\n", "| config | " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]
    for row in summary:
        cells = [_fmt_acc(row[field][k]) if k in row[field] else "–" for k in keys]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return lines


def _paired_table(pairs: list[dict[str, Any]]) -> list[str]:
    lines = ["\n**Paired: the same prompts under two configurations (exact McNemar)**\n",
             "| first | second | prompts | right only with the first | right only with the "
             "second | p |", "|---|---|---|---|---|---|"]
    for row in pairs:
        lines.append(f"| {row['first']} | {row['second']} | {row['prompts']} | "
                     f"{row['only_first']} | {row['only_second']} | {row['p_mcnemar']:.2g} |")
    return lines


def _reasoning_table(summary: list[dict[str, Any]], budget: int | None) -> list[str]:
    lines = [f"\n**Reasoning blocks** (thinking prompts, budget {budget or '?'} tokens: the answer "
             "is read after `</think>`; an unclosed block gives no answer; without a block the "
             "whole completion is read)\n",
             "| config | closed | unclosed | no block | mean new tokens |", "|---|---|---|---|---|"]
    for row in summary:
        r = row["reasoning"]
        lines.append(f"| {row['name']} | {r['closed']} | {r['unclosed']} | {r['absent']} | "
                     f"{r['new_tokens_mean']:.0f} |")
    return lines


def _style(meta: dict[str, Any]) -> str:
    """The prompt style, stated beside every table of numbers."""
    parts = [f"thinking (budget {meta.get('thinking_budget') or '?'} tokens)"
             if meta.get("thinking") else "no thinking",
             "answer prefix" if meta.get("answer_prefix") else "no answer prefix"]
    if meta.get("chat_template") is False:
        parts.append("no chat template")
    return ", ".join(parts)


def markdown(meta: dict[str, Any], summary: list[dict[str, Any]],
             pairs: list[dict[str, Any]] | None = None) -> str:
    lines = [
        "| config | window | sinks | FA layers | FA decode | accuracy [95 % CI] (k/n) | "
        "right form | prefill ms (median) | speed-up vs fa | vs fa_kernel | decode ms/token | "
        "peak mem MiB | KV cache MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        layers = row["full_attention_layers"]
        speed = row["prefill_speedup"]
        lines.append(
            f"| {row['name']} | {', '.join(map(str, row['windows'])) or 'full'} | {row['sinks']} | "
            f"{layers if isinstance(layers, str) else (', '.join(map(str, layers)) or '–')} | "
            f"{'yes' if row['fa_decode'] else 'no'} | {_fmt_acc(row)} | "
            f"{_fmt(row.get('form_rate'), '.2f')} | {row['prefill_s_median'] * 1e3:.0f} | {_fmt(speed.get('fa'), '.2f', unit='×')} | "
            f"{_fmt(speed.get('fa_kernel'), '.2f', unit='×')} | "
            f"{_fmt(row['decode_s_per_token'], '.1f', 1e3)} | "
            f"{_fmt(row['peak_mem_bytes_max'], '.0f', 2.0 ** -20)} | "
            f"{row['kv_cache_bytes_mean'] / 2 ** 20:.1f} |")
    for field, title in (("by_task", "task"), ("by_length", "length (tokens)"),
                         ("by_depth", "needle depth")):
        lines += _breakdown(summary, field, title)
    if meta.get("thinking"):
        lines += _reasoning_table(summary, meta.get("thinking_budget"))
    if pairs:
        lines += _paired_table(pairs)
    header = (f"Model: {meta.get('model')} · tasks: {', '.join(meta.get('tasks', []))} · "
              f"{meta.get('samples')} samples per task and length · seed {meta.get('seed')} · "
              f"{_style(meta)} · {meta.get('device')}, {meta.get('threads')} threads")
    return header + "\n\n" + "\n".join(lines) + "\n"


def plot(path: Path, summary: list[dict[str, Any]], title: str) -> None:
    """Accuracy (with its 95 % interval) against median prefill time: up and to the left is better."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in summary:
        x, y = row["prefill_s_median"] * 1e3, row["accuracy"]
        low, high = row["ci95"]
        ax.errorbar([x], [y], yerr=[[max(y - low, 0.0)], [max(high - y, 0.0)]], fmt="o",
                    capsize=3)
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("prefill time per prompt, median (ms)")
    ax.set_ylabel("accuracy (exact match, Wilson 95 % CI)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# The evaluation settings that fix its prompts and their generation budget: evaluations that agree
# on them ran the same prompts, so their configurations can be reported (and paired) together.
SAME_PROMPTS = ("model", "dtype", "tasks", "lengths", "depths", "samples", "seed", "digits",
                "thinking", "thinking_budget", "answer_prefix", "chat_template", "prompt_tokens")


def load_results(folder: Path) -> dict[str, Any]:
    """An evaluation's results.json (meta, summary, paired, records), from its --out folder."""
    path = folder / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass the --out folder of an evaluation")
    return json.loads(path.read_text())


def rerender(folder: Path, added: Sequence[Path] = ()) -> str:
    """Rebuild an evaluation's summary, paired comparisons and results.md from the records in
    folder/results.json (for results written before a table existed, or to check one). Each
    folder in `added` is another evaluation of the same prompts (SAME_PROMPTS) with other
    configurations: its records join folder's, its command is kept in meta["added"]."""
    data = load_results(folder)
    meta, rows = data["meta"], list(data["summary"])
    records = [Record(**r) for r in data["records"]]
    for other in added:
        more = load_results(other)
        differ = [k for k in SAME_PROMPTS if more["meta"].get(k) != meta.get(k)]
        if differ:
            raise ValueError(f"{other} evaluated other prompts than {folder}: "
                             f"{', '.join(differ)} differ")
        clash = sorted({r["name"] for r in more["summary"]} & {r["name"] for r in rows})
        if clash:
            raise ValueError(f"{other} repeats configurations of {folder}: {', '.join(clash)}")
        rows += more["summary"]
        records += [Record(**r) for r in more["records"]]
        meta.setdefault("added", []).append({"command": more["meta"].get("command"),
                                             "total_s": more["meta"].get("total_s")})
    entry_fields = [f.name for f in dataclasses.fields(GridEntry)]
    summary = summarize(records, [{k: row[k] for k in entry_fields if k in row} for row in rows])
    pairs = paired(records, [row["name"] for row in summary])
    write_json(folder / "results.json", meta, summary, records, pairs)
    table = markdown(meta, summary, pairs)
    (folder / "results.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swaa_ext.recipes.report",
                                     description=rerender.__doc__)
    parser.add_argument("folder", type=Path, help="an evaluation's --out folder")
    parser.add_argument("--add", type=Path, action="append", default=[], metavar="DIR",
                        help="another evaluation of the same prompts whose configurations join "
                             "folder's (repeatable)")
    args = parser.parse_args(argv)
    try:
        print(rerender(args.folder, args.add))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
