"""What a recipe costs and saves where the window pays: prefill time and decode time per token at
long prompts (random tokens), per grid configuration, beside the FLOP model's prediction. The
demo's trade-off section (`make demo`); `bench/vllm.py` uses the same FLOP model for serving.

The FLOP model counts the linear layers (2 FLOPs per weight and token; the LM head once, at the
last position) and attention, 4 * heads * head_dim per (query, key) pair (QK^T and PV) over the
pairs the rule lets each layer see. FA decode changes nothing in a prompt."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..config import SWAAConfig
from .grid import GridEntry
from .measure import PeakMemory
from .runner import ConfigSwitch, timed_generate


@functools.cache
def keys_seen(length: int, window: int | None, sinks: int) -> int:
    """Keys summed over the queries of a causal prompt: all earlier ones (window None), else the
    last `window` (the query included) plus those of the first `sinks` not among them."""
    if window is None:
        return length * (length + 1) // 2
    return sum(min(p + 1, window) + min(sinks, max(0, p + 1 - window)) for p in range(length))


def prompt_flops(hf: dict[str, Any], length: int, swaa: SWAAConfig | None) -> float:
    """FLOPs of one prompt of `length` tokens for a model with config `hf` (a dict), under
    `swaa` (None: full attention on every layer)."""
    hidden, inter = hf["hidden_size"], hf["intermediate_size"]
    heads, kv_heads = hf["num_attention_heads"], hf["num_key_value_heads"]
    head_dim = hf.get("head_dim") or hidden // heads
    layers = hf["num_hidden_layers"]
    per_layer = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * inter
    linear = 2 * per_layer * layers * length + 2 * hidden * hf["vocab_size"]
    full = set(range(layers)) if swaa is None else set(swaa.full_layers(layers))
    attention = sum(4 * heads * head_dim * keys_seen(length, None if layer in full else swaa.window,
                                                     0 if layer in full else swaa.sinks)
                    for layer in range(layers))
    return float(linear + attention)


def long_prompt_costs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      grid: Sequence[GridEntry], lengths: Sequence[int], new_tokens: int = 4,
                      seed: int = 0) -> list[dict[str, Any]]:
    """One greedy generation of `new_tokens` tokens per (length, configuration) on random
    tokens, configurations alternating at each length after a short warm-up of each; the model
    is left as it was given. Rows: prefill seconds, decode seconds per token, and the prefill
    speedup over the first configuration measured and predicted (the FLOP model)."""
    if not lengths or any(int(n) < 1 for n in lengths):
        raise ValueError(f"lengths must be prompt lengths >= 1, got {list(lengths)}")
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    hf = model.config.get_text_config().to_dict()
    memory, switch = PeakMemory(next(model.parameters()).device), ConfigSwitch(model)
    generator = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    try:
        warm = torch.randint(0, hf["vocab_size"], (1, 64), generator=generator)
        for entry in grid:
            switch.set(entry, warm.shape[1])
            timed_generate(model, tokenizer, warm, 2, memory)
        for length in lengths:
            ids = torch.randint(0, hf["vocab_size"], (1, length), generator=generator)
            base = None
            for entry in grid:
                switch.set(entry, length)
                config = entry.swaa_config(length)
                new, prefill, decode, _ = timed_generate(model, tokenizer, ids, new_tokens + 1,
                                                         memory)
                flops = prompt_flops(hf, length, config if entry.window_fraction else None)
                base = base or (prefill, flops)
                rows.append({"config": entry.name, "length": length,
                             "window": config.window if config and entry.window_fraction
                             else None, "prefill_s": prefill,
                             "decode_s_per_token": decode / max(len(new) - 1, 1),
                             "prompt_flops": flops,
                             "prefill_speedup": base[0] / prefill,
                             "predicted_speedup": base[1] / flops})
    finally:
        switch.reset()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| prompt tokens | configuration | window | prefill s | speedup (FLOP model) | "
             "decode ms/token |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['length']} | {r['config']} | {r['window'] or 'all'} | "
                     f"{r['prefill_s']:.1f} | {r['prefill_speedup']:.2f}x "
                     f"({r['predicted_speedup']:.2f}x) | {r['decode_s_per_token'] * 1e3:.0f} |")
    return "\n".join(lines)
