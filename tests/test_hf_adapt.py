"""adapt / restore on tiny random models of every supported architecture: forward correctness
against the unadapted model, transformers' own sliding window, and a dense float64 oracle."""

from types import SimpleNamespace

import pytest
import torch
import transformers

import swaa_ext
from swaa_ext import SWAAConfig
from swaa_ext.hf.attention import swaa_attention_forward
from swaa_ext.hf.mask import swaa_mask
from hf_models import ARCHITECTURES, left_padded, logits, random_ids, tiny_model

ARCHS = list(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHS)
def test_window_covering_context_equals_unadapted(arch):
    model = tiny_model(arch)
    ids, mask = left_padded([23, 30, 17])
    expected = logits(model, ids, attention_mask=mask)
    swaa_ext.adapt(model, SWAAConfig(window=30, sinks=3, full_attention_layers=[1],
                                     fa_decode=True))
    assert model.config._attn_implementation == "swaa"
    got = logits(model, ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_restore_gives_exact_original_logits(arch):
    model = tiny_model(arch)
    ids = random_ids(2, 25)
    expected = logits(model, ids)
    swaa_ext.adapt(model, SWAAConfig(window=4, sinks=2))
    assert not torch.allclose(logits(model, ids), expected, atol=1e-3)  # the window bites
    swaa_ext.restore(model)
    assert model.config._attn_implementation == "sdpa" and not hasattr(model.config, "swaa")
    assert "generate" not in model.__dict__
    # Nothing adapt or the attention function put on the modules stays behind.
    assert not any(set(m.__dict__) & {"_swaa_adapted", "_swaa_rule"} for m in model.modules())
    assert torch.equal(logits(model, ids), expected)


@pytest.mark.parametrize("arch, native", [
    ("mistral", dict(sliding_window=7)),
    ("qwen2", dict(use_sliding_window=True, sliding_window=7, max_window_layers=0)),
])
def test_matches_transformers_sliding_window(arch, native):
    """transformers' `sliding_window=W` sees W keys including the query: our window=W exactly."""
    reference = tiny_model(arch, **native)
    ids, mask = left_padded([40, 33])
    expected = logits(reference, ids, attention_mask=mask)
    model = swaa_ext.adapt(tiny_model(arch), SWAAConfig(window=7))
    real = mask.bool()
    torch.testing.assert_close(logits(model, ids, attention_mask=mask)[real], expected[real],
                               atol=2e-5, rtol=1e-5)
    swaa_ext.adapt(model, SWAAConfig(window=8))  # off by one is visibly different
    assert not torch.allclose(logits(model, ids, attention_mask=mask)[real], expected[real],
                              atol=1e-3)


def dense_oracle(q, k, v, pad, window, sinks, full_from):
    """Row-wise float64 attention in padded coordinates: key j is real when j >= pad[b], sinks
    count from the first real key, queries that are padding output zeros."""
    batch, heads_q, len_q, dim = q.shape
    len_k, group = k.shape[2], heads_q // k.shape[1]
    p = torch.arange(len_q)[:, None] + (len_k - len_q)
    j = torch.arange(len_k)[None, :]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for b in range(batch):
        seen = (j >= pad[b]) & (j <= p)
        rule = torch.ones_like(seen) if window is None else (p - j < window)
        rule = rule | (j - pad[b] < sinks) | (p >= full_from[b])
        seen = seen & rule
        scores = q[b].double() @ k[b].double().repeat_interleave(group, 0).transpose(-1, -2)
        scores = (scores / dim ** 0.5).masked_fill(~seen, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # padding queries: all masked
        out[b] = weights @ v[b].double().repeat_interleave(group, 0)
    return out


@pytest.mark.parametrize("full_layer", [False, True])
@pytest.mark.parametrize("len_q", [19, 5, 1])
def test_attention_function_against_dense_oracle(full_layer, len_q):
    """The registered pair (mask fn -> attention fn) on raw tensors, with left padding, GQA,
    sinks and a per-row FA-decode boundary."""
    torch.manual_seed(0)
    pads, len_k, window, sinks = [0, 6, 17], 19, 4, 3
    swaa = dict(window=window, sinks=sinks, full_attention_layers=[0] if full_layer else [],
                fa_decode=True)
    module = SimpleNamespace(config=SimpleNamespace(swaa=swaa), layer_idx=0, _swaa_adapted=True)
    q = torch.randn(3, 4, len_q, 16)
    k, v = torch.randn(3, 2, len_k, 16), torch.randn(3, 2, len_k, 16)
    padding = torch.arange(len_k)[None] >= torch.tensor(pads)[:, None]
    full_from = torch.tensor([15, 12, len_k])
    mask = swaa_mask(3, kv_length=len_k, attention_mask=padding)
    out, weights = swaa_attention_forward(module, q, k, v, mask, swaa_full_from=full_from)
    assert weights is None and out.shape == (3, len_q, 4, 16)  # (B, S, H, D)
    expected = dense_oracle(q, k, v, pads, None if full_layer else window,
                            0 if full_layer else sinks, [len_k] * 3 if full_layer else full_from)
    torch.testing.assert_close(out.transpose(1, 2).double(), expected, atol=1e-5, rtol=1e-5)


def test_bad_inputs_are_clear_errors():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=r"\[4, 9\] are beyond the model's 4 layers"):
        swaa_ext.adapt(model, SWAAConfig(window=4, full_attention_layers=[1, 4, 9]))
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(TypeError, match="must be a swaa_ext.SWAAConfig"):
        swaa_ext.adapt(model, {"window": 4})
    with pytest.raises(ValueError, match="without a config needs a model saved after adapt"):
        swaa_ext.adapt(model)
    with pytest.raises(ValueError, match="was not adapted"):
        swaa_ext.restore(model)
    with pytest.raises(TypeError, match="expects a transformers PreTrainedModel"):
        swaa_ext.adapt(torch.nn.Linear(2, 2), SWAAConfig(window=4))


class LegacyAttentionLlama(transformers.LlamaForCausalLM):
    """Stands for any model whose attention bypasses the AttentionInterface registry."""

    _supports_attention_backend = False


def test_model_outside_the_registry_cannot_be_adapted():
    model = LegacyAttentionLlama(tiny_model("llama").config)
    with pytest.raises(TypeError, match="cannot be adapted: its attention does not go through"):
        swaa_ext.adapt(model, SWAAConfig(window=4))
    assert model.config._attn_implementation == "sdpa"


def test_pattern_layers_follow_depth_and_full_layers_ignore_the_window():
    model = tiny_model("llama")
    ids = random_ids(1, 30)
    swaa_ext.adapt(model, SWAAConfig(window=3, full_attention_layers="even"))
    assert model.config.swaa["full_attention_layers"] == [0, 2]
    every = swaa_ext.adapt(tiny_model("llama"), SWAAConfig(window=3,
                                                          full_attention_layers=[0, 1, 2, 3]))
    torch.testing.assert_close(logits(every, ids), logits(tiny_model("llama"), ids),
                               atol=2e-5, rtol=1e-5)


def test_bfloat16_model_runs_and_stays_close_to_unadapted():
    model = tiny_model("qwen3").to(torch.bfloat16)
    ids, mask = left_padded([21, 15])
    expected = logits(model, ids, attention_mask=mask).float()
    swaa_ext.adapt(model, SWAAConfig(window=32, sinks=2))
    got = logits(model, ids, attention_mask=mask)
    assert got.dtype == torch.bfloat16
    real = mask.bool()
    torch.testing.assert_close(got.float()[real], expected[real], atol=5e-2, rtol=2e-2)


def test_unsupported_kwargs_and_dropout_warn():
    from transformers.testing_utils import CaptureLogger
    from swaa_ext.hf import attention

    module = SimpleNamespace(config=SimpleNamespace(swaa=dict(
        window=4, sinks=0, full_attention_layers=[], fa_decode=False)), layer_idx=0,
        _swaa_adapted=True)
    q = k = v = torch.randn(1, 2, 6, 8)
    with CaptureLogger(attention.logger) as captured:
        out, _ = swaa_attention_forward(module, q, k, v, None, dropout=0.25, some_flag=True,
                                        position_ids=torch.arange(6))
    assert "does not support `some_flag`" in captured.out
    assert "dropout=0.25 ignored" in captured.out and "position_ids" not in captured.out
    torch.testing.assert_close(out.transpose(1, 2),
                               swaa_ext.reference.sliding_attention(q, k, v, 4), atol=1e-5,
                               rtol=1e-5)


def test_a_dense_mask_is_refused():
    module = SimpleNamespace(config=SimpleNamespace(swaa=dict(
        window=4, sinks=0, full_attention_layers=[], fa_decode=False)), layer_idx=0,
        _swaa_adapted=True)
    q = torch.randn(1, 2, 6, 8)
    with pytest.raises(TypeError, match="precomputed mask it cannot honour"):
        swaa_attention_forward(module, q, q, q, torch.ones(1, 1, 6, 6, dtype=torch.bool))
