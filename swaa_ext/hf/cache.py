"""A KV cache whose window-only layers keep O(sinks + window) tokens.

A layer that never looks past its window (a sliding layer without FA decode) only ever needs each
row's sinks and the last `window - 1` keys; transformers' own sliding-window cache layer drops the
sinks, so those layers get `SinkWindowLayer`. Every other layer is a plain `DynamicLayer`.

Layout contract with the attention function (hf/attention.py): once a SinkWindowLayer has dropped
anything, `update` returns [head | last window-1 cached keys | the new keys], where the head is the
first `sinks + max_padding` positions (each left-padded row's sinks start at its pad count). The
attention function sees fewer keys than the absolute length and slices the same layout per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import transformers
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from ..config import LayerRule, SWAAConfig

_CROP_TAKES_A_COUNT = int(transformers.__version__.split(".")[0]) >= 5


class SinkWindowLayer(DynamicLayer):
    """Keeps the first `head` and the last `lookback + rollback` tokens (`rule.lookback`: the keys
    before the next query that its window reads); reports the absolute length. `rollback` extra
    tail tokens let `crop` undo that many (assisted decoding rejects draft tokens); a crop beyond
    them would lose keys the window needs, and is an error."""

    def __init__(self, head: int, rule: LayerRule, rollback: int = 0):
        super().__init__()
        self.head, self.rollback = head, rollback
        self.lookback = rule.lookback
        self.cumulative_length = 0  # tokens seen, dropped ones included

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.cumulative_length += key_states.shape[-2]
        keys, values = super().update(key_states, value_states, *args, **kwargs)  # kept + new
        self.keys, self.values = self._keep(keys), self._keep(values)
        return keys, values

    def _keep(self, states: torch.Tensor) -> torch.Tensor:
        tail = self.lookback + self.rollback
        if states.shape[-2] <= self.head + tail:
            return states
        return torch.cat([states[..., :self.head, :], states[..., states.shape[-2] - tail:, :]],
                         dim=-2)

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_mask_sizes(self, query: int | torch.Tensor, *args: Any) -> tuple[int, int]:
        # transformers 5 passes the query length, 4.57 the query's cache positions.
        query_length = query if isinstance(query, int) else query.shape[0]
        return self.cumulative_length + query_length, 0  # the absolute sizes: pads stay countable

    def crop(self, length: int) -> None:
        """Drops the newest tokens: transformers 5 passes minus the count to remove (0 = none);
        4.57 the length to keep, or a negative count to remove."""
        remove = -length if length < 0 or _CROP_TAKES_A_COUNT else self.cumulative_length - length
        if remove <= 0 or not self.is_initialized:
            return
        kept = self.keys.shape[-2]
        dropped = kept < self.cumulative_length
        if remove > kept or (dropped and kept - remove < self.head + self.lookback):
            raise ValueError(f"a sink + window cache layer can roll back at most {self.rollback} "
                             f"tokens, asked for {remove}: build SWAACache(config, rollback=...) "
                             "with more (adapted generate sizes it for assisted decoding)")
        self.keys, self.values = self.keys[..., :kept - remove, :], self.values[..., :kept - remove, :]
        self.cumulative_length -= remove


def window_only_layers(text_config: Any) -> list[int]:
    """Layers of an adapted model that never look past window + sinks (SWAAConfig's)."""
    return SWAAConfig.from_saved(text_config.swaa).window_only_layers(
        text_config.num_hidden_layers)


class SWAACache(DynamicCache):
    """DynamicCache with SinkWindowLayer on the window-only layers of an adapted model.

    `max_padding`: the most left padding any row of the batch has (generate's adapted wrapper
    passes it); the sinks of every row must fit in the kept head. `rollback`: how many of the
    newest tokens `crop` may remove (kept beyond the window; assisted and prompt-lookup decoding
    need as many as they draft)."""

    def __init__(self, config: Any, max_padding: int = 0, rollback: int = 0):
        for name, value in (("max_padding", max_padding), ("rollback", rollback)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        text_config = config.get_text_config(decoder=True)
        if getattr(text_config, "swaa", None) is None:
            raise ValueError("SWAACache needs an adapted model's config (swaa_ext.adapt first)")
        config, num_layers = SWAAConfig.from_saved(text_config.swaa), text_config.num_hidden_layers
        rules = [config.layer_rule(i, num_layers) for i in range(num_layers)]
        layers = [SinkWindowLayer(head=rule.sinks + max_padding, rule=rule, rollback=rollback)
                  if rule.window_only else DynamicLayer() for rule in rules]
        Cache.__init__(self, layers=layers)  # DynamicCache's own __init__ would pick layer types


@dataclass(frozen=True)
class CacheMemory:
    kept_bytes: int  # what the cache holds
    full_bytes: int  # what a full cache of the same tokens would hold

    @property
    def saved_bytes(self) -> int:
        return self.full_bytes - self.kept_bytes


def cache_memory(cache: Cache) -> CacheMemory:
    """Bytes held by `cache`'s keys and values, and by a full cache of the same tokens."""
    kept = full = 0
    for layer in cache.layers:
        if not layer.is_initialized or layer.keys is None or layer.keys.numel() == 0:
            continue
        per_token = 2 * layer.keys[..., :1, :].numel() * layer.keys.element_size()  # k and v
        kept += per_token * layer.keys.shape[-2]
        full += per_token * layer.get_seq_length()
    return CacheMemory(kept_bytes=kept, full_bytes=full)
