"""Calibrated layer selection (swaa_ext.recipes.select, layer_scores, calibration): budgets, the
per-layer measurement (a planted layer is found, resumed forwards equal whole ones, the cache is
reused and keyed), and the CLI's outputs as adapt and the vLLM plugin take them."""

from __future__ import annotations

import json
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch

import swaa_ext
from swaa_ext.config import LAYER_PATTERNS, SWAAConfig
from swaa_ext.recipes import layer_scores, select
from swaa_ext.recipes.calibration import Example, calibration_set
from swaa_ext.recipes.layer_scores import MeasurementCache, mean_over, measure
from swaa_ext.vllm.settings import swaa_config as vllm_swaa_config

from eval_fixtures import byte_tokenizer, tiny_llama
from hf_models import random_ids, tiny_model

RECIPE = SWAAConfig(window=8, sinks=2, fa_decode=True)


def examples(n: int = 3, prompt: int = 72, target: int = 6, seed: int = 1) -> list[Example]:
    """Random-token examples; target token 0 is predicted by the last prompt token (which slides),
    so only tokens 1.. are scored: every scored prediction is an FA decode query."""
    ids = random_ids(n, prompt + target, seed=seed)
    return [Example("random", tuple(row[:prompt].tolist()), tuple(row[prompt:].tolist()), 1)
            for row in ids]


def kl(model, batch=None, **kwargs) -> list[float]:
    result = measure(model, batch or examples(), RECIPE, progress=False, **kwargs)
    return mean_over(result.scores, "kl")


# --- budgets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [("1/4", Fraction(1, 4)), ("0.25", Fraction(1, 4)),
                                         ("25%", Fraction(1, 4)), (" 8 ", 8), ("1", 1),
                                         ("1/1", Fraction(1))])
def test_budget_parses_counts_and_fractions(text, value):
    parsed = select.parse_budget(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["0", "-1", "0/4", "1/0", "5/4", "1.5", "abc", "", "1/4/2"])
def test_a_bad_budget_is_refused_naming_the_argument(text):
    with pytest.raises(ValueError, match="--budget"):
        select.parse_budget(text)


def test_a_fraction_rounds_down_like_the_periodic_patterns():
    for k, pattern in ((2, "odd"), (4, "every_4th"), (8, "every_8th")):
        for n in (4, 24, 30, 36):
            expected = sum(LAYER_PATTERNS[pattern](i) for i in range(n))
            if expected:
                assert select.budget_layers(Fraction(1, k), n) == expected
    assert select.budget_layers(7, 30) == 7 and select.budget_layers(30, 30) == 30


@pytest.mark.parametrize("budget", [31, Fraction(1, 31)])
def test_a_budget_the_model_cannot_meet_is_refused(budget):
    with pytest.raises(ValueError, match="--budget"):
        select.budget_layers(budget, 30)


def test_the_cli_names_the_budget_argument(tmp_path, capsys):
    for bad in ("0", "x", "3/2"):
        with pytest.raises(SystemExit) as exit_info:
            select.main(["--budget", bad, "--out", str(tmp_path)])
        assert exit_info.value.code == 2
        assert "argument --budget" in capsys.readouterr().err


# --- the calibration set ----------------------------------------------------------------------

