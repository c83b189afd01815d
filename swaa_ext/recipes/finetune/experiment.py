"""Several fine-tuning runs of one setting (training seeds), pooled, with paired tests.

    python -m swaa_ext.recipes.finetune.experiment RUN_DIR [RUN_DIR ...] --out DIR

Each RUN_DIR is the --out of a finished `python -m swaa_ext.recipes.finetune all` run
(eval_before.json, eval_after.json, before_after.json). Every run is evaluated on the same
prompts (the evaluation seed), so each prompt of a task and recipe is a pair: right or wrong
under the original model (before) and under that run's fine-tuned model (after). Per task
(and all tasks) and recipe, over the runs pooled, the table gives accuracy before and after
(each run's, and pooled), after as a fraction of the fine-tuned models' own full attention,
and the exact McNemar test of after against before on the discordant pairs (right only after,
right only before): two-sided binomial p with n = discordant pairs, k = the smaller count.
A run whose evaluation settings differ from the first run's is an error: pooled pairs must be
the same prompts. Writes DIR/experiment.json and DIR/experiment.md.

    python -m swaa_ext.recipes.finetune.experiment --before EVAL --after EVAL [EVAL ...] \
        --trained-tasks passkey,niah_multivalue,... --out DIR

pairs evaluations made apart from a fine-tuning run (`python -m swaa_ext.recipes.eval` folders):
the original model's (--before) and each fine-tuned model's (--after) on the same prompts (the
same tasks, lengths, seed, samples and prompt style; one length), over the recipes they all ran.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ..report import SAME_PROMPTS, load_results
from ..scoring import mcnemar_exact

ALL = "all"


def _outcomes(evaluation: dict) -> dict[tuple[str, str, int], bool]:
    """(recipe, task, prompt index) -> correct, from an evaluation's records."""
    return {(r["config"], r["task"], r["index"]): bool(r["correct"])
            for r in evaluation["records"]}


def load_run(folder: Path) -> dict:
    """A finished run's evaluations and settings."""
    paths = {name: folder / f"{name}.json" for name in ("eval_before", "eval_after",
                                                        "before_after")}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise ValueError(f"{folder} is not a finished fine-tuning run: missing {missing}")
    run = {name: json.loads(p.read_text()) for name, p in paths.items()}
    run["folder"] = str(folder)
    return run


def load_evaluations(before: Path, afters: Sequence[Path], trained: Sequence[str]) -> list[dict]:
    """Harness evaluations of the original model (before) and of fine-tuned ones (afters) as
    runs for `pool`: one per after, over the recipes every evaluation ran."""
    first = load_results(before)
    evaluations = [(folder, load_results(folder)) for folder in afters]
    for folder, data in evaluations:
        differ = [k for k in SAME_PROMPTS if k != "model"
                  and data["meta"].get(k) != first["meta"].get(k)]
        if differ:
            raise ValueError(f"{folder} evaluated other prompts than {before}: "
                             f"{', '.join(differ)} differ")
    if len(first["meta"]["lengths"]) != 1 or len(first["meta"]["window_fractions"]) != 1:
        raise ValueError(f"{before}: pairing needs an evaluation of one length and one window")
    recipes = [row["name"] for row in first["summary"]
               if all(row["name"] in {r["name"] for r in data["summary"]}
                      for _, data in evaluations)]
    if "fa" not in recipes:
        raise ValueError("every evaluation must have run fa (after is compared with it)")

    def shared(data: dict) -> dict:
        return {"records": [r for r in data["records"] if r["config"] in recipes],
                "settings": {k: first["meta"].get(k) for k in SAME_PROMPTS if k != "model"}}

    meta = first["meta"]
    return [{"folder": str(folder), "eval_before": shared(first), "eval_after": shared(data),
             "before_after": {"meta": {
                 "model": meta["model"], "seed": meta["seed"], "length": meta["lengths"][0],
                 "window_fraction": meta["window_fractions"][0], "sinks": meta["sinks"],
                 "train_tasks": list(trained), "command": data["meta"].get("command"),
                 "before_command": meta.get("command")}}}
            for folder, data in evaluations]


