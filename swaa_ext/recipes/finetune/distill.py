"""Self-distillation data: the unadapted full-attention model's own answers to long prompts.

Prompts come from the local task generators (all five families, random lengths and needle depths)
or from a JSONL file (one object per line with a `prompt` string or chat `messages`, optionally
`answers` and a `pattern` regex to check them). Each prompt gets the model's greedy generation
and, when asked, more samples drawn at a temperature (teacher_responder); each response is
kept only when a checker exists and says it is correct (and it is not a repeat of a kept one) (a file prompt without `answers` has no
checker: dropped, unless `keep_unchecked`). A target ends with the end-of-sequence token: a
response cut at `max_new_tokens` is trimmed right after the answer its checker found and closed
with it (an unchecked one cannot be trimmed: dropped). Every processed prompt is appended to
`distill.jsonl` at once, so an interrupted run resumes where it stopped: a record counts as done
only for the same teacher, prompt tokens and answer budget (its `key`), so a rerun with other
lengths, tasks, prompt style or model redoes its prompts instead of mixing in old answers;
`save_dataset` writes the kept examples as a `datasets` dataset with the generating command
recorded, and reports prompts and kept examples by task, prompt length and needle depth.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...hf import is_adapted
from ..prompts import PromptStyle, encode
from ..scoring import exact_match
from ..tasks import FILLERS, TASKS, TaskOptions, haystack_of, make_sample

RECORDS = "distill.jsonl"
DATASET = "dataset"
DEFAULT_FILE_NEW_TOKENS = 64

# (prompt ids, max new tokens, sample index) -> new token ids
Respond = Callable[[list[int], int, int], list[int]]


@dataclass(frozen=True)
class Prompt:
    """One prompt to distil; `answers` None means no checker."""
    id: str
    source: str
    text: str
    answers: tuple[str, ...] | None
    pattern: str | None = None
    exclude: tuple[str, ...] = ()
    max_new_tokens: int = DEFAULT_FILE_NEW_TOKENS
    task: str | None = None
    meta: dict = field(default_factory=dict)

    def check(self, completion: str) -> bool | None:
        """True / False when a checker exists, None otherwise."""
        if self.answers is None:
            return None
        pattern = self.pattern or "|".join(re.escape(a) for a in self.answers)
        return exact_match(completion, self.answers, f"(?:{pattern})", self.exclude)[0]


# Prompt lengths are drawn in LENGTH_STRATA equal parts of [min_tokens, max_tokens] and needle
# depths in DEPTH_STRATA quarters, cycling through the cells, so every length and depth is asked
# about equally often (the teacher's failures then show per cell: distribution).
LENGTH_STRATA, DEPTH_STRATA = 3, 4
FILLER_CHOICES = (*FILLERS, "mixed")  # mixed: each prompt's filler drawn at random


def task_prompts(tokenizer: PreTrainedTokenizerBase, tasks: Sequence[str], n: int,
                 min_tokens: int, max_tokens: int, seed: int,
                 style: PromptStyle = PromptStyle(),
                 options: TaskOptions = TaskOptions(), filler: str = "synthetic") -> list[Prompt]:
    """`n` prompts cycling through `tasks`; for each task, its prompts cycle through the cells of
    (depth quarter, length third of [min_tokens, max_tokens]), with a random length and depth
    inside the cell, reproducible from `seed`. `filler`: the haystack text (TaskOptions.filler),
    or "mixed": each prompt's drawn at random, half of them natural prose in expectation."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty list from {sorted(TASKS)}, got {list(tasks)}")
    if not 0 < min_tokens <= max_tokens:
        raise ValueError(f"need 0 < min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    if filler not in FILLER_CHOICES:
        raise ValueError(f"filler must be one of {FILLER_CHOICES}, got {filler!r}")
    rng = random.Random(f"swaa-distill/{seed}")
    span = (max_tokens - min_tokens + 1) / LENGTH_STRATA
    prompts = []
    for i in range(n):
        task, j = tasks[i % len(tasks)], i // len(tasks)
        quarter, third = j % DEPTH_STRATA, j // DEPTH_STRATA % LENGTH_STRATA
        low = min_tokens + int(third * span)
        high = max(low, min_tokens + int((third + 1) * span) - 1)
        length, depth = rng.randint(low, high), round((quarter + rng.random()) / DEPTH_STRATA, 3)
        text = filler if filler != "mixed" else ("natural" if rng.random() < 0.5 else "synthetic")
        s = make_sample(tokenizer, task, length, depth, index=i, seed=seed,
                        options=dataclasses.replace(options, filler=text), style=style)
        prompts.append(Prompt(f"task/{seed}/{i}", f"task:{task}", s.prompt, s.answers, s.pattern,
                              s.exclude, s.max_new_tokens, task,
                              {"target_tokens": length, "depth": depth,
                               "filler": haystack_of(task, text),
                               "cell": f"{task}/length{third}/depth{quarter}"}))
    return prompts


def file_prompts(path: Path, tokenizer: PreTrainedTokenizerBase,
                 style: PromptStyle = PromptStyle()) -> list[Prompt]:
    """Prompts from a JSONL file: `prompt` (text, rendered with the chat template like the task
    prompts) or `messages` (a chat, rendered as is); optional `answers`, `pattern`,
    `max_new_tokens`, `id`."""
    from ..prompts import render

    prompts = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            if "messages" in row:
                text = tokenizer.apply_chat_template(row["messages"], tokenize=False,
                                                     add_generation_prompt=True)
            elif isinstance(row.get("prompt"), str):
                text = render(tokenizer, style, row["prompt"], "")
            else:
                raise ValueError(f"{where}: each line needs a `prompt` string or chat `messages`")
            answers = row.get("answers")
            if isinstance(answers, str):
                answers = [answers]
            prompts.append(Prompt(str(row.get("id", f"file/{path.name}/{line_no}")),
                                  f"file:{path.name}", text,
                                  None if answers is None else tuple(map(str, answers)),
                                  row.get("pattern"),
                                  max_new_tokens=int(row.get("max_new_tokens",
                                                             DEFAULT_FILE_NEW_TOKENS))))
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def teacher_responder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      temperature: float = 0.0, seed: int = 0) -> Respond:
    """Generation by the unadapted model (the teacher is the model before SWA): sample 0 of a
    prompt greedy, samples 1, 2, ... drawn at `temperature` (> 0; no top-k / top-p), each from
    a generator seeded by (seed, prompt tokens, sample index), so a rerun draws the same."""
    if is_adapted(model):
        raise ValueError("distillation needs the unadapted full-attention model as the teacher; "
                         "this one was adapted (swaa_ext.restore(model) first)")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def respond(prompt_ids: list[int], max_new_tokens: int, sample: int = 0) -> list[int]:
        if sample > 0 and temperature == 0:
            raise ValueError("several samples per prompt need a temperature > 0 (greedy "
                             "answers would all be the same)")
        ids = torch.tensor([prompt_ids], device=device)
        generate = functools.partial(model.generate, ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=max_new_tokens, pad_token_id=pad)
        with torch.inference_mode():
            if sample == 0:
                out = generate(do_sample=False, temperature=None, top_p=None, top_k=None)
                return out[0, ids.shape[1]:].tolist()
            # A draw of its own, whatever ran before: the global generator seeded for it and
            # restored after.
            digest = hashlib.sha256(json.dumps([seed, list(prompt_ids), sample]).encode()).digest()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
                out = generate(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        return out[0, ids.shape[1]:].tolist()

    return respond


def _done(records: Path) -> dict[str, dict]:
    """Records already written; a line cut short by an interruption is ignored (redone)."""
    done = {}
    if records.exists():
        for line in records.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[row["id"]] = row
    return done


def record_key(teacher: str, prompt_ids: Sequence[int], max_new_tokens: int,
               sample: int = 0) -> str:
    """What a record's answer depends on: the teacher (with its temperature and seed when it
    samples), the prompt's tokens (its task, length, needle and prompt style), the answer budget
    and which sample of the prompt it is."""
    payload = json.dumps([teacher, list(prompt_ids), max_new_tokens] + ([sample] if sample else []))
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def closed_target(p: Prompt, new: list[int], tokenizer: PreTrainedTokenizerBase,
                  correct: bool | None) -> tuple[list[int] | None, bool]:
    """The training target of a response: as it is when the teacher ended it (end-of-sequence);
    a checked-correct response cut at the token budget trimmed after its answer (the shortest
    prefix the checker accepts) and closed with the end-of-sequence token; None for an unchecked
    cut one (nothing says where it should end). Returns (target, trimmed)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no end-of-sequence token to close the targets with")
    if new and new[-1] == eos:
        return new, False
    if not correct:
        return None, False
    for k in range(1, len(new) + 1):
        if p.check(tokenizer.decode(new[:k], skip_special_tokens=True)):
            return new[:k] + [eos], True
    return None, False  # (unreachable: the whole response was checked correct)


def sample_id(prompt_id: str, sample: int) -> str:
    """The record id of sample `sample` of a prompt (sample 0: the prompt's own id)."""
    return prompt_id if sample == 0 else f"{prompt_id}~{sample}"


def distill(prompts: Sequence[Prompt], respond: Respond, tokenizer: PreTrainedTokenizerBase,
            out_dir: Path, max_context: int, style: PromptStyle = PromptStyle(),
            keep_unchecked: bool = False, progress: bool = True, teacher: str = "",
            samples: int = 1, per_cell: int | None = None) -> list[dict]:
    """Runs the teacher `samples` times on every prompt (sample 0 greedy, the others drawn:
    teacher_responder) where not already in `out_dir/distill.jsonl` (for the same `teacher`
    name, prompt tokens, budget and sample) and returns the records (kept and rejected), a
    prompt's samples together. A correct sample whose target repeats an earlier kept one of the
    same prompt is not kept again (`duplicate`). With `per_cell`, the prompts are a budget
    taken in order: a sample runs only while its prompt's cell (`meta["cell"]` of task_prompts:
    task, length third, depth quarter; else its source) holds fewer than `per_cell` kept
    examples, so the kept set is balanced where the teacher allows it (skipped samples get no
    record). A prompt that cannot fit the model's context with its answer is an error, before
    any generation."""
    if not prompts:
        raise ValueError("no prompts to distil")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if per_cell is not None and per_cell < 1:
        raise ValueError(f"per_cell must be >= 1, got {per_cell}")
    encoded = []
    for p in prompts:
        ids = encode(tokenizer, style, p.text)
        if len(ids) + p.max_new_tokens > max_context:
            raise ValueError(f"prompt {p.id} has {len(ids)} tokens + {p.max_new_tokens} new ones, "
                             f"more than the model's context of {max_context} tokens")
        encoded.append(ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    records_path = out_dir / RECORDS
    jobs = [(p, ids, s) for p, ids in zip(prompts, encoded) for s in range(samples)]
    keys = {sample_id(p.id, s): record_key(teacher, ids, p.max_new_tokens, s)
            for p, ids, s in jobs}
    done = {i: row for i, row in _done(records_path).items() if row.get("key") == keys.get(i)}
    # In order, so a resumed run takes the same prompts as one that was never interrupted.
    kept_in: dict[str, int] = {}
    out = []
    with open(records_path, "a") as f, tqdm(total=len(jobs), desc="distil",
                                             disable=not progress) as bar:
        for p, ids, s in jobs:
            bar.update()
            rid = sample_id(p.id, s)
            cell = p.meta.get("cell", p.source)
            if per_cell is not None and kept_in.get(cell, 0) >= per_cell:
                continue  # its cell is full
            row = done.get(rid)
            if row is None:
                row = _respond_record(p, ids, s, rid, keys[rid], respond, tokenizer,
                                      keep_unchecked, done)
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[rid] = row
            kept_in[cell] = kept_in.get(cell, 0) + bool(row["kept"])
            out.append(row)
            bar.set_postfix_str(f"kept {sum(r['kept'] for r in out)}", refresh=False)
    return out


def _respond_record(p: Prompt, ids: list[int], s: int, rid: str, key: str, respond: Respond,
                    tokenizer: PreTrainedTokenizerBase, keep_unchecked: bool,
                    done: dict[str, dict]) -> dict:
    """Sample `s` of prompt `p` from the teacher, checked, closed and compared with the prompt's
    earlier samples (`done`): its record."""
    new = respond(ids, p.max_new_tokens, s)
    correct = p.check(tokenizer.decode(new, skip_special_tokens=True))
    target, trimmed = closed_target(p, new, tokenizer, correct)
    kept = target is not None and (bool(correct) or keep_unchecked)
    target = new if target is None else target
    earlier = (done.get(sample_id(p.id, k)) for k in range(s))
    duplicate = kept and any(r is not None and r["kept"] and r["response_ids"] == target
                             for r in earlier)
    return {"id": rid, "key": key, "source": p.source, "task": p.task, "meta": p.meta,
            "sample": s, "prompt_ids": ids, "response_ids": target,
            "response": tokenizer.decode(target, skip_special_tokens=True),
            "generated_tokens": len(new), "trimmed": trimmed,
            "answers": None if p.answers is None else list(p.answers),
            "checked": correct is not None, "correct": correct,
            "duplicate": duplicate, "kept": kept and not duplicate}


# Prompt-length buckets (tokens, upper bounds; the last is open) of the distribution report.
LENGTH_BUCKETS = (1024, 2048, 4096, 8192)


def _length_bucket(tokens: int) -> str:
    for bound in LENGTH_BUCKETS:
        if tokens < bound:
            return f"<{bound}"
    return f">={LENGTH_BUCKETS[-1]}"


def _depth_bucket(depth: float | None) -> str:
    if depth is None:
        return "none"  # (file prompts: no needle)
    quarter = min(int(depth * 4), 3)
    return f"{quarter / 4:.2f}-{(quarter + 1) / 4:.2f}"


def distribution(records: Sequence[dict]) -> dict:
    """Teacher responses (a prompt's samples each) and kept examples by task (or source), prompt
    length (tokens, LENGTH_BUCKETS), needle depth (quarters) and haystack text (task_prompts'
    filler; "none" for file prompts): where the training set comes
    from once the teacher's wrong answers are dropped (it fails more on long prompts and deep
    needles)."""
    keys = {"task": lambda r: r.get("task") or r["source"],
            "length": lambda r: _length_bucket(len(r["prompt_ids"])),
            "depth": lambda r: _depth_bucket((r.get("meta") or {}).get("depth")),
            "filler": lambda r: (r.get("meta") or {}).get("filler", "none")}
    out = {}
    for name, key in keys.items():
        cells: dict[str, dict[str, int]] = {}
        for r in records:
            cell = cells.setdefault(key(r), {"responses": 0, "kept": 0})
            cell["responses"] += 1
            cell["kept"] += bool(r["kept"])
        out[f"by_{name}"] = dict(sorted(cells.items()))
    return out


def save_dataset(records: Sequence[dict], out_dir: Path, command: str, teacher: str):
    """The kept examples as a `datasets.Dataset` under out_dir/dataset (load it back with
    `datasets.load_from_disk`); the command and counts are in its description and in
    `distill_info.json`."""
    from datasets import Dataset, DatasetInfo

    kept = [r for r in records if r["kept"]]
    if not kept:
        raise ValueError(f"none of the {len(records)} distilled responses was kept (checked "
                         "correct): nothing to train on. Use shorter prompts (the teacher fails "
                         "more often on long ones), more prompts, or keep_unchecked for file "
                         "prompts without answers")
    info = {"command": command, "teacher": teacher, "prompts": len(records), "kept": len(kept),
            "trimmed_after_answer": sum(bool(r.get("trimmed")) for r in kept),
            "kept_by_source": {s: sum(r["source"] == s for r in kept)
                               for s in sorted({r["source"] for r in records})},
            "distribution": distribution(records)}
    columns = ("id", "source", "task", "prompt_ids", "response_ids", "response")
    dataset = Dataset.from_list([{c: r[c] for c in columns} for r in kept],
                                info=DatasetInfo(description=json.dumps(info)))
    dataset.save_to_disk(str(out_dir / DATASET))
    (out_dir / "distill_info.json").write_text(json.dumps(info, indent=1) + "\n")
    return dataset
