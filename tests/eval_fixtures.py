"""Stand-ins for the evaluation tests: a byte-level tokenizer with a chat template (one token per
byte, so token counts are character counts), and a tiny random-weight Llama that fits it."""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Qwen3-style: the template itself knows about thinking.
THINKING_TEMPLATE = CHAT_TEMPLATE + ("{% if add_generation_prompt and enable_thinking is defined "
                                     "and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}")


def byte_tokenizer(chat_template: str | None = CHAT_TEMPLATE) -> transformers.PreTrainedTokenizerFast:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", bos_token="<|im_start|>",
        pad_token="<|pad|>")
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_llama(vocab_size: int, seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    config._attn_implementation = "sdpa"
    return transformers.LlamaForCausalLM(config).eval()


def tiny_model_dir(path) -> str:
    """The tiny Llama and the byte tokenizer saved as a checkpoint directory (what `--model`
    takes); returns the directory as a string."""
    tokenizer = byte_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
