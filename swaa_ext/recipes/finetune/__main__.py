"""SWA fine-tuning, end to end: `python -m swaa_ext.recipes.finetune {all,distill,train,evaluate}`.

  distill   the unadapted model answers long prompts; checked-correct answers become the dataset
  train     LoRA (or full) fine-tuning of the adapted model on it, packed, through the Trainer
  evaluate  the harness before and after, on held-out seeds (one table)
  all       the three in order (each step reuses what an earlier run of the same settings left
            in --out: distilled records, a finished training stage, the original model's
            evaluation)

--quick finishes in about 15 minutes on 2 CPU cores with SmolLM2-135M: a small real run (80
short prompts, about 25 optimizer steps, 6 evaluation prompts per task and recipe), not a
measurement.

Output directory: distill/ (distill.jsonl, dataset/, distill_info.json), trainer/ (the last
checkpoint), train_stage.json, adapter/, merged/, train_log.json, loss.png, eval_before.json,
eval_after.json, before_after.md / .json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ... import hf
from ..eval import DTYPES, _csv
from ..grid import RECOMMENDED, parse_recipe
from ..models import add_model_argument, load
from ..prompts import PromptStyle
from ..tasks import TASKS
from . import distill as distilling
from . import evaluate as evaluating
from .train import LoraSettings, TrainSettings, train

# Families left out of training by default, to measure transfer rather than format: one that
# shares its instruction, needle and question with a trained family (niah_multivalue), and one
# that shares none (library_notes: archive records in documentation prose).
NEAR_TRANSFER, HELD_OUT = "niah_multikey", "library_notes"
# --quick: a small real run (~15 min on 2 cores), enough optimizer steps to change the model.
QUICK = dict(distill_samples=80, min_tokens=256, max_tokens=768, eval_length=512, eval_samples=6,
             epochs=3.0, kept_per_cell=None)
FULL = dict(distill_samples=400, min_tokens=512, max_tokens=2048, eval_length=2048,
            eval_samples=50, epochs=2.0, kept_per_cell=6)
# Distillation flags that only the task generators read (not a --prompts-file).
GENERATOR_ONLY = ("train_tasks", "filler", "distill_samples", "min_tokens", "max_tokens")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m swaa_ext.recipes.finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("all", "distill", "train", "evaluate"), nargs="?",
                   default="all")
    add_model_argument(p)
    p.add_argument("--out", type=Path, default=Path("finetune_results"))
    p.add_argument("--quick", action="store_true", help="small real run (~15 min on 2 cores)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    d = p.add_argument_group("distillation")
    d.add_argument("--train-tasks", type=_csv(str),
                   help=f"task families to distil (default: all but {NEAR_TRANSFER} and "
                        f"{HELD_OUT})")
    d.add_argument("--filler", choices=distilling.FILLER_CHOICES,
                   help="haystack text of the training prompts: the tasks' template sentences, "
                        "Python's documentation prose, or each prompt either at random "
                        "(default mixed)")
    d.add_argument("--kept-per-cell", type=int,
                   help="balance: stop distilling a (task, length third, depth quarter) cell "
                        f"once it holds this many kept examples (default {FULL['kept_per_cell']}"
                        ", quick: no cap); --distill-samples is then the prompt budget")
    d.add_argument("--prompts-file", type=Path, help="JSONL prompts instead of the task "
                   "generators (`prompt` or `messages`, optional `answers`, `pattern`)")
    d.add_argument("--keep-unchecked", action="store_true",
                   help="keep file prompts that have no answers to check")
    d.add_argument("--distill-samples", type=int, help=f"prompts (default {FULL['distill_samples']}"
                   f", quick {QUICK['distill_samples']})")
    d.add_argument("--min-tokens", type=int, help="shortest training prompt")
    d.add_argument("--max-tokens", type=int, help="longest training prompt")
    d.add_argument("--distill-seed", type=int, default=1)
    d.add_argument("--teacher-samples", type=int, default=1,
                   help="teacher responses per prompt: the greedy one, then ones drawn at "
                        "--temperature; the correct, distinct ones are kept")
    d.add_argument("--temperature", type=float, default=0.7,
                   help="the teacher's sampling temperature for samples past the first")
    d.add_argument("--thinking", action="store_true", help="chain-of-thought prompts and answers")
    d.add_argument("--thinking-budget", type=int, default=PromptStyle.thinking_budget,
                   help="with --thinking: new tokens the teacher and the evaluated model may "
                        "spend reasoning")
    d.add_argument("--answer-prefix", action="store_true",
                   help="start the answer for the model (RULER-style); used for evaluation too")
    t = p.add_argument_group("training")
    t.add_argument("--train-recipe", default=RECOMMENDED,
                   help="the SWAA recipe trained under (recipes/grid.py grammar); its window is "
                        "--window-fraction of --eval-length")
    t.add_argument("--window-fraction", type=float, default=0.125)
    t.add_argument("--sinks", type=int, default=64)
    t.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    t.add_argument("--lora-rank", type=int, default=16)
    t.add_argument("--lora-alpha", type=int, default=32)
    t.add_argument("--lora-dropout", type=float, default=0.1)
    t.add_argument("--no-rslora", action="store_true")
    t.add_argument("--lora-targets", type=_csv(str), default=["q_proj", "k_proj", "v_proj"])
    t.add_argument("--lr", type=float, help="learning rate (default 1e-4 LoRA, 1e-5 full)")
    t.add_argument("--epochs", type=float)
    t.add_argument("--max-steps", type=int, default=-1)
    t.add_argument("--examples-per-batch", type=int, default=4, help="packed into one row")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--train-seed", type=int, default=0,
                   help="seed of the adapter's initialisation, dropout and data order (runs of "
                        "several seeds: python -m swaa_ext.recipes.finetune.experiment)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-tasks", type=_csv(str), help=f"default: passkey, {NEAR_TRANSFER} "
                   f"and {HELD_OUT} (the two held out of training)")
    e.add_argument("--eval-length", type=int)
    e.add_argument("--eval-samples", type=int)
    e.add_argument("--eval-seed", type=int, default=0)
    return p


def settle(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the quick / full defaults and checks the arguments."""
    if args.prompts_file is not None:
        # These shape the generated prompts; a prompts file replaces them, so naming one with it
        # would be silently ignored.
        given = [name for name in GENERATOR_ONLY if getattr(args, name) is not None]
        if given:
            raise SystemExit("--prompts-file replaces the task generators; drop " + ", ".join(
                "--" + name.replace("_", "-") for name in given))
    if args.train_tasks is None:
        args.train_tasks = [t for t in TASKS if t not in (NEAR_TRANSFER, HELD_OUT)]
    if args.filler is None:
        args.filler = "mixed"
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.eval_tasks is None:
        args.eval_tasks = ["passkey", NEAR_TRANSFER, HELD_OUT]
    for name in ("train_tasks", "eval_tasks"):
        unknown = [t for t in getattr(args, name) if t not in TASKS]
        if unknown:
            raise SystemExit(f"--{name.replace('_', '-')}: unknown task(s) {unknown}; choose "
                             f"from {', '.join(TASKS)}")
    if args.eval_seed == args.distill_seed:
        raise SystemExit("--eval-seed must differ from --distill-seed: evaluation is on "
                         "held-out prompts")
    if args.kept_per_cell is not None and args.kept_per_cell < 0:
        raise SystemExit(f"--kept-per-cell must be >= 0 (0: no cap), got {args.kept_per_cell}")
    args.kept_per_cell = args.kept_per_cell or None
    if args.teacher_samples < 1:
        raise SystemExit(f"--teacher-samples must be >= 1, got {args.teacher_samples}")
    if args.teacher_samples > 1 and args.temperature <= 0:
        raise SystemExit("--teacher-samples > 1 needs --temperature > 0 (greedy answers would "
                         "all be the same)")
    if args.thinking_budget < 1:
        raise SystemExit(f"--thinking-budget must be >= 1, got {args.thinking_budget}")
    if args.lr is None:
        args.lr = 1e-5 if args.full else 1e-4
    if args.threads:
        torch.set_num_threads(args.threads)
    args.style = PromptStyle(thinking=args.thinking, answer_prefix=args.answer_prefix,
                             thinking_budget=args.thinking_budget)
    args.train_window = max(1, round(args.window_fraction * args.eval_length))
    args.command = f"{build_parser().prog} {shlex.join(sys.argv[1:])}"
    return args