def test_calibration_scores_the_gold_answer_after_the_task_s_own_lead_in():
    tokenizer = byte_tokenizer()  # one token per byte: decoded text is exact
    batch = calibration_set(tokenizer, ["passkey", "variable_tracking", "natural"], 900, 2, seed=1)
    families = ["passkey"] * 2 + ["variable_tracking"] * 2 + ["natural"] * 2
    assert [e.family for e in batch] == families
    assert batch == calibration_set(tokenizer, ["passkey", "variable_tracking", "natural"], 900, 2,
                                    seed=1)
    passkey = batch[0]
    prompt = tokenizer.decode(passkey.prompt_ids)
    lead_in = tokenizer.decode(passkey.target_ids[:passkey.score_from])
    answer = tokenizer.decode(passkey.target_ids[passkey.score_from:])
    assert prompt.endswith("<|im_start|>assistant\n") and abs(len(passkey.prompt_ids) - 900) <= 18
    assert lead_in == "The pass key is" and answer.strip().isdigit()
    assert f"The pass key is{answer}." in prompt  # the needle holds the scored answer
    tracking = batch[2]
    names = tokenizer.decode(tracking.target_ids[tracking.score_from:]).strip().split(", ")
    assert len(names) == 4 and all(f"VAR {n} = " in tokenizer.decode(tracking.prompt_ids)
                                   for n in names)
    natural = batch[4]
    assert len(natural.prompt_ids) == 900 and natural.score_from == 0
    assert len(natural.target_ids) == 32 and natural.prompt_ids != batch[5].prompt_ids
    with pytest.raises(ValueError, match="unknown calibration families"):
        calibration_set(tokenizer, ["passkey", "nope"], 900, 1, seed=1)


# --- choosing ----------------------------------------------------------------------------------

def test_choose_keeps_the_highest_scores_and_breaks_ties_by_layer():
    assert select.choose([0.1, 0.5, 0.3, 0.5, 0.0], 2) == [1, 3]
    assert select.choose([0.1, 0.5, 0.3, 0.5, 0.0], 3) == [1, 2, 3]
    assert select.choose([1.0, 1.0, 1.0], 1) == [0]
    assert select.coverage([1.0, 3.0, 0.0, -1.0], [1]) == 0.75


def test_selection_on_a_random_model_is_deterministic_and_respects_the_budget():
    model = tiny_model("qwen2", seed=3)
    first, second = kl(model), kl(model)
    assert first == second  # bit for bit: same inputs, same kernels
    assert any(v > 0 for v in first)
    previous: set[int] = set()
    for count in range(1, len(first) + 1):
        chosen = select.choose(first, count)
        assert len(chosen) == count == len(set(chosen)) and chosen == sorted(chosen)
        assert all(0 <= i < len(first) for i in chosen)
        assert previous <= set(chosen)  # a larger budget keeps what a smaller one kept
        previous = set(chosen)


# --- the measurement -------------------------------------------------------------------------

def planted(layer: int, arch: str = "llama") -> torch.nn.Module:
    """A model where only `layer` and the last layer attend at all (every other o_proj is zero):
    sliding any other layer changes nothing, and under FA decode sliding the last one does not
    either (its scored queries see everything). Only sliding `layer` changes the prompt states
    that the last layer reads, so it alone has a positive score."""
    model = tiny_model(arch, seed=0)
    layers = model.get_decoder().layers
    with torch.no_grad():
        for i, decoder_layer in enumerate(layers):
            o_proj = decoder_layer.self_attn.o_proj.weight
            o_proj.mul_(20.0) if i in (layer, len(layers) - 1) else o_proj.zero_()
    return model


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_the_planted_layer_is_the_one_selected(layer):
    model = planted(layer)
    scores = kl(model)
    assert scores[layer] > 1e-4
    assert all(abs(v) < 1e-12 for i, v in enumerate(scores) if i != layer), scores
    assert select.choose(scores, 1) == [layer]


def test_without_fa_decode_the_last_layer_counts_too():
    # The contrast to the planted test: the last layer's sliding reaches the scored queries
    # themselves once they slide too.
    model = planted(1)
    result = measure(model, examples(), SWAAConfig(window=8, sinks=2, fa_decode=False),
                     progress=False)
    scores = mean_over(result.scores, "kl")
    assert scores[1] > 1e-4 and scores[3] > 1e-4 and abs(scores[0]) < 1e-12


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_resumed_forwards_give_the_whole_forwards_scores(arch, monkeypatch):
    model = tiny_model(arch, seed=5)
    resumed = measure(model, examples(), RECIPE, progress=False, batch_size=2)
    assert resumed.resumed is True
    monkeypatch.setattr(layer_scores._Runner, "resume_matches", lambda self, full: False)
    whole = measure(model, examples(), RECIPE, progress=False, batch_size=2)
    assert whole.resumed is False
    for a, b in zip(resumed.scores, whole.scores):
        assert a.kl == pytest.approx(b.kl, rel=1e-6, abs=1e-12)
        assert a.nll_rise == pytest.approx(b.nll_rise, rel=1e-6, abs=1e-12)


