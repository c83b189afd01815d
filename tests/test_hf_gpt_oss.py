"""gpt-oss through `adapt`: a tiny random-weight GptOssForCausalLM (transformers' own class), its
layers alternating a native sliding window with full attention and every layer carrying learned
sinks (`s_aux`). With attn_implementation="swaa" and its native settings
(`SWAAConfig.native`), logits (dense and left-padded), a training step's gradients and greedy
generation through the sink + window cache equal eager attention's; SWAA's own settings (hard
sinks, FA decode) combine with the learned sinks, checked against the float64 oracle."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from hf_models import left_padded, random_ids

import swaa_ext
from swaa_ext import reference
from swaa_ext.hf import SWAACache

GptOssConfig = getattr(transformers, "GptOssConfig", None)
pytestmark = pytest.mark.skipif(GptOssConfig is None, reason="this transformers has no gpt-oss")
WINDOW = 8


def tiny_gpt_oss(seed: int = 0):
    config = GptOssConfig(vocab_size=96, hidden_size=64, intermediate_size=64,
                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                          sliding_window=WINDOW, max_position_embeddings=256,
                          layer_types=["sliding_attention", "full_attention"] * 2,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2,
                          rope_scaling=None)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.GptOssForCausalLM(config).eval()
    sinks = [m.sinks for m in model.modules() if hasattr(m, "sinks")]
    assert len(sinks) == config.num_hidden_layers
    with torch.no_grad():
        for s in sinks:  # learned sinks large enough to matter, some dominating
            s.copy_(torch.randn(s.shape) * 2 + 1)
    return model


@pytest.fixture(scope="module")
def eager():
    return tiny_gpt_oss()


def adapted(eager, **settings):
    model = copy.deepcopy(eager)
    return swaa_ext.adapt(model, swaa_ext.SWAAConfig.native(model.config, **settings))


def test_native_settings_are_the_model_s_own(eager):
    config = swaa_ext.SWAAConfig.native(eager.config)
    assert config == swaa_ext.SWAAConfig(window=WINDOW, full_attention_layers=[1, 3])
    with pytest.raises(ValueError, match="no native sliding window"):
        swaa_ext.SWAAConfig.native(transformers.LlamaConfig())


def test_logits_equal_eager(eager):
    model = adapted(eager)
    ids = random_ids(2, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, eager(ids).logits, atol=2e-5, rtol=1e-5)
        ids, mask = left_padded([40, 23, 31])
        real = mask.bool()
        ours = model(ids, attention_mask=mask).logits[real]
        torch.testing.assert_close(ours, eager(ids, attention_mask=mask).logits[real], atol=2e-5,
                                   rtol=1e-5)


def test_training_step_gradients_equal_eager(eager):
    """Every parameter's gradient, the learned sinks' included, through the backward kernels."""
    ids = random_ids(2, 40)
    grads = []
    for model in (copy.deepcopy(eager), adapted(eager)):
        model.train()
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any("sinks" in name for name in grads[1])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=2e-5, rtol=1e-4,
                                   msg=lambda m: f"{name}: {m}")


def test_generation_through_the_sink_window_cache_equals_eager(eager):
    model = adapted(eager)
    ids = random_ids(2, 30)
    kwargs = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0,
                  return_dict_in_generate=True)
    ours = model.generate(ids, **kwargs)
    assert isinstance(ours.past_key_values, SWAACache)
    assert torch.equal(ours.sequences, eager.generate(ids, **kwargs).sequences)


def test_swaa_settings_combine_with_learned_sinks(eager, monkeypatch):
    """Hard sinks and FA decode on top of the native window and the learned sinks: the logits
    equal those of the same model with its attention kernel swapped for the float64 oracle, and
    differ from the native settings'; greedy generation through the sink + window cache equals
    generation that recomputes everything (no cache)."""
    model = adapted(eager, sinks=2, fa_decode=True)
    ids = random_ids(2, 40)
    with torch.no_grad():
        ours = model(ids).logits
        native = adapted(eager)(ids).logits
        monkeypatch.setattr(swaa_ext.hf.attention, "sliding_attention",
                            reference.sliding_attention)
        oracle = model(ids).logits
        monkeypatch.undo()
    torch.testing.assert_close(ours, oracle, atol=2e-5, rtol=1e-5)
    assert (ours - native).abs().max() > 1e-3
    kwargs = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=0)
    cached = model.generate(ids[:, :30], **kwargs)
    recomputed = model.generate(ids[:, :30], use_cache=False, **kwargs)
    assert torch.equal(cached, recomputed)