def _max_context(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 1 << 30))


def step_distill(args: argparse.Namespace) -> list[dict]:
    model, tokenizer = load(args.model, DTYPES[args.dtype], args.device)
    if args.prompts_file is not None:
        prompts = distilling.file_prompts(args.prompts_file, tokenizer, args.style)
    else:
        prompts = distilling.task_prompts(tokenizer, args.train_tasks, args.distill_samples,
                                          args.min_tokens, args.max_tokens, args.distill_seed,
                                          args.style, filler=args.filler)
    folder = args.out / "distill"
    # Drawn samples depend on the temperature and seed: part of the teacher's name for them.
    teacher = f"{args.model}/{args.dtype}"
    if args.teacher_samples > 1:
        teacher += f"/temperature={args.temperature}/seed={args.distill_seed}"
    respond = distilling.teacher_responder(model, tokenizer, args.temperature, args.distill_seed)
    records = distilling.distill(prompts, respond, tokenizer, folder, _max_context(model),
                                 args.style, args.keep_unchecked, progress=not args.quiet,
                                 teacher=teacher, samples=args.teacher_samples,
                                 per_cell=args.kept_per_cell)
    distilling.save_dataset(records, folder, args.command, args.model)
    kept = sum(r["kept"] for r in records)
    print(f"distilled {len(records)} responses, kept {kept} checked-correct answers "
          f"-> {folder / distilling.DATASET}")
    for name, cells in distilling.distribution(records).items():
        print(f"  kept / responses {name.replace('_', ' ')}: " + ", ".join(
            f"{cell} {c['kept']}/{c['responses']}" for cell, c in cells.items()))
    return records


