"""Adapted models train (gradients flow through the kernel's backward) and round-trip through
save_pretrained / from_pretrained."""

import pytest
import torch
import transformers

import swaa_ext
from swaa_ext import SWAAConfig
from hf_models import left_padded, logits, random_ids, tiny_model


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_training_step_changes_weights_with_finite_grads(arch):
    model = swaa_ext.adapt(tiny_model(arch), SWAAConfig(window=4, sinks=2,
                                                        full_attention_layers=[0],
                                                        fa_decode=True)).train()
    ids, mask = left_padded([20, 14])
    labels = ids.masked_fill(mask == 0, -100)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(ids, attention_mask=mask, labels=labels, swaa_full_from=12).loss
    loss.backward()
    q_grad = model.model.layers[1].self_attn.q_proj.weight.grad  # a sliding layer's query
    assert q_grad is not None and torch.isfinite(q_grad).all() and q_grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any("self_attn.q_proj" in name for name in changed)


def test_gradients_match_unadapted_when_the_window_covers_the_context():
    ids = random_ids(2, 18)
    grads = []
    for adapt in (False, True):
        model = tiny_model("qwen2").train()
        if adapt:
            swaa_ext.adapt(model, SWAAConfig(window=32, sinks=1))
        model(ids, labels=ids).loss.backward()
        grads.append(model.model.layers[0].self_attn.k_proj.weight.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def test_save_and_reload_restores_the_adaptation(tmp_path):
    config = SWAAConfig(window=5, sinks=2, full_attention_layers="odd", fa_decode=True)
    model = swaa_ext.adapt(tiny_model("qwen3"), config)
    ids = random_ids(1, 24)
    expected = logits(model, ids, swaa_full_from=16)
    model.save_pretrained(tmp_path)

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.swaa == {"window": 5, "sinks": 2, "full_attention_layers": [1, 3],
                                    "fa_decode": True, "original_attn_implementation": "sdpa"}
    swaa_ext.adapt(reloaded)  # no config: the saved one
    assert reloaded.config._attn_implementation == "swaa"
    torch.testing.assert_close(logits(reloaded, ids, swaa_full_from=16), expected,
                               atol=1e-6, rtol=1e-6)
    swaa_ext.restore(reloaded)
    torch.testing.assert_close(logits(reloaded, ids), logits(tiny_model("qwen3"), ids),
                               atol=1e-6, rtol=1e-6)
