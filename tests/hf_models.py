"""Tiny random-weight decoder models of each supported architecture (fp32) and small helpers for
the HF tests."""

from __future__ import annotations

import torch
import transformers

COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)

# name -> (config class, extra config fields)
ARCHITECTURES = {
    "llama": (transformers.LlamaConfig, {}),
    "qwen2": (transformers.Qwen2Config, {}),
    "qwen3": (transformers.Qwen3Config, {"head_dim": 16}),
    "qwen3_moe": (transformers.Qwen3MoeConfig, {"head_dim": 16, "num_experts": 4,
                                                "num_experts_per_tok": 2,
                                                "moe_intermediate_size": 32,
                                                "decoder_sparse_step": 1}),
    "mistral": (transformers.MistralConfig, {"sliding_window": None}),
}


def tiny_config(arch: str, **overrides):
    config_class, extra = ARCHITECTURES[arch]
    config = config_class(**{**COMMON, **extra, **overrides})
    config._attn_implementation = "sdpa"
    return config


def tiny_model(arch: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(arch, **overrides),
                                                          dtype=torch.float32)
    return model.eval()


def random_ids(batch: int, length: int, seed: int = 1, vocab: int = COMMON["vocab_size"]):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=generator)


def left_padded(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids (pad id 0) and attention_mask for rows of the given real lengths, left padded."""
    width = max(lengths)
    ids = random_ids(len(lengths), width, seed=seed)
    mask = torch.arange(width)[None] >= torch.tensor([[width - n] for n in lengths])
    return ids.masked_fill(~mask, 0), mask.long()


def logits(model, ids, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kwargs).logits


def generate(model, ids, new_tokens=6, **kwargs):
    out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=0, **kwargs)
    return out.sequences, torch.stack(out.logits, dim=1)  # (B, L), (B, new, V)
