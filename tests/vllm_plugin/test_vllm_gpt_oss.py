"""A tiny random-weight gpt-oss (transformers' GptOssForCausalLM saved as a checkpoint), its
layers alternating a 32-token sliding window with full attention and every layer carrying learned
sink logits, adapted with its native settings plus 4 hard sinks and saved (the config carries
`swaa`), served by vLLM through the plugin: the greedy tokens and log-probabilities equal
transformers' adapted model (`sink_logits` from the plugin's LSE epilogue on the CPU kernels)."""

from __future__ import annotations

import pytest
from conftest import Continuation, assert_same, continuations, engine, generate

import swaa_ext


@pytest.fixture(scope="module")
def gpt_oss(tmp_path_factory, tokenizer):
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=64, num_local_experts=4, num_experts_per_tok=2,
                          sliding_window=32, max_position_embeddings=1024,
                          layer_types=["sliding_attention", "full_attention"], rope_scaling=None,
                          tie_word_embeddings=False)
    torch.manual_seed(0)
    model = GptOssForCausalLM(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "sinks"):
                module.sinks.copy_(torch.randn(module.sinks.shape) * 2 + 1)
    swaa_ext.adapt(model, swaa_ext.SWAAConfig.native(model.config, sinks=4))
    folder = tmp_path_factory.mktemp("gpt_oss")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def test_gpt_oss_with_learned_sinks_equals_transformers(gpt_oss, prompts):
    import torch

    folder, model = gpt_oss
    expected = []
    for ids in prompts:
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=24,
                                 min_new_tokens=24, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
        new = out.sequences[0, len(ids):].tolist()
        expected.append(Continuation(new, [torch.log_softmax(s[0].double(), -1)[t].item()
                                           for s, t in zip(out.logits, new)]))
    with engine(folder) as llm:
        assert_same(continuations(generate(llm, prompts)), expected)
