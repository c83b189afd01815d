"""The attention function registered in `AttentionInterface` (the transformers backend contract:
inputs (B, H, S, D), output (B, S, H, D), per-layer facts from `module`).

Per layer it reads `module.config.swaa` (written by `adapt`) and `module.layer_idx`: full layers
run causal attention, the others sink + sliding window. With `fa_decode`, queries at or after the
prompt boundary attend to everything. The boundary is an absolute position in the padded sequence
(int or (B,) tensor): the forward kwarg `swaa_full_from`, else the enclosing `prompt_boundary(...)`
context (which the adapted `generate` opens with the prompt length), else never.

Ragged batches (hf/ragged.py): without padding or packing, the whole batch is one dense kernel call.
A left-padded batch, or packed sequences (transformers' flattening collator), is one varlen call:
each row or packed sequence is its own sequence, with its own sinks (its first real tokens) and
window, computing exactly what it would alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor
from transformers.utils import logging

from ..config import LayerRule, SWAAConfig
from ..ops import full_from_tensor, sliding_attention
from . import ragged as ragged_batches
from .mask import SWAAMask

logger = logging.get_logger(__name__)

ATTN_IMPLEMENTATION = "swaa"
FULL_FROM_KWARG = "swaa_full_from"
# Set by adapt() on each attention module: a model that merely has attn_implementation="swaa"
# (from_pretrained of a saved adapted model) has no prompt boundary in generate and no sink +
# window cache yet, so it must not run as if it were adapted.
ADAPTED = "_swaa_adapted"
# A context variable, not model state: scoped to the `with` block, per thread / task.
_BOUNDARY: ContextVar[Tensor | int | None] = ContextVar("swaa_prompt_boundary", default=None)
# Forwarded by the models but meaningless here: positions are already in q/k (RoPE) and the cache
# sizes the keys; `sliding_window` is the model's own window, which SWAA replaces. position_ids are
# read for packing (hf/ragged.py), never for positions; num_items_in_batch is the Trainer's, for
# the loss.
_IGNORED_KWARGS = {"position_ids", "seq_idx", "num_items_in_batch", "cache_position", "use_cache", "sliding_window", "is_causal",
                   "output_attentions", "output_hidden_states", "output_router_logits", "return_dict",
                   "position_embeddings"}
# Forwarded by some models and changing what attention computes: refused, never ignored.
_REFUSED_KWARGS = {"softcap": "logit soft-capping"}
# gpt-oss's learned sinks, one logit per query head (swaa_ext/sink_logits.py).
SINK_LOGITS_KWARG = "s_aux"


RULE = "_swaa_rule"  # module attribute: (the config.swaa it was read from, its LayerRule)


def layer_attention(module: torch.nn.Module) -> LayerRule:
    """The rule of this attention module (SWAAConfig's, from the model's config.swaa)."""
    swaa = getattr(module.config, "swaa", None)
    if swaa is None:
        raise RuntimeError("attention implementation 'swaa' is set but the config has no `swaa` "
                           "settings: switch models with swaa_ext.adapt(model, config)")
    if not getattr(module, ADAPTED, False):
        raise RuntimeError("this model has attn_implementation='swaa' (loaded from a save of an "
                           "adapted model?) but swaa_ext.adapt was not called on it: call "
                           "swaa_ext.adapt(model) to apply its saved config.swaa (generate then "
                           "sets the FA decode boundary and the sink + window cache)")
    # Parsed once per settings dict (adapt writes a new one each time), not on every forward.
    cached = getattr(module, RULE, None)
    if cached is None or cached[0] is not swaa:
        cached = (swaa, SWAAConfig.from_saved(swaa).layer_rule(module.layer_idx))
        setattr(module, RULE, cached)
    return cached[1]


@contextmanager
def prompt_boundary(full_from: Tensor | int | None) -> Iterator[None]:
    """Within the block, SWAA layers with fa_decode treat positions >= `full_from` (absolute, in
    the padded sequence; int or one per row) as generated tokens that see the whole context."""
    token = _BOUNDARY.set(full_from)
    try:
        yield
    finally:
        _BOUNDARY.reset(token)


def _full_from(value: Tensor | int | None, batch: int, device: torch.device) -> Tensor | None:
    """The forward kwarg as a (B,) int64 tensor of absolute (padded) positions, or None."""
    if isinstance(value, Tensor):  # any integer tensor of 1 or B values, on any device
        value = value.to(device=device, dtype=torch.int64).reshape(-1)
        if value.numel() == 1:
            return value.expand(batch).contiguous()
        if value.numel() != batch:
            raise ValueError(f"{FULL_FROM_KWARG} must be an int or have one value per batch row "
                             f"({batch}), got {value.numel()} values")
        return value
    return full_from_tensor(value, batch, device, name=FULL_FROM_KWARG)


def _warn_unsupported(dropout: float, kwargs: dict) -> None:
    if dropout:
        logger.warning_once(f"swaa attention has no attention dropout; dropout={dropout} ignored")
    for key, value in kwargs.items():
        if value is not None and key in _REFUSED_KWARGS:
            raise ValueError(f"swaa attention cannot apply `{key}` ({_REFUSED_KWARGS[key]}), "
                             "which this model uses: it cannot be served exactly")
        if value is not None and key not in _IGNORED_KWARGS:
            logger.warning_once(f"swaa attention does not support `{key}`; it is ignored")


def swaa_attention_forward(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
                           attention_mask: SWAAMask | None, scaling: float | None = None,
                           dropout: float = 0.0, **kwargs) -> tuple[Tensor, None]:
    rule = layer_attention(module)
    window, sinks, fa_decode = rule.window, rule.sinks, rule.fa_decode
    explicit = kwargs.pop(FULL_FROM_KWARG, None)
    sink_logits = kwargs.pop(SINK_LOGITS_KWARG, None)
    boundary = (_BOUNDARY.get() if explicit is None else explicit) if fa_decode else None
    if attention_mask is not None and not isinstance(attention_mask, SWAAMask):
        raise TypeError("swaa attention got a precomputed mask it cannot honour "
                        f"({type(attention_mask).__name__}); pass a 2-D padding mask instead")
    batch, len_q = query.shape[0], query.shape[2]
    pad = attention_mask.pad if attention_mask is not None else None
    total = attention_mask.kv_length if attention_mask is not None else key.shape[2]
    has_padding_mask = attention_mask is not None and attention_mask.has_padding_mask
    ragged = ragged_batches.from_packing(kwargs, batch, len_q, key.shape[2], has_padding_mask,
                                         query.device)
    _warn_unsupported(dropout, kwargs)
    if ragged is not None and pad is not None:
        raise ValueError("swaa attention got packed sequences (cu_seq_lens_* kwargs) and a "
                         "padded attention_mask; pass one or the other")
    head = _sink_window_head(key.shape[2], total, len_q, rule, pad)

    if ragged is None and pad is None:  # one dense call for the batch; query, key: (B, H, S, D)
        full_from = _full_from(boundary, batch, query.device)
        out = sliding_attention(query, _keys(key, sinks, head), _keys(value, sinks, head),
                                window, sinks, full_from=full_from, scale=scaling,
                                sink_logits=sink_logits)
        return out.transpose(1, 2), None  # (B, S, H, D)
    if ragged is None:  # left padding: row b is one sequence starting at its first real token
        ragged = ragged_batches.from_padding(pad, len_q, key.shape[2], total, sinks, head)
        boundary = _full_from(boundary, batch, query.device)
    full_from = ragged_batches.per_sequence_full_from(ragged, boundary)
    out = ragged_batches.varlen_attention(ragged, query, key, value, window, sinks, full_from,
                                          scaling, sink_logits)
    return out, None  # (B, S, H, D)


def _sink_window_head(len_k: int, total: int, len_q: int, rule: LayerRule,
                      pad: Tensor | None) -> int | None:
    """None when the layer got every key; else the head length of a sink + window cache
    (layout [head | lookback cached | len_q new], hf/cache.py), checked to hold the sinks."""
    if len_k == total:
        return None
    head = rule.window_start(len_k, len_q) if rule.window is not None else -1
    need = rule.sinks + (int(pad.max()) if pad is not None else 0)
    if head < need:
        raise RuntimeError(f"the KV cache holds {len_k} of {total} keys, which does not keep this "
                           f"layer's sinks and window (window={rule.window}, sinks={rule.sinks}); use "
                           "swaa_ext.hf.SWAACache (adapted generate does) or a full cache")
    return head


def _keys(states: Tensor, sinks: int, head: int | None) -> Tensor:
    """The batch's keys in kernel order (no padding): all of them, or for a sink + window cache
    the sinks followed by the window tail (a padded batch does the same per row, hf/ragged.py)."""
    if head is None:
        return states
    return torch.cat([states[:, :, :sinks], states[:, :, head:]], dim=2)
