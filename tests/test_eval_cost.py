"""The trade-off section of `make demo` (swaa_ext/recipes/cost.py): the FLOP model against a count
by hand and the reference rule, the timing rows on a tiny model (which leaves the model as it
was), and the demo's CLI end to end with both sections on a model directory."""

from __future__ import annotations

import json

import pytest
import torch
from eval_fixtures import byte_tokenizer, tiny_llama, tiny_model_dir

from swaa_ext import SWAAConfig, demo, reference
from swaa_ext.recipes import cost
from swaa_ext.recipes.grid import build_grid

HF = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
          num_hidden_layers=4, vocab_size=300)


def test_keys_seen_is_the_reference_rule_s_pair_count():
    for length, window, sinks in ((50, None, 0), (50, 7, 0), (50, 7, 3), (9, 20, 4), (64, 1, 5)):
        mask = reference.visible(length, length, window, sinks)
        assert cost.keys_seen(length, window, sinks) == int(mask.sum())


def test_prompt_flops_by_hand():
    length = 100
    per_token_linear = 2 * 4 * (64 * 16 * (2 * 4 + 2 * 2) + 3 * 64 * 96)
    linear = per_token_linear * length + 2 * 64 * 300
    full = 4 * (4 * 4 * 16 * (100 * 101 // 2))
    assert cost.prompt_flops(HF, length, None) == linear + full
    swaa = SWAAConfig(window=10, sinks=2, full_attention_layers=[1])
    windowed = 4 * 4 * 16 * cost.keys_seen(100, 10, 2)
    assert cost.prompt_flops(HF, length, swaa) == linear + full // 4 + 3 * windowed
    assert cost.prompt_flops(HF, length, swaa) < cost.prompt_flops(HF, length, None)


def test_long_prompt_costs_rows_and_the_model_left_alone():
    tokenizer = byte_tokenizer()
    model = tiny_llama(len(tokenizer))
    ids = torch.randint(0, 200, (1, 300))
    with torch.no_grad():
        before = model(ids).logits
    grid = build_grid(["fa", "swa+sinks+fa_decode+odd", "swa+sinks"], [0.125], 4)
    rows = cost.long_prompt_costs(model, tokenizer, grid, [256, 512], new_tokens=3)
    assert [(r["length"], r["config"]) for r in rows] == [
        (n, e.name) for n in (256, 512) for e in grid]
    for r in rows:
        assert r["prefill_s"] > 0 and r["decode_s_per_token"] > 0
        assert (r["window"] is None) == (r["config"] == "fa")
    base = [r for r in rows if r["config"] == "fa"]
    assert all(r["prefill_speedup"] == 1.0 and r["predicted_speedup"] == 1.0 for r in base)
    assert [r["window"] for r in rows if r["config"] == "swa+sinks@0.125"] == [32, 64]
    predicted = {(r["length"], r["config"]): r["predicted_speedup"] for r in rows}
    assert predicted[(512, "swa+sinks@0.125")] > predicted[(256, "swa+sinks@0.125")] > 1
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)
    assert "| 512 | swa+sinks@0.125 | 64 |" in cost.markdown(rows)


def test_demo_end_to_end_on_a_model_directory(tmp_path, capsys):
    model_dir = tiny_model_dir(tmp_path / "tiny")
    out = tmp_path / "out"
    code = demo.main(["--model", model_dir, "--lengths", "300", "--samples", "1",
                      "--depths", "0.5", "--sinks", "4", "--out", str(out), "--quiet",
                      "--cost-lengths", "256,384", "--cost-configs", "fa,swa+sinks"])
    assert code == 0
    rows = json.loads((out / "long_prompts.json").read_text())
    assert [(r["length"], r["config"]) for r in rows] == [
        (256, "fa"), (256, "swa+sinks@0.125"), (384, "fa"), (384, "swa+sinks@0.125")]
    markdown = (out / "results.md").read_text()
    assert "### What it costs at long prompts" in markdown and "| 384 | swa+sinks@0.125 |" in markdown
    printed = capsys.readouterr().out
    assert "What it costs at long prompts" in printed and "long_prompts.json" in printed
    code = demo.main(["--model", model_dir, "--lengths", "300", "--samples", "1",
                      "--depths", "0.5", "--out", str(tmp_path / "no_cost"), "--quiet",
                      "--cost-lengths", ""])
    assert code == 0 and not (tmp_path / "no_cost" / "long_prompts.json").exists()


def test_long_prompt_costs_refuses_bad_lengths():
    tokenizer = byte_tokenizer()
    model = tiny_llama(len(tokenizer))
    grid = build_grid(["fa"], [0.125], 4)
    for lengths, match in (([], "lengths must be"), ([256, 0], "lengths must be")):
        with pytest.raises(ValueError, match=match):
            cost.long_prompt_costs(model, tokenizer, grid, lengths)
    with pytest.raises(ValueError, match="new_tokens must be >= 1"):
        cost.long_prompt_costs(model, tokenizer, grid, [64], new_tokens=0)