TRAIN_STAGE = "train_stage.json"  # the training stage's settings, and whether it finished


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def step_train(args: argparse.Namespace):
    """Trains unless `all` finds this stage finished with the same settings (train_stage.json);
    an unfinished run of the same settings resumes from its last checkpoint, other settings
    start over (their checkpoints are removed)."""
    from datasets import load_from_disk

    path = args.out / "distill" / distilling.DATASET
    if not path.exists():
        raise SystemExit(f"no distilled dataset at {path}: run the distill step first")
    swaa = parse_recipe(args.train_recipe, args.window_fraction, args.sinks) \
        .swaa_config(args.eval_length)
    if swaa is None:
        raise SystemExit(f"--train-recipe {args.train_recipe!r} is not a SWAA recipe")
    lora = None if args.full else LoraSettings(args.lora_rank, args.lora_alpha,
                                               args.lora_dropout, not args.no_rslora,
                                               tuple(args.lora_targets))
    settings = TrainSettings(lora=lora, learning_rate=args.lr, epochs=args.epochs,
                             max_steps=args.max_steps, examples_per_batch=args.examples_per_batch,
                             gradient_checkpointing=args.gradient_checkpointing,
                             seed=args.train_seed)
    stage = json.loads(json.dumps(
        {"model": args.model, "dtype": args.dtype, "swaa": swaa.to_dict(),
         "settings": asdict(settings),
         "dataset": _read_json(args.out / "distill" / "distill_info.json")}, default=str))
    stage_path = args.out / TRAIN_STAGE
    previous = _read_json(stage_path) or {}
    same = previous.get("stage") == stage
    if same and previous.get("finished") and args.step == "all" and \
            (args.out / "merged").is_dir():
        print(f"train: finished before with the same settings ({stage_path}); skipped")
        return None
    if not same or previous.get("finished"):  # start over: no checkpoint of other settings
        shutil.rmtree(args.out / "trainer", ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stage_path.write_text(json.dumps({"stage": stage, "finished": False}, indent=1) + "\n")
    records = list(load_from_disk(str(path)))
    model, tokenizer = load(args.model, DTYPES[args.dtype], args.device)
    result = train(model, tokenizer, records, swaa, args.out, settings, progress=not args.quiet)
    stage_path.write_text(json.dumps({"stage": stage, "finished": True}, indent=1) + "\n")
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    if losses:
        print(f"trained {len(losses)} steps under {args.train_recipe} (window "
              f"{swaa.window}): loss {losses[0]:.3f} -> {losses[-1]:.3f}; merged model in "
              f"{result.paths['merged']}")
    return result


def _load_merged(args: argparse.Namespace):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = args.out / "merged"
    if not folder.exists():
        raise SystemExit(f"no fine-tuned model at {folder}: run the train step first")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[args.dtype])
    hf.adapt(model)   # its saved config.swaa; then back to full attention for the harness
    hf.restore(model)
    return model.to(args.device).eval(), AutoTokenizer.from_pretrained(folder)


