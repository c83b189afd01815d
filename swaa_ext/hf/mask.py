"""The mask function registered in `AttentionMaskInterface` under our name.

transformers calls it once per forward (per mask type) with the 2-D padding mask and the key
length; whatever it returns reaches every attention call as `attention_mask`. We never build a
dense (B, 1, Lq, Lk) mask: the kernel applies the causal/window/sink rule itself (docs/architecture.md, "The masking rule").
The only per-row fact it cannot know is where each row's real tokens start, so that is what we
hand over: `SWAAMask.pad[b]` = the number of left-padding keys of row b (its sinks start there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SWAAMask:
    """Per-row facts for the attention function. `pad`: (B,) int64 count of left-padding keys of
    each row, or None when no row has padding (one kernel call for the whole batch).
    `kv_length`: the absolute key length (past + current); a layer handed fewer keys holds a
    sink + window cache (hf/cache.py). `has_padding_mask`: a 2-D mask was given (then, as in
    transformers, restarting position ids do not mean packed sequences: hf/ragged.py)."""

    pad: Tensor | None
    kv_length: int
    has_padding_mask: bool = False


def left_padding(padding_mask: Tensor) -> Tensor | None:
    """(B, Lk) bool, True = real token -> (B,) int64 leading-padding counts, or None if no row
    starts with padding. Each row's real tokens must be one run: left padding (generation) and
    right padding (training, plain forwards: no real token ever sees a later key) are both fine;
    padding *between* real tokens (e.g. a right-padded prompt continued by generate) is not."""
    pad = (~padding_mask).to(torch.int64).cumprod(dim=1).sum(dim=1)
    trailing = (~padding_mask).flip(1).to(torch.int64).cumprod(dim=1).sum(dim=1)
    real = padding_mask.sum(dim=1)
    width = padding_mask.shape[1]
    # Rows with no real token count their padding twice; they have no run to break.
    if not torch.equal(torch.where(real == 0, width, pad + real + trailing),
                       torch.full_like(pad, width)):
        raise ValueError("swaa attention needs each row's real tokens in one run: its "
                         "attention_mask must be 0...0 1...1 (left padding) or 1...1 0...0 (right "
                         "padding); padding between real tokens happens when a right-padded "
                         "prompt is continued, so generate with tokenizer.padding_side = 'left'")
    return pad if bool(pad.any()) else None


def swaa_mask(batch_size: int, *args, kv_length: int, kv_offset: int = 0,
              attention_mask: Tensor | None = None, **kwargs) -> SWAAMask:
    """AttentionMaskInterface entry. `attention_mask` is the 2-D padding mask over all tokens
    seen so far (past + current) or None; keys are `kv_offset .. kv_offset + kv_length`.
    Other arguments (mask_function, q_length/cache_position, local_size, ...) describe the
    model's own causal/sliding pattern, which SWAA replaces, so they are ignored."""
    total = kv_offset + kv_length
    if attention_mask is None:
        return SWAAMask(pad=None, kv_length=total)
    if attention_mask.dim() != 2:
        raise ValueError(f"swaa attention expects a 2-D padding mask (batch, seq_len), "
                         f"got shape {tuple(attention_mask.shape)}")
    keys = attention_mask[:, :total].to(torch.bool)
    if keys.shape[1] < total:  # a mask shorter than the keys: the missing tail is real tokens
        keys = torch.nn.functional.pad(keys, (0, total - keys.shape[1]), value=True)
    return SWAAMask(pad=left_padding(keys), kv_length=total, has_padding_mask=True)
