"""Generation with SWAA: the FA-decode boundary, incremental decoding, chunked prefill, reused
caches, batched left padding, sampling."""

import copy

import pytest
import torch

import swaa_ext
from swaa_ext import SWAAConfig
from hf_models import ARCHITECTURES, generate, left_padded, logits, random_ids, tiny_model

RECIPE = SWAAConfig(window=5, sinks=2, full_attention_layers=[1], fa_decode=True)


@pytest.mark.parametrize("fa_decode", [True, False])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_incremental_decoding_equals_one_forward(arch, fa_decode):
    model = swaa_ext.adapt(tiny_model(arch), SWAAConfig(window=5, sinks=2,
                                                        full_attention_layers=[1],
                                                        fa_decode=fa_decode))
    ids, prompt = random_ids(1, 24), 16
    expected = logits(model, ids, swaa_full_from=prompt)
    with torch.no_grad():
        out = model(ids[:, :prompt], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(prompt, ids.shape[1]):
            out = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True,
                        swaa_full_from=prompt)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=2e-5, rtol=1e-5)
    sliding_only = logits(model, ids)  # no boundary: every token is prompt
    assert torch.allclose(sliding_only, expected, atol=1e-4) != fa_decode


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_generate_marks_the_prompt_boundary(arch):
    """generate's logits equal one forward over prompt + generated tokens with full_from at the
    prompt's end: prompt tokens slide, generated tokens see everything."""
    model = swaa_ext.adapt(tiny_model(arch), RECIPE)
    ids = random_ids(1, 20)
    sequences, scores = generate(model, ids)
    expected = logits(model, sequences, swaa_full_from=20)[:, 19:-1]
    torch.testing.assert_close(scores, expected, atol=2e-5, rtol=1e-5)
    all_prompt = logits(model, sequences)[:, 19:-1]
    assert not torch.allclose(scores, all_prompt, atol=1e-4)


def test_chunked_prefill_counts_as_prompt():
    model = swaa_ext.adapt(tiny_model("qwen2"), RECIPE)
    ids = random_ids(1, 21)
    sequences, scores = generate(model, ids)
    chunked_sequences, chunked_scores = generate(model, ids, prefill_chunk_size=4)
    assert torch.equal(chunked_sequences, sequences)
    torch.testing.assert_close(chunked_scores, scores, atol=2e-5, rtol=1e-5)


def test_new_turn_on_a_reused_cache_is_prompt():
    """Turn 2's user tokens slide (they are prompt) although they follow generated tokens."""
    model = swaa_ext.adapt(tiny_model("llama"), RECIPE)
    turn1 = random_ids(1, 12)
    sequences, _ = generate(model, turn1)
    with torch.no_grad():
        cache = model(sequences[:, :-1], use_cache=True, swaa_full_from=12).past_key_values
    conversation = torch.cat([sequences, random_ids(1, 9, seed=7)], dim=1)
    _, scores = generate(model, conversation, past_key_values=copy.deepcopy(cache))
    # The same by hand: the new turn as prompt, then decoding with the boundary at its end.
    boundary = conversation.shape[1]
    with torch.no_grad():
        out = model(conversation[:, cache.get_seq_length():], past_key_values=cache,
                    use_cache=True, swaa_full_from=boundary)
    torch.testing.assert_close(scores[:, 0], out.logits[:, -1], atol=2e-5, rtol=1e-5)
    with torch.no_grad():
        as_generated = model(conversation[:, -9:], past_key_values=copy.deepcopy(cache),
                             swaa_full_from=cache.get_seq_length()).logits[:, -1]
    assert not torch.allclose(scores[:, 0], as_generated, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen3"])
def test_batched_left_padding_equals_each_row_alone(arch):
    model = swaa_ext.adapt(tiny_model(arch), RECIPE)
    lengths = [17, 9, 13]
    ids, mask = left_padded(lengths, seed=5)
    sequences, scores = generate(model, ids, attention_mask=mask)
    width = ids.shape[1]
    for b, n in enumerate(lengths):
        row_sequences, row_scores = generate(model, ids[b:b + 1, width - n:])
        assert torch.equal(sequences[b, width - n:], row_sequences[0])
        torch.testing.assert_close(scores[b], row_scores[0], atol=2e-5, rtol=1e-5)


def test_sampled_generation_with_a_covering_window_equals_unadapted():
    model = tiny_model("qwen3", initializer_range=0.3)
    ids, mask = left_padded([14, 10], seed=3)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=20,
                  pad_token_id=0)
    torch.manual_seed(123)
    expected = model.generate(ids, **kwargs)
    swaa_ext.adapt(model, SWAAConfig(window=64, sinks=4, full_attention_layers="odd",
                                     fa_decode=True))
    torch.manual_seed(123)
    assert torch.equal(model.generate(ids, **kwargs), expected)
