"""Where users go first with an adapted model (issue 9): encoders refused, saving and reloading
(a fresh process included), static/dynamic cache_implementation, assisted decoding, the model's
own sliding window kept in config.json, right padding, numpy ints in the config."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import swaa_ext
from swaa_ext import SWAAConfig
from swaa_ext.hf import SWAACache
from hf_models import generate, left_padded, logits, random_ids, tiny_model

WINDOW_ONLY = SWAAConfig(window=5, sinks=2, full_attention_layers=[1])
RECIPE = SWAAConfig(window=5, sinks=2, full_attention_layers=[1], fa_decode=True)
ROOT = Path(__file__).resolve().parents[1]
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


def test_encoders_are_refused():
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=40)
    model = transformers.BertModel(config).eval()
    # transformers 5 routes BERT through the registry (refused as non-causal), 4.57 does not.
    with pytest.raises(TypeError, match="non-causal attention|does not go through"):
        swaa_ext.adapt(model, SWAAConfig(window=1000))
    assert model.config._attn_implementation != "swaa" and not hasattr(model.config, "swaa")


def test_refused_kwargs_name_what_cannot_be_served():
    model = swaa_ext.adapt(tiny_model("llama"), WINDOW_ONLY)
    attention = model.model.layers[0].self_attn
    q = torch.randn(1, 4, 3, 16)
    k = v = torch.randn(1, 2, 3, 16)
    with pytest.raises(ValueError, match="soft-capping"):
        swaa_ext.hf.attention.swaa_attention_forward(attention, q, k, v, None, softcap=30.0)


@pytest.mark.parametrize("recipe", [RECIPE, WINDOW_ONLY], ids=["fa_decode", "window_only"])
def test_reload_needs_adapt_and_then_generates_exactly_as_before(tmp_path, recipe):
    model = swaa_ext.adapt(tiny_model("llama"), recipe)
    ids = random_ids(1, 20)
    expected_sequences, expected_scores = generate(model, ids)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["attn_implementation"] == "swaa"

    # config.json asks for swaa itself; transformers 4.57's from_pretrained does not read that.
    ways = [{"attn_implementation": "swaa"}] + ([{}] if TRANSFORMERS_5 else [])
    for kwargs in ways:
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, **kwargs).eval()
        assert reloaded.config._attn_implementation == "swaa"
        with pytest.raises(RuntimeError, match=r"call swaa_ext.adapt\(model\)"):
            logits(reloaded, ids)  # never silently without FA decode / the bounded cache
        swaa_ext.adapt(reloaded)
        sequences, scores = generate(reloaded, ids)
        assert torch.equal(sequences, expected_sequences)
        torch.testing.assert_close(scores, expected_scores, atol=1e-6, rtol=1e-6)
        swaa_ext.restore(reloaded)
        assert reloaded.config._attn_implementation == "sdpa"
        torch.testing.assert_close(logits(reloaded, ids), logits(tiny_model("llama"), ids),
                                   atol=1e-6, rtol=1e-6)


@pytest.mark.slow  # a fresh process
def test_from_pretrained_with_swaa_works_in_a_fresh_process(tmp_path):
    model = swaa_ext.adapt(tiny_model("qwen3"), RECIPE)
    ids = random_ids(1, 18)
    expected, _ = generate(model, ids)
    model.save_pretrained(tmp_path / "model")
    torch.save({"ids": ids, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import swaa_ext, transformers
        from hf_models import generate
        data = torch.load({str(tmp_path / "io.pt")!r})
        model = transformers.AutoModelForCausalLM.from_pretrained(
            {str(tmp_path / "model")!r}, attn_implementation="swaa").eval()
        swaa_ext.adapt(model)
        sequences, _ = generate(model, data["ids"])
        assert torch.equal(sequences, data["expected"]), (sequences, data["expected"])
        print("same tokens")
    """)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0 and "same tokens" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow  # a fresh process