def test_a_decoder_that_cannot_resume_gets_whole_forwards(monkeypatch):
    model = tiny_model("llama", seed=5)
    expected = measure(model, examples(), RECIPE, progress=False).scores

    def refuse(decoder, start):
        raise TypeError("this decoder cannot start from a layer")

    monkeypatch.setattr(layer_scores, "_only_layers_from", refuse)
    result = measure(model, examples(), RECIPE, progress=False)
    assert result.resumed is False
    for a, b in zip(result.scores, expected):
        assert a.kl == pytest.approx(b.kl, rel=1e-6, abs=1e-12)


def test_packing_gives_each_example_what_it_gets_alone():
    model = tiny_model("llama", seed=5)
    batch = examples(n=3) + examples(n=1, prompt=50, target=4, seed=9)
    alone = measure(model, batch, RECIPE, progress=False, batch_size=1).scores
    packed = measure(model, batch, RECIPE, progress=False, batch_size=4).scores
    for a, b in zip(alone, packed):
        assert a.kl == pytest.approx(b.kl, rel=1e-4, abs=1e-10)
        assert a.full_nll == pytest.approx(b.full_nll, rel=1e-5)


def test_the_model_is_left_unadapted_and_an_adapted_one_is_refused():
    model = tiny_model("llama", seed=5)
    kl(model)
    assert getattr(model.config, "swaa", None) is None
    assert model.config._attn_implementation == "sdpa"
    swaa_ext.adapt(model, RECIPE)
    with pytest.raises(ValueError, match="unadapted"):
        kl(model)


def test_a_portable_checkpoint_is_measured_as_its_base_model(tmp_path):
    """The fine-tuning recipe's merged model loads with `config.swaa` but runs its own attention:
    it is measured like the same weights without the settings, which it keeps afterwards."""
    from transformers import AutoModelForCausalLM
    swaa_ext.adapt(tiny_model("llama", seed=5), SWAAConfig(
        window=4, sinks=1, full_attention_layers=[1], fa_decode=True)).save_pretrained(
            tmp_path, require_swaa=False)
    portable = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    saved = dict(portable.config.swaa)
    assert not swaa_ext.hf.is_adapted(portable)
    assert kl(portable) == kl(tiny_model("llama", seed=5))
    assert portable.config.swaa == saved and not swaa_ext.hf.is_adapted(portable)
    assert portable.config._attn_implementation == "sdpa"


def _count_forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_the_cache_is_reused_and_keyed_on_what_changes_the_numbers(tmp_path):
    path = tmp_path / "cache.jsonl"
    model = tiny_model("llama", seed=5)
    calls = _count_forwards(model)
    batch = examples()
    first = measure(model, batch, RECIPE, MeasurementCache(path), progress=False)
    assert first.measured == len(batch) and calls[0] > 0
    calls[0] = 0
    again = measure(model, batch, RECIPE, MeasurementCache(path), progress=False)  # reread
    assert again.measured == 0 and calls[0] == 0 and again.scores == first.scores
    # One more example: only it is measured.
    more = measure(model, batch + examples(n=1, seed=7), RECIPE, MeasurementCache(path),
                   progress=False)
    assert more.measured == 1 and more.scores[:len(batch)] == first.scores
    # Another window, other sinks, no FA decode, other weights: measured anew.
    for recipe in (SWAAConfig(window=9, sinks=2, fa_decode=True),
                   SWAAConfig(window=8, sinks=3, fa_decode=True),
                   SWAAConfig(window=8, sinks=2, fa_decode=False)):
        assert measure(model, batch, recipe, MeasurementCache(path),
                       progress=False).measured == len(batch)
    with torch.no_grad():
        model.get_decoder().layers[0].mlp.up_proj.weight[0, 0] += 1.0
    assert measure(model, batch, RECIPE, MeasurementCache(path),
                   progress=False).measured == len(batch)


