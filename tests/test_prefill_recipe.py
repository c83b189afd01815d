"""The prefill-only timing recipe (swaa_ext/recipes/prefill.py): per-repetition ratios against
the full-attention baselines beside the FLOP model, the model left as it was, bad input refused,
and the CLI end to end on a model directory with its JSON."""

from __future__ import annotations

import json

import pytest
import torch
from eval_fixtures import byte_tokenizer, tiny_llama, tiny_model_dir

from swaa_ext.recipes import cost, prefill
from swaa_ext.recipes.grid import build_grid


def test_rows_ratios_and_the_flop_model():
    model = tiny_llama(len(byte_tokenizer()))
    ids = torch.randint(0, 200, (1, 300))
    with torch.no_grad():
        before = model(ids).logits
    grid = build_grid(["fa", "fa_kernel", "swa+sinks+fa_decode+layers:1", "swa"], [0.125], 4)
    rows = prefill.measure(model, grid, [256, 512], reps=3)
    assert [(r["length"], r["config"]) for r in rows] == [
        (n, e.name) for n in (256, 512) for e in grid]
    hf = model.config.to_dict()
    for r in rows:
        assert len(r["seconds"]) == 3 and all(s > 0 for s in r["seconds"])
        assert r["median_s"] == sorted(r["seconds"])[1]
        by = {row["config"]: row for row in rows if row["length"] == r["length"]}
        for base in ("fa", "fa_kernel"):
            s = r["speedup"][base]
            ratios = [b / m for b, m in zip(by[base]["seconds"], r["seconds"])]
            assert s["median"] == sorted(ratios)[1]
            assert (s["low"], s["high"]) == (min(ratios), max(ratios))
            assert s["predicted"] == by[base]["prompt_flops"] / r["prompt_flops"]
        entry = next(e for e in grid if e.name == r["config"])
        expected = cost.prompt_flops(hf, r["length"], entry.swaa_config(r["length"])
                                     if entry.window_fraction else None)
        assert r["prompt_flops"] == expected
    at = {(r["length"], r["config"]): r for r in rows}
    assert at[(512, "fa")]["speedup"]["fa"]["median"] == 1.0
    assert at[(512, "fa_kernel")]["speedup"]["fa"]["predicted"] == 1.0
    one_full = at[(512, "swa+sinks+fa_decode+layers:1@0.125")]
    every = at[(512, "swa@0.125")]
    assert one_full["window"] == every["window"] == 64
    assert one_full["full_attention_layers"] == (1,)
    # fewer windowed layers, fewer FLOPs saved; longer prompts, more saved
    assert 1 < one_full["speedup"]["fa"]["predicted"] < every["speedup"]["fa"]["predicted"]
    assert every["speedup"]["fa"]["predicted"] > at[(256, "swa@0.125")]["speedup"]["fa"]["predicted"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)
    table = prefill.markdown(rows)
    assert "| 512 | swa@0.125 | 64 |" in table and "vs fa_kernel" in table


def test_bad_input_is_refused():
    model = tiny_llama(len(byte_tokenizer()))
    grid = build_grid(["fa"], [0.125], 4)
    with pytest.raises(ValueError, match="reps must be >= 1"):
        prefill.measure(model, grid, [64], reps=0)
    for lengths in ([], [64, 0]):
        with pytest.raises(ValueError, match="lengths must be"):
            prefill.measure(model, grid, lengths, reps=1)


def test_cli_on_a_model_directory(tmp_path, capsys):
    model_dir = tiny_model_dir(tmp_path / "tiny")
    out = tmp_path / "prefill.json"
    assert prefill.main(["--model", model_dir, "--lengths", "128", "--configs", "fa,swa",
                         "--window-fractions", "0.25", "--reps", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["length"], r["config"], r["window"]) for r in data["rows"]] == [
        (128, "fa", None), (128, "swa@0.25", 32)]
    assert data["settings"]["reps"] == 2
    assert "| 128 | swa@0.25 | 32 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        prefill.main(["--model", model_dir, "--reps", "0"])
    assert "--reps must be >= 1" in capsys.readouterr().err