def test_portable_save_loads_anywhere_as_the_base_model(tmp_path):
    """save_pretrained(require_swaa=False), the fine-tuning recipe's merged model: config.json
    keeps the base attention, so transformers in a fresh process without swaa_ext loads it as
    the original architecture (the base model's full-attention logits); its `swaa` settings
    give the adapted model's generation back through swaa_ext.adapt(model)."""
    model = swaa_ext.adapt(tiny_model("llama"), RECIPE)
    ids = random_ids(1, 20)
    expected, _ = generate(model, ids)
    model.save_pretrained(tmp_path / "model", require_swaa=False)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert "attn_implementation" not in saved and saved["swaa"]["window"] == RECIPE.window
    torch.save({"ids": ids, "logits": logits(tiny_model("llama"), ids)}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, torch, transformers
        data = torch.load({str(tmp_path / "io.pt")!r})
        model = transformers.AutoModelForCausalLM.from_pretrained({str(tmp_path / "model")!r})
        assert model.config._attn_implementation != "swaa"
        with torch.no_grad():
            got = model.eval()(data["ids"]).logits
        torch.testing.assert_close(got, data["logits"], atol=1e-5, rtol=1e-5)
        assert "swaa_ext" not in sys.modules
        print("base model")
    """)
    env = {"PYTHONPATH": str(ROOT / "tests"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0 and "base model" in done.stdout, done.stderr[-2000:]

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    swaa_ext.adapt(reloaded)  # the saved settings
    assert torch.equal(generate(reloaded, ids)[0], expected)


@pytest.mark.parametrize("recipe", [RECIPE, WINDOW_ONLY], ids=["fa_decode", "window_only"])
@pytest.mark.parametrize("implementation", ["static", "dynamic"])
def test_cache_implementations_generate_like_the_default(recipe, implementation):
    model = swaa_ext.adapt(tiny_model("llama"), recipe)
    ids, mask = left_padded([19, 12], seed=4)
    expected_sequences, expected_scores = generate(model, ids, attention_mask=mask)
    sequences, scores = generate(model, ids, attention_mask=mask,
                                 cache_implementation=implementation)
    assert torch.equal(sequences, expected_sequences)
    torch.testing.assert_close(scores, expected_scores, atol=1e-6, rtol=1e-6)
    model.generation_config.cache_implementation = implementation  # a model's own default
    assert torch.equal(generate(model, ids, attention_mask=mask)[0], expected_sequences)
    with pytest.raises(ValueError, match="cache_implementation='offloaded' is not supported"):
        generate(model, ids, cache_implementation="offloaded")
    static = transformers.StaticCache(config=model.config, max_cache_len=64)
    with pytest.raises(TypeError, match="cannot use a StaticCache"):
        generate(model, ids, past_key_values=static)


@pytest.mark.slow  # torch.compile of a model
def test_compiled_decode_step_equals_eager():
    model = swaa_ext.adapt(tiny_model("llama"), WINDOW_ONLY)
    ids = random_ids(1, 24)
    with torch.no_grad():
        cache = SWAACache(model.config)
        model(ids[:, :16], past_key_values=cache, use_cache=True)
        eager_cache = SWAACache(model.config)
        model(ids[:, :16], past_key_values=eager_cache, use_cache=True)
        step = torch.compile(model.forward)
        for t in range(16, 24):
            got = step(ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits
            want = model(ids[:, t:t + 1], past_key_values=eager_cache, use_cache=True).logits
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert [layer.keys.shape[-2] for layer in cache.layers] == [6, 24, 6, 6]


@pytest.mark.parametrize("assist", ["prompt_lookup", "assistant_model"])
def test_assisted_decoding_with_the_sink_window_cache_equals_greedy(assist):
    model = swaa_ext.adapt(tiny_model("llama", initializer_range=0.2), WINDOW_ONLY)
    # A repetitive prompt, so that prompt lookup drafts tokens (and some get rejected).
    ids = random_ids(1, 8).repeat(1, 3)
    greedy = dict(max_new_tokens=12, do_sample=False, output_logits=True,
                  return_dict_in_generate=True, pad_token_id=0)
    expected = model.generate(ids, **greedy)
    extra = ({"prompt_lookup_num_tokens": 4} if assist == "prompt_lookup"
             else {"assistant_model": tiny_model("llama", seed=3)})
    out = model.generate(ids, **greedy, **extra)
    assert torch.equal(out.sequences, expected.sequences)
    torch.testing.assert_close(torch.stack(out.logits, 1), torch.stack(expected.logits, 1),
                               atol=1e-5, rtol=1e-5)


def test_a_cache_rolls_back_only_what_it_kept():
    model = swaa_ext.adapt(tiny_model("llama"), WINDOW_ONLY)
    cache = SWAACache(model.config, rollback=3)
    ids = random_ids(1, 30)
    with torch.no_grad():
        model(ids[:, :20], past_key_values=cache, use_cache=True)
        model(ids[:, 20:23], past_key_values=cache, use_cache=True)  # 3 draft tokens
        cache.crop(-3)  # remove 3 (both transformers 4.57 and 5 read it so)
        assert cache.get_seq_length() == 20
        out = model(ids[:, 20:21], past_key_values=cache, use_cache=True).logits
        torch.testing.assert_close(out[:, -1], logits(model, ids[:, :21])[:, -1], atol=2e-5,
                                   rtol=1e-5)
        with pytest.raises(ValueError, match="can roll back at most 3 tokens, asked for 4"):
            cache.crop(-4)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="rollback must be an int >= 0"):
            SWAACache(model.config, rollback=bad)


@pytest.mark.parametrize("arch, native, field", [
    ("mistral", dict(sliding_window=7), "sliding_window"),
    ("qwen2", dict(use_sliding_window=True, sliding_window=7, max_window_layers=2),
     "layer_types"),
])
def test_saving_keeps_the_models_own_sliding_window(tmp_path, arch, native, field):
    original = tiny_model(arch, **native)
    ids = random_ids(1, 30)
    expected = logits(original, ids)
    own = json.loads(json.dumps(getattr(original.config, field)))
    model = swaa_ext.adapt(tiny_model(arch, **native), SWAAConfig(window=12, sinks=2))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved[field] == own and saved["swaa"]["window"] == 12
    assert getattr(model.config, field) != own  # still off while adapted
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    swaa_ext.restore(swaa_ext.adapt(reloaded))
    assert getattr(reloaded.config, field) == own
    torch.testing.assert_close(logits(reloaded, ids), expected, atol=1e-6, rtol=1e-6)


def test_right_padding_forward_and_training_equal_each_row_alone():
    model = swaa_ext.adapt(tiny_model("llama"), RECIPE)
    lengths = [17, 9, 13]
    ids, left_mask = left_padded(lengths, seed=6)
    width = ids.shape[1]
    right_ids = torch.stack([torch.cat([ids[b, width - n:], ids[b, :width - n]])
                             for b, n in enumerate(lengths)])
    right_mask = left_mask.flip(1)
    batch = logits(model, right_ids, attention_mask=right_mask, swaa_full_from=8)
    for b, n in enumerate(lengths):
        alone = logits(model, right_ids[b:b + 1, :n], swaa_full_from=8)
        torch.testing.assert_close(batch[b:b + 1, :n], alone, atol=2e-5, rtol=1e-5)
    labels = right_ids.masked_fill(right_mask == 0, -100)
    loss = model.train()(right_ids, attention_mask=right_mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_padding_between_real_tokens_is_a_clear_error():
    from swaa_ext.hf.mask import swaa_mask
    gap = torch.tensor([[1, 1, 0, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match="real tokens in one run"):
        swaa_mask(1, kv_length=4, attention_mask=gap)


def test_numpy_and_torch_ints_are_plain_ints_and_save(tmp_path):
    config = SWAAConfig(window=np.int64(8), sinks=torch.tensor(2),
                        full_attention_layers=[np.int32(1)])
    assert type(config.window) is int and type(config.sinks) is int
    assert config.full_attention_layers == (1,) and type(config.full_attention_layers[0]) is int
    model = swaa_ext.adapt(tiny_model("llama"), config)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["swaa"]["window"] == 8
