"""The sink + window KV cache: window-only layers keep sinks + window - 1 tokens, and results
equal a full forward; memory is reported; the model's own sliding cache is kept out of the way."""

import pytest
import torch
from transformers import DynamicCache

import swaa_ext
from swaa_ext import SWAAConfig
from swaa_ext.hf import SWAACache, cache_memory
from hf_models import generate, left_padded, logits, random_ids, tiny_model

WINDOW_ONLY = SWAAConfig(window=5, sinks=2, full_attention_layers=[1])


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_generate_with_the_sink_window_cache_equals_one_forward(arch):
    model = swaa_ext.adapt(tiny_model(arch), WINDOW_ONLY)
    ids = random_ids(1, 23)
    out = model.generate(ids, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    cache = out.past_key_values
    assert isinstance(cache, SWAACache)
    kept = [layer.keys.shape[-2] for layer in cache.layers]
    assert kept == [2 + 4, 32, 6, 6]  # sinks + window - 1 on window-only layers; layer 1 full
    expected = logits(model, out.sequences)[:, 22:-1]
    torch.testing.assert_close(torch.stack(out.logits, dim=1), expected, atol=2e-5, rtol=1e-5)


def test_left_padded_batch_with_the_sink_window_cache_equals_each_row_alone():
    model = swaa_ext.adapt(tiny_model("mistral"), WINDOW_ONLY)
    lengths = [16, 7, 12]
    ids, mask = left_padded(lengths, seed=9)
    sequences, scores = generate(model, ids, new_tokens=8, attention_mask=mask)
    width = ids.shape[1]
    for b, n in enumerate(lengths):
        row_sequences, row_scores = generate(model, ids[b:b + 1, width - n:], new_tokens=8)
        assert torch.equal(sequences[b, width - n:], row_sequences[0])
        torch.testing.assert_close(scores[b], row_scores[0], atol=2e-5, rtol=1e-5)


def test_chunked_prefill_and_decode_by_hand_equal_one_forward():
    model = swaa_ext.adapt(tiny_model("qwen2"), WINDOW_ONLY)
    ids = random_ids(1, 31)
    cache, pieces = SWAACache(model.config), []
    with torch.no_grad():
        for start, stop in [(0, 9), (9, 20), (20, 21), (21, 26)] + [(t, t + 1)
                                                                     for t in range(26, 31)]:
            pieces.append(model(ids[:, start:stop], past_key_values=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), logits(model, ids), atol=2e-5,
                               rtol=1e-5)


def test_memory_is_reported_and_stays_bounded():
    model = swaa_ext.adapt(tiny_model("llama"), WINDOW_ONLY)
    cache = SWAACache(model.config)
    per_token = 2 * 2 * 16 * 4  # k and v, 2 KV heads, head_dim 16, fp32
    with torch.no_grad():
        model(random_ids(1, 40), past_key_values=cache, use_cache=True)
        first = cache_memory(cache)
        model(random_ids(1, 25, seed=4), past_key_values=cache, use_cache=True)
    second = cache_memory(cache)
    assert first.full_bytes == 4 * 40 * per_token and second.full_bytes == 4 * 65 * per_token
    assert first.kept_bytes == (40 + 3 * 6) * per_token
    assert second.kept_bytes == (65 + 3 * 6) * per_token
    assert second.saved_bytes == 3 * (65 - 6) * per_token


def test_fa_decode_layers_keep_the_full_cache():
    model = swaa_ext.adapt(tiny_model("llama"), SWAAConfig(window=5, sinks=2, fa_decode=True))
    out = model.generate(random_ids(1, 20), max_new_tokens=3, do_sample=False,
                         return_dict_in_generate=True, pad_token_id=0)
    assert not isinstance(out.past_key_values, SWAACache)
    assert cache_memory(out.past_key_values).saved_bytes == 0


def test_native_sliding_window_is_replaced_and_restored():
    """Mistral's own sliding_window would give the default cache sliding layers that drop the
    sinks: adapt turns it off (SWAA sets every window) and restore brings it back."""
    model = tiny_model("mistral", sliding_window=7)
    swaa_ext.adapt(model, SWAAConfig(window=12, sinks=2, fa_decode=True))
    assert model.config.sliding_window is None
    ids = random_ids(1, 30)
    with torch.no_grad():
        out = model(ids[:, :20], use_cache=True, swaa_full_from=20)
        steps = [out.logits]
        for t in range(20, 30):
            out = model(ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True,
                        swaa_full_from=20)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), logits(model, ids, swaa_full_from=20),
                               atol=2e-5, rtol=1e-5)
    swaa_ext.restore(model)
    assert model.config.sliding_window == 7


def test_a_cache_that_dropped_needed_keys_is_a_clear_error():
    native = tiny_model("mistral", sliding_window=4)
    model = swaa_ext.adapt(tiny_model("mistral"), SWAAConfig(window=8, sinks=2))
    cache = DynamicCache(config=native.config)  # sliding layers keep only 3 keys
    with torch.no_grad():
        model(random_ids(1, 12), past_key_values=cache, use_cache=True)
        with pytest.raises(RuntimeError, match="does not keep this layer's sinks and window"):
            model(random_ids(1, 1), past_key_values=cache, use_cache=True)