def _evaluate(args: argparse.Namespace, model, tokenizer) -> dict:
    return evaluating.evaluate(model, tokenizer, args.eval_tasks, args.eval_length,
                               args.eval_samples, args.eval_seed, args.window_fraction,
                               args.sinks, args.style, evaluating.eval_recipes(args.train_recipe),
                               progress=not args.quiet)


def _eval_settings(args: argparse.Namespace) -> dict:
    """Everything an evaluation's numbers depend on (besides the model's weights)."""
    return {"model": args.model, "dtype": args.dtype, "tasks": list(args.eval_tasks),
            "length": args.eval_length, "samples": args.eval_samples, "seed": args.eval_seed,
            "window_fraction": args.window_fraction, "sinks": args.sinks,
            "thinking": args.thinking,
            "thinking_budget": args.thinking_budget if args.thinking else None,
            "answer_prefix": args.answer_prefix,
            "recipes": list(evaluating.eval_recipes(args.train_recipe))}


def step_evaluate(args: argparse.Namespace) -> str:
    before_path = args.out / "eval_before.json"
    settings = _eval_settings(args)
    before = _read_json(before_path)
    if before is None or before.get("settings") != settings:
        # (an earlier run of the original model is reused only under the same settings)
        before = _evaluate(args, *load(args.model, DTYPES[args.dtype], args.device))
        before["settings"] = settings
        evaluating.write(before_path, before)
    after = _evaluate(args, *_load_merged(args))
    after["settings"] = settings
    evaluating.write(args.out / "eval_after.json", after)
    meta = {"model": args.model, "samples": args.eval_samples, "length": args.eval_length,
            "window_fraction": args.window_fraction, "sinks": args.sinks, "seed": args.eval_seed,
            "distill_seed": args.distill_seed, "train_seed": args.train_seed,
            "train_tasks": args.train_tasks,
            "command": args.command}
    rows = evaluating.comparison(before, after, args.train_tasks)
    table = evaluating.markdown(rows, meta) + "\n" + evaluating.depth_markdown(before, after)
    (args.out / "before_after.md").write_text(table)
    evaluating.write(args.out / "before_after.json", {"meta": meta, "rows": rows})
    return table


def main(argv: list[str] | None = None) -> int:
    args = settle(build_parser().parse_args(argv))
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step in ("all", "distill"):
        step_distill(args)
    if args.step in ("all", "train"):
        step_train(args)
    if args.step in ("all", "evaluate"):
        print(step_evaluate(args))
    print(f"done in {time.perf_counter() - started:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