def pool(runs: Sequence[dict]) -> list[dict]:
    """One row per (task group, recipe) over the runs: see the module docstring."""
    if not runs:
        raise ValueError("no runs to pool")
    settings = runs[0]["eval_before"].get("settings")
    for run in runs[1:]:
        if run["eval_before"].get("settings") != settings:
            raise ValueError(f"{run['folder']} was evaluated with other settings than "
                             f"{runs[0]['folder']}: its prompts are not the same pairs")
    trained = set(runs[0]["before_after"]["meta"]["train_tasks"])
    before = _outcomes(runs[0]["eval_before"])
    afters = [_outcomes(run["eval_after"]) for run in runs]
    recipes = list(dict.fromkeys(k[0] for k in before))
    tasks = list(dict.fromkeys(k[1] for k in before))
    rows = []
    for group in [ALL, *tasks]:
        for recipe in recipes:
            keys = [k for k in before if k[0] == recipe and (group == ALL or k[1] == group)]
            fa_keys = [("fa", k[1], k[2]) for k in keys]
            counts = {"both": 0, "only_before": 0, "only_after": 0, "neither": 0}
            per_run = []
            for after in afters:
                pairs = [(before[k], after[k]) for k in keys if k in after]
                if len(pairs) != len(keys):
                    raise ValueError("a run's evaluation lacks prompts the first one has")
                for b, a in pairs:
                    counts[{(True, True): "both", (True, False): "only_before",
                            (False, True): "only_after", (False, False): "neither"}[(b, a)]] += 1
                per_run.append(sum(a for _, a in pairs) / len(pairs))
            n = len(keys) * len(afters)
            after_right = counts["both"] + counts["only_after"]
            tuned_fa = sum(after.get(k, False) for after in afters for k in fa_keys)
            rows.append({
                "group": group, "in_training": group == ALL or group in trained,
                "recipe": recipe, "prompts": len(keys), "runs": len(afters),
                "before": sum(before[k] for k in keys) / len(keys),
                "after": after_right / n, "after_per_run": per_run,
                "after_vs_tuned_fa": after_right / tuned_fa if tuned_fa else None,
                "pairs": counts,
                "p_mcnemar": mcnemar_exact(counts["only_before"], counts["only_after"])})
    return rows


def markdown(rows: Sequence[dict], runs: Sequence[dict]) -> str:
    meta = runs[0]["before_after"]["meta"]
    lines = [f"{len(runs)} fine-tuning runs (training seeds) of `{meta['model']}`, evaluated on "
             f"the same {rows[0]['prompts']} prompts per recipe (evaluation seed {meta['seed']}, "
             f"~{meta['length']} tokens, window {meta['window_fraction']:g} of the prompt, "
             f"{meta['sinks']} sinks). 'after' pools the runs (each run's in brackets); pairs: "
             "prompts right only before / only after, over all runs; p: exact McNemar, two-sided.",
             "", "| tasks | in training | recipe | before | after (per run) | after vs tuned FA "
             "| only before / only after | p |", "|---|---|---|---:|---|---:|---|---:|"]
    for r in rows:
        per_run = ", ".join(f"{x:.2f}" for x in r["after_per_run"])
        vs = "—" if r["after_vs_tuned_fa"] is None else f"{r['after_vs_tuned_fa']:.0%}"
        lines.append(f"| {r['group']} | {'yes' if r['in_training'] else '**no**'} | "
                     f"{r['recipe']} | {r['before']:.2f} | {r['after']:.2f} ({per_run}) | {vs} | "
                     f"{r['pairs']['only_before']} / {r['pairs']['only_after']} | "
                     f"{r['p_mcnemar']:.3g} |")
    lines += ["", "Commands:", ""]
    if meta.get("before_command"):  # an evaluation of the original model, apart from the runs
        lines.append(f"- before: `{meta['before_command']}`")
    lines += [f"- `{run['before_after']['meta'].get('command', '?')}`" for run in runs]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m swaa_ext.recipes.finetune.experiment",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path, help="finished fine-tuning run folders")
    ap.add_argument("--before", type=Path, help="an evaluation of the original model")
    ap.add_argument("--after", type=Path, nargs="+", default=[],
                    help="evaluations of fine-tuned models on the same prompts")
    ap.add_argument("--trained-tasks", type=lambda t: [x for x in t.split(",") if x],
                    help="with --before: the task families the models were trained on")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if bool(args.runs) == bool(args.before or args.after):
        ap.error("give fine-tuning run folders, or --before and --after evaluations")
    if args.before and not (args.after and args.trained_tasks is not None):
        ap.error("--before needs --after and --trained-tasks")
    try:
        runs = (load_evaluations(args.before, args.after, args.trained_tasks) if args.before
                else [load_run(folder) for folder in args.runs])
        rows = pool(runs)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experiment.json").write_text(json.dumps(
        {"runs": [r["folder"] for r in runs], "rows": rows}, indent=1) + "\n")
    table = markdown(rows, runs)
    (args.out / "experiment.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
