"""The grid runner and the CLI end to end on a tiny random-weight Llama (accuracy is meaningless
here, ~0: these tests check the plumbing)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from eval_fixtures import byte_tokenizer, tiny_llama, tiny_model_dir
from swaa_ext.recipes import eval as eval_cli
from swaa_ext.recipes.grid import build_grid
from swaa_ext.recipes.runner import run_grid
from swaa_ext.recipes.tasks import make_samples

RECIPES = ["fa", "fa_kernel", "swa", "swa+sinks+fa_decode+odd"]


@pytest.mark.slow  # every recipe over every sample
def test_run_grid_records_every_sample_under_every_config_and_restores_the_model():
    tokenizer = byte_tokenizer()
    model = tiny_llama(len(tokenizer))
    samples = make_samples(tokenizer, ["passkey", "kv_retrieval"], [400], [0.5], n=1, seed=0)
    grid = build_grid(RECIPES, [0.25], sinks=4)
    records = run_grid(model, tokenizer, samples, grid, progress=False)

    assert [(r.task, r.config) for r in records] == \
        [(s.task, e.name) for s in samples for e in grid]
    for r in records:
        assert r.n_tokens == next(s.n_tokens for s in samples if s.task == r.task)
        assert 1 <= r.new_tokens and r.prefill_s > 0 and r.decode_s >= 0 and r.kv_cache_bytes > 0
        assert isinstance(r.correct, bool) and r.completion is not None
        assert r.window == (None if r.config in ("fa", "fa_kernel") else round(0.25 * r.n_tokens))
    by = {(r.task, r.config): r for r in records}
    for s in samples:  # our kernel at full width computes what the model's own attention does
        assert by[(s.task, "fa")].completion == by[(s.task, "fa_kernel")].completion
    assert model.config._attn_implementation == "sdpa"
    assert not hasattr(model.config, "swaa")


def test_window_changes_what_the_model_computes():
    tokenizer = byte_tokenizer()
    model = tiny_llama(len(tokenizer), seed=1)
    samples = [dataclasses.replace(s, max_new_tokens=12)
               for s in make_samples(tokenizer, ["passkey"], [500], [0.5], n=1, seed=3)]
    records = run_grid(model, tokenizer, samples, build_grid(["fa", "swa"], [0.02], 0),
                       warmup=False, progress=False)
    assert records[0].completion != records[1].completion


@pytest.mark.slow  # the whole eval CLI: every recipe over two tasks
def test_cli_end_to_end_on_a_model_directory(tmp_path, capsys):
    model_dir = tiny_model_dir(tmp_path / "tiny")
    out = tmp_path / "out"
    code = eval_cli.main(["--model", model_dir, "--tasks", "passkey,kv_retrieval",
                          "--lengths", "400", "--samples", "2", "--configs", ",".join(RECIPES),
                          "--window-fractions", "0.25", "--sinks", "4", "--out", str(out),
                          "--quiet"])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert len(data["records"]) == 2 * 2 * len(RECIPES)
    assert [row["n"] for row in data["summary"]] == [4] * len(RECIPES)
    assert data["meta"]["threads"] == torch.get_num_threads()
    assert "| swa+sinks+fa_decode+odd@0.25 |" in (out / "results.md").read_text()
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "| fa |" in capsys.readouterr().out
