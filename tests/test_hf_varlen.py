"""Ragged batches through the HF layer as one varlen kernel call per layer: packed sequences
(transformers' flattening collator, or restarting position ids) and left-padded batches. Each
packed sample / padded row must compute exactly what it computes alone."""

import contextlib

import pytest
import torch
from transformers import DataCollatorWithFlattening

import swaa_ext
from swaa_ext import SWAAConfig, ops
from hf_models import generate, left_padded, logits, random_ids, tiny_model

RECIPE = SWAAConfig(window=4, sinks=2, full_attention_layers=[1], fa_decode=True)
LENGTHS = [7, 1, 20, 13, 9]  # five samples, one a single token, several longer than the window
PROMPTS = [3, 1, 12, 0, 9]   # per-sample FA decode boundary: 0 = all full, == length = all SWA


@contextlib.contextmanager
def counted_calls():
    """Counts the dense and varlen kernel calls the HF layer makes."""
    counts = {"dense": 0, "varlen": 0}
    dense, varlen = ops.sliding_attention, ops.sliding_attention_varlen
    attention = swaa_ext.hf.attention

    def count_dense(*args, **kwargs):
        counts["dense"] += 1
        return dense(*args, **kwargs)

    def count_varlen(*args, **kwargs):
        counts["varlen"] += 1
        return varlen(*args, **kwargs)

    attention.sliding_attention = count_dense
    ops.sliding_attention_varlen = count_varlen
    try:
        yield counts
    finally:
        attention.sliding_attention, ops.sliding_attention_varlen = dense, varlen


def samples(seed=3):
    return [random_ids(1, n, seed=seed + i)[0] for i, n in enumerate(LENGTHS)]


def flattened(collator_kwargs):
    features = [{"input_ids": s.tolist()} for s in samples()]
    batch = DataCollatorWithFlattening(**collator_kwargs)(features, return_tensors="pt")
    return {k: v for k, v in batch.items() if k != "labels"}


def solo_logits(model, full_from):
    return torch.cat([model(s[None], swaa_full_from=f).logits[0]
                      for s, f in zip(samples(), full_from)])


@pytest.mark.parametrize("signal", ["position_ids", "flash_kwargs"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_batch_equals_samples_one_by_one(arch, signal):
    """Logits and every parameter's gradient of one packed row equal those of the five samples
    run alone, with a per-sample FA decode boundary; one varlen call per layer."""
    model = swaa_ext.adapt(tiny_model(arch), RECIPE)
    batch = flattened({"return_flash_attn_kwargs": signal == "flash_kwargs"})
    weights = torch.randn(sum(LENGTHS), model.config.vocab_size,
                          generator=torch.Generator().manual_seed(0))

    def gradients(out_logits):
        model.zero_grad()
        (out_logits * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    with counted_calls() as counts:
        packed = model(**batch, swaa_full_from=torch.tensor(PROMPTS)).logits[0]
    assert counts == {"dense": 0, "varlen": model.config.num_hidden_layers}
    expected = solo_logits(model, PROMPTS)
    torch.testing.assert_close(packed, expected, atol=2e-5, rtol=1e-5)

    packed_grads, solo_grads = gradients(packed), gradients(expected)
    assert packed_grads.keys() == solo_grads.keys() and len(packed_grads) > 0
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, solo_grads[name], atol=1e-4, rtol=1e-4, msg=name)

    # The packing is what makes it right: without it, samples would see each other.
    unpacked = model(batch["input_ids"], swaa_full_from=0).logits[0]
    assert not torch.allclose(unpacked, solo_logits(model, [0] * len(LENGTHS)), atol=1e-3)


def test_packed_int_boundary_applies_to_every_sample():
    model = swaa_ext.adapt(tiny_model("llama"), RECIPE)
    batch = flattened({})
    with torch.no_grad():
        packed = model(**batch, swaa_full_from=5).logits[0]
        torch.testing.assert_close(packed, solo_logits(model, [5] * len(LENGTHS)),
                                   atol=2e-5, rtol=1e-5)


def test_packed_training_through_the_loss_matches_the_samples():
    """The collator's labels (-100 at each sample's first token) give the mean of the samples'
    token losses: the packed loss equals the token-weighted mean of the solo losses."""
    model = swaa_ext.adapt(tiny_model("llama"), RECIPE).train()
    features = [{"input_ids": s.tolist()} for s in samples()]
    batch = DataCollatorWithFlattening()(features, return_tensors="pt")
    packed = model(**batch).loss
    solo = [(model(s[None], labels=s[None]).loss, len(s) - 1) for s in samples() if len(s) > 1]
    expected = sum(loss * n for loss, n in solo) / sum(n for _, n in solo)
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=1e-5)
    packed.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_left_padded_batch_is_one_call_per_layer_with_each_rows_result(arch):
    model = swaa_ext.adapt(tiny_model(arch), RECIPE)
    lengths = [17, 9, 13, 1]
    ids, mask = left_padded(lengths, seed=5)
    width, layers = ids.shape[1], model.config.num_hidden_layers
    with counted_calls() as counts:
        batch = logits(model, ids, attention_mask=mask, swaa_full_from=width - 3)
    assert counts == {"dense": 0, "varlen": layers}
    for b, n in enumerate(lengths):
        alone = logits(model, ids[b:b + 1, width - n:], swaa_full_from=n - 3)
        torch.testing.assert_close(batch[b, width - n:], alone[0], atol=2e-5, rtol=1e-5)

    new_tokens = 4
    with counted_calls() as counts:
        sequences, scores = generate(model, ids, attention_mask=mask, new_tokens=new_tokens)
    assert counts == {"dense": 0, "varlen": layers * new_tokens}
    for b, n in enumerate(lengths):
        row_sequences, row_scores = generate(model, ids[b:b + 1, width - n:],
                                             new_tokens=new_tokens)
        assert torch.equal(sequences[b, width - n:], row_sequences[0])
        torch.testing.assert_close(scores[b], row_scores[0], atol=2e-5, rtol=1e-5)


def test_unpadded_batches_stay_one_dense_call():
    model = swaa_ext.adapt(tiny_model("llama"), RECIPE)
    with counted_calls() as counts:
        logits(model, random_ids(2, 12), attention_mask=torch.ones(2, 12, dtype=torch.long))
        logits(model, random_ids(2, 12))
    assert counts == {"dense": 2 * model.config.num_hidden_layers, "varlen": 0}


def test_packing_errors_are_clear():
    model = swaa_ext.adapt(tiny_model("llama"), RECIPE)
    batch = flattened({"return_flash_attn_kwargs": True})
    with pytest.raises(ValueError, match="one value per packed sequence"):
        model(**batch, swaa_full_from=torch.tensor([1, 2]))
    partial = {k: v for k, v in batch.items() if k != "max_length_k"}
    with pytest.raises(ValueError, match="need all of"):
        model(**partial)
    with pytest.raises(ValueError, match="ending at the number of tokens"):
        model(**{**batch, "cu_seq_lens_q": torch.tensor([0, 3], dtype=torch.int32),
                 "cu_seq_lens_k": torch.tensor([0, 3], dtype=torch.int32)})
    ids, mask = left_padded([5, 3])
    with pytest.raises(ValueError, match="pass one or the other"):
        model(ids, attention_mask=mask, cu_seq_lens_q=torch.tensor([0, 5, 10]),
              cu_seq_lens_k=torch.tensor([0, 5, 10]), max_length_q=5, max_length_k=5)
