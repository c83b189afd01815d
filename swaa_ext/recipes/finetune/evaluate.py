"""Before / after: the evaluation harness (recipes/runner.py) on held-out seeds, once on the model
before fine-tuning and once after, as one table with Wilson 95 % intervals, per task family."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..grid import RECOMMENDED, build_grid, describe
from ..prompts import PromptStyle
from ..report import summarize
from ..runner import run_grid
from ..tasks import TaskOptions, make_samples

# Keys of an evaluation's results that are not task groups: the per-prompt records and the
# settings the evaluation ran with (finetune/__main__.py).
NOT_GROUPS = ("records", "settings")

# The methods one at a time (full attention, naive SWA, + sinks, + FA decode, + interleaved full
# layers: the recommended recipe), so each one's value shows, with the recipe trained under.
LADDER = ("fa", "swa", "swa+sinks", "swa+sinks+fa_decode", RECOMMENDED)


def eval_recipes(train_recipe: str) -> tuple[str, ...]:
    """The ladder of methods, with the recipe the model was trained under (by default the
    recommended one, already on it) before the recommended recipe."""
    return tuple(dict.fromkeys((*LADDER[:-1], train_recipe, RECOMMENDED)))


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tasks: Sequence[str],
             length: int, samples: int, seed: int, window_fraction: float, sinks: int,
             style: PromptStyle = PromptStyle(),
             recipes: Sequence[str] = eval_recipes(RECOMMENDED),
             depths: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), digits: int = 5,
             progress: bool = True) -> dict:
    """Every recipe on `samples` prompts per task; the model must be unadapted (the harness
    adapts it per recipe and restores it). Returns {task: summary rows} plus "all"."""
    grid = build_grid(recipes, [window_fraction], sinks)
    prompts = make_samples(tokenizer, tasks, [length], depths, samples, seed,
                           TaskOptions(digits=digits), style)
    records = run_grid(model, tokenizer, prompts, grid, style, progress=progress)
    configs = [describe(e) for e in grid]
    out = {"all": summarize(records, configs)}
    for task in tasks:
        out[task] = summarize([r for r in records if r.task == task], configs)
    out["records"] = [asdict(r) for r in records]
    return out


def _cell(row: dict | None) -> str:
    if row is None:
        return "—"
    low, high = row["ci95"]
    return f"{row['accuracy']:.2f} [{low:.2f}, {high:.2f}] ({row['correct']}/{row['n']})"


def comparison(before: dict, after: dict, trained_tasks: Sequence[str]) -> list[dict]:
    """One row per (task group, recipe): accuracies before and after, each as a fraction of the
    original model's full-attention accuracy, and after as a fraction of the fine-tuned model's
    own full attention (training also changes what full attention gets right)."""
    rows = []
    for group in [g for g in before if g not in NOT_GROUPS]:
        b = {r["recipe"]: r for r in before[group]}
        a = {r["recipe"]: r for r in after.get(group, [])}
        fa = b.get("fa", {}).get("accuracy")
        tuned_fa = a.get("fa", {}).get("accuracy")
        for recipe in b:
            row_a = a.get(recipe)
            rows.append({
                "group": group, "in_training": group == "all" or group in trained_tasks,
                "recipe": recipe, "before": b[recipe], "after": row_a,
                "before_vs_fa": b[recipe]["accuracy"] / fa if fa else None,
                "after_vs_fa": row_a["accuracy"] / fa if fa and row_a else None,
                "after_vs_tuned_fa": (row_a["accuracy"] / tuned_fa if tuned_fa and row_a
                                      else None)})
    return rows


def _form(row: dict | None) -> str:
    if row is None or row.get("form_rate") is None:
        return "—"
    return f"{row['well_formed']}/{row['n']}"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Model `{meta['model']}`, {meta['samples']} samples per task and recipe at "
             f"~{meta['length']} tokens, window {meta['window_fraction']:g} of the prompt, "
             f"{meta['sinks']} sinks, evaluation seed {meta['seed']} (training prompts: seed "
             f"{meta['distill_seed']}). Accuracy [Wilson 95 %] (correct/n); 'right form': "
             f"answers of the asked form (e.g. a 5-digit number), right or wrong, before -> "
             f"after; 'vs FA' is the fraction of the original model's full-attention accuracy, "
             f"'vs tuned FA' of the fine-tuned model's own.", "",
             "| tasks | in training | recipe | before | after | right form | before vs FA | "
             "after vs FA | after vs tuned FA |",
             "|---|---|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        ratio = lambda x: "—" if x is None else f"{x:.0%}"  # noqa: E731
        lines.append(f"| {r['group']} | {'yes' if r['in_training'] else '**no**'} | "
                     f"{r['recipe']} | {_cell(r['before'])} | {_cell(r['after'])} | "
                     f"{_form(r['before'])} -> {_form(r['after'])} | "
                     f"{ratio(r['before_vs_fa'])} | {ratio(r['after_vs_fa'])} | "
                     f"{ratio(r.get('after_vs_tuned_fa'))} |")
    return "\n".join(lines) + "\n"


def depth_markdown(before: dict, after: dict) -> str:
    """Correct/n before -> after per task, recipe and needle depth: where in the prompt the
    answer sits decides whether it is inside the window, so this shows what training changed."""
    tasks = [g for g in before if g not in ("all", *NOT_GROUPS)]
    depths = sorted({d for t in tasks for r in before[t] for d in r["by_depth"]}, key=float)
    lines = ["**Correct/n by needle depth (0 = start of the prompt), before -> after**", "",
             "| task | recipe | " + " | ".join(depths) + " |", "|---|---|" + "---|" * len(depths)]
    for task in tasks:
        a = {r["recipe"]: r for r in after.get(task, [])}
        for b in before[task]:
            def cell(d: str, b=b) -> str:
                x, y = b["by_depth"].get(d), a.get(b["recipe"], {}).get("by_depth", {}).get(d)
                show = lambda r: "—" if r is None else f"{r['correct']}/{r['n']}"  # noqa: E731
                return f"{show(x)} -> {show(y)}"
            lines.append(f"| {task} | {b['recipe']} | " + " | ".join(map(cell, depths)) + " |")
    return "\n".join(lines) + "\n"


def write(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