# --- the CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tokenizer = byte_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _cli(model_dir, out, cache, budget: str, *extra: str) -> dict:
    code = select.main(["--model", str(model_dir), "--budget", budget, "--length", "900",
                        "--families", "passkey,kv_retrieval,natural", "--samples", "1",
                        "--window-fraction", "1/8", "--sinks", "4", "--out", str(out),
                        "--cache-dir", str(cache), "--batch-size", "2", "--quiet", *extra])
    assert code == 0
    return json.loads((out / select.SELECTION).read_text())


def test_cli_writes_a_selection_that_adapt_and_the_vllm_plugin_take(model_dir, tmp_path):
    result = _cli(model_dir, tmp_path / "out", tmp_path / "cache", "1/2")
    chosen = result["full_attention_layers"]
    assert len(chosen) == result["budget"]["layers"] == 2 and result["budget"]["of"] == 4
    # The default ranks by the answer's NLL rise.
    assert result["metric"] == "nll_rise"
    assert chosen == select.choose(result["scores"]["nll_rise"], 2)
    assert result["ranking"][:2] == sorted(chosen,
                                           key=lambda i: -result["scores"]["nll_rise"][i])
    assert set(result["scores"]["kl_by_family"]) == {"passkey", "kv_retrieval", "natural"}
    assert result["settings"]["window"] == round(900 / 8) and result["settings"]["examples"] == 3
    assert result["timing"]["measured_examples"] == 3
    # The config as it is: SWAAConfig, adapt, the vLLM plugin's reading of config.swaa.
    config = SWAAConfig.from_dict(result["config"])
    assert config == SWAAConfig.from_json(tmp_path / "out" / select.SELECTION)
    assert list(config.full_attention_layers) == chosen
    assert config == SWAAConfig(window=112, sinks=4, full_attention_layers=chosen, fa_decode=True)
    assert vllm_swaa_config(SimpleNamespace(swaa=result["config"])) == config
    model = tiny_llama(300)
    swaa_ext.adapt(model, config)
    assert model.config.swaa["full_attention_layers"] == chosen
    assert (tmp_path / "out" / select.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Another budget: nothing measured again, the same scores.
    other = _cli(model_dir, tmp_path / "out1", tmp_path / "cache", "1")
    assert other["timing"]["measured_examples"] == 0 and other["timing"]["cached_examples"] == 3
    assert other["scores"] == result["scores"]
    assert other["full_attention_layers"] == select.choose(result["scores"]["nll_rise"], 1)
    # Ranking by the KL instead: the same cached forwards, the other column.
    by_kl = _cli(model_dir, tmp_path / "out2", tmp_path / "cache", "1/2", "--metric", "kl")
    assert by_kl["timing"]["measured_examples"] == 0 and by_kl["metric"] == "kl"
    assert by_kl["full_attention_layers"] == select.choose(result["scores"]["kl"], 2)
    assert by_kl["ranking"][0] == max(range(4), key=lambda i: result["scores"]["kl"][i])


def test_cli_refuses_a_budget_beyond_the_model_s_layers(model_dir, tmp_path):
    with pytest.raises(SystemExit, match="--budget 5 exceeds the model's 4 layers"):
        _cli(model_dir, tmp_path / "out", tmp_path / "cache", "5")


def test_from_json_reads_bare_settings_too(tmp_path):
    config = SWAAConfig(window=16, sinks=4, full_attention_layers=[1, 3], fa_decode=True)
    (tmp_path / "swaa.json").write_text(json.dumps(config.to_dict()))
    assert SWAAConfig.from_json(tmp_path / "swaa.json") == config
