"""The KV-cache specs of SWAA layers, with their managers on vLLM's spec registry
(vllm/v1/kv_cache_spec_registry.py): window-only layers keep only each request's sinks and window
(`SinkWindowSpec`); with FA decode, blocks past a request's prompt are never offered for reuse
(`PromptPrefixSpec`).

vLLM's own `SlidingWindowSpec` + `SlidingWindowManager` free every block before the window of
the next query. A SWAA window-only layer (sliding, no FA decode) also reads the first `sinks`
keys of each request, so `SinkWindowSpec` adds `sinks` and `SinkWindowManager` keeps the leading
`ceil(sinks / block_size)` blocks and frees the gap between them and the window. Layers with FA
decode and full layers keep vLLM's `FullAttentionSpec` (every key stays readable).

Prefix caching under FA decode: a generated token's keys and values were computed with every
earlier key visible, while the same token inside a later prompt is computed under the window. So
`PromptPrefixManager` caches a request's blocks only up to its prompt length: a follow-up
request reuses the earlier prompt's blocks (computed as its own prefill would compute them) and
recomputes the rest, and its output does not depend on what the cache happens to hold. Window-only
and full layers compute every token by one rule, so their blocks are reused as vLLM reuses them.

How a layer gets its spec: vLLM gives a layer a `SlidingWindowSpec` when the model config marks
it `sliding_attention` in `layer_types` (swaa_ext.vllm.hf_overrides does that for window-only
layers), else a `FullAttentionSpec`; the backend's `customize_spec` (backend.py) turns them into
the specs here. The sink count then travels in the spec. vLLM calls `customize_spec` with the
spec alone (not the layer or the config), so it reads the SWAA settings of the model vLLM built
last in this process (`record_model`, called by the backend while vLLM builds a model, with None
for a model without settings); the metadata builder checks every SWAA layer's spec against its
model's settings (`check_spec`), so a mismatch fails at start-up instead of freeing blocks the
kernel reads. Models built one after another in a process each get their own settings; a
speculative-decoding draft is refused (backend.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vllm.utils.math_utils import cdiv
from vllm.v1.core.kv_cache_utils import resolve_block_hashes
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager, SlidingWindowManager
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheSpec, SlidingWindowSpec
from vllm.v1.kv_cache_spec_registry import KVCacheSpecRegistry

from ..config import LayerRule, SWAAConfig


@dataclass(frozen=True, kw_only=True)
class SinkWindowSpec(SlidingWindowSpec):
    """A sliding-window layer that also reads each request's first `sinks` keys."""

    sinks: int

    @property
    def sink_blocks(self) -> int:
        return cdiv(self.sinks, self.block_size)

    def max_admission_blocks_per_request(self, max_in_flight_tokens: int,
                                         max_model_len: int) -> int:
        # vLLM's bound for the window (and in-flight tokens) plus the sink blocks it keeps.
        window = super().max_admission_blocks_per_request(max_in_flight_tokens, max_model_len)
        return min(window + self.sink_blocks, cdiv(max_model_len, self.block_size) + 1)

    def is_uniform_with_collection(self, kv_cache_specs: dict[str, KVCacheSpec]) -> bool:
        return all(isinstance(spec, SinkWindowSpec) and spec.sliding_window == self.sliding_window
                   and spec.sinks == self.sinks for spec in kv_cache_specs.values())


class SinkWindowManager(SlidingWindowManager):
    """SlidingWindowManager that keeps the sink blocks: of a request's blocks it holds the first
    `sink_blocks` and those from the window of the next query on; the gap is freed (its entries
    in the block table become vLLM's null block, and the blocks go back to the pool)."""

    def __init__(self, kv_cache_spec: SinkWindowSpec, **kwargs) -> None:
        super().__init__(kv_cache_spec, **kwargs)
        self.sink_blocks = kv_cache_spec.sink_blocks
        self.rule = LayerRule(window=kv_cache_spec.sliding_window, sinks=kv_cache_spec.sinks)

    def get_num_skipped_tokens(self, num_computed_tokens: int) -> int:
        # vLLM reads this as "the first N tokens are no longer needed" (it pads them with null
        # blocks when a request starts from a prefix-cache hit). With sinks the first tokens are
        # always needed: nothing leading is skipped; the gap is freed by remove_skipped_blocks.
        if self.sink_blocks:
            return 0
        return super().get_num_skipped_tokens(num_computed_tokens)

    def remove_skipped_blocks(self, request_id: str, processed_computed_tokens: int,
                              num_prompt_tokens: int | None = None) -> None:
        # The next query (position `processed_computed_tokens`) sees keys from
        # processed_computed_tokens - (window - 1) on: blocks wholly before that and after the
        # sink blocks are no longer read.
        window_start = max(0, self.rule.window_start(processed_computed_tokens + 1)
                           - self.extra_retained_tokens)
        self._remove_blocks_in_range(request_id, self.sink_blocks,
                                     window_start // self.block_size)

    @classmethod
    def find_longest_cache_hit(cls, block_hashes, max_length, kv_cache_group_ids, block_pool,
                               kv_cache_spec, drop_eagle_block, alignment_tokens,
                               dcp_world_size=1, pcp_world_size=1):
        """vLLM's window hit (the blocks of the window before the hit's end, null blocks
        before them), with the sink blocks filled in from the cache; when a sink block is not
        cached, the hit shrinks to the cached blocks before it."""
        if drop_eagle_block:
            raise NotImplementedError("swaa_ext's sink + window KV cache does not support "
                                      "EAGLE/MTP speculative decoding")
        computed, _ = super().find_longest_cache_hit(
            block_hashes, max_length, kv_cache_group_ids, block_pool, kv_cache_spec,
            drop_eagle_block, alignment_tokens, dcp_world_size, pcp_world_size)
        block_size = kv_cache_spec.block_size
        hashes = resolve_block_hashes(
            block_hashes, block_pool.hash_block_size, block_size,
            supports_fine_grained_hash_lookup=cls.supports_fine_grained_hash_lookup,
            alignment_tokens=alignment_tokens)
        for i in range(min(kv_cache_spec.sink_blocks, len(computed[0]))):
            if not computed[0][i].is_null:
                continue
            cached = block_pool.get_cached_block(hashes[i], kv_cache_group_ids)
            if cached is None:  # blocks [0, i) are all cached: a hit of i blocks is complete
                keep = i
                while keep and keep * block_size % alignment_tokens:
                    keep -= 1
                for blocks in computed:
                    del blocks[keep:]
                break
            for blocks, block in zip(computed, cached):
                blocks[i] = block
        return computed, len(computed[0]) * block_size

    @classmethod
    def reachable_block_mask(cls, start_block, end_block, alignment_tokens, kv_cache_spec,
                             use_eagle, *args, **kwargs):
        # Every later hit needs the sink blocks: always cache them.
        mask = super().reachable_block_mask(start_block, end_block, alignment_tokens,
                                            kv_cache_spec, use_eagle, *args, **kwargs)
        if mask is not None:
            for i in range(start_block, min(end_block, kv_cache_spec.sink_blocks)):
                mask[i - start_block] = True
        return mask


@dataclass(frozen=True, kw_only=True)
class PromptPrefixSpec(FullAttentionSpec):
    """A full-cache layer of an FA-decode model: its blocks are prefix-cached up to each
    request's prompt length only (module docstring)."""


class PromptPrefixManager(FullAttentionManager):
    def cache_blocks(self, request, num_tokens: int, *args, **kwargs) -> None:
        super().cache_blocks(request, min(num_tokens, request.num_prompt_tokens), *args, **kwargs)


def register() -> None:
    """Puts the specs and their managers on vLLM's registry (in every process). vLLM fills the
    registry with its built-in specs only while it is empty, so that is done first."""
    KVCacheSpecRegistry._ensure_registered()
    KVCacheSpecRegistry.register(SinkWindowSpec, SinkWindowManager,
                                 uniform_type_base_spec=SinkWindowSpec)
    KVCacheSpecRegistry.register(PromptPrefixSpec, PromptPrefixManager,
                                 uniform_type_base_spec=FullAttentionSpec)


# The SWAA settings of the model vLLM built last in this process, for customize_spec (see the
# module docstring for why the hook cannot be told directly).
_model: dict[str, SWAAConfig | None] = {"config": None}


def record_model(config: SWAAConfig | None) -> None:
    _model["config"] = config


def _fields(spec) -> dict:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.init}


def for_swaa(spec):
    """A layer's spec under the recorded SWAA settings: a sliding-window spec of a window-only
    layer becomes a SinkWindowSpec with the sinks; with FA decode a full spec becomes a
    PromptPrefixSpec; any other spec, or any spec of a model without settings, is vLLM's own."""
    config = _model["config"]
    if config is None:
        return spec
    if type(spec) is SlidingWindowSpec and not config.fa_decode:
        if spec.sliding_window != config.window:
            raise ValueError(f"a layer slides with window {spec.sliding_window}, the SWAA "
                             f"settings say {config.window}: serve with "
                             "swaa_ext.vllm.hf_overrides()")
        return SinkWindowSpec(**_fields(spec), sinks=config.sinks)
    if type(spec) is FullAttentionSpec and config.fa_decode:
        return PromptPrefixSpec(**_fields(spec))
    return spec


def check_spec(spec, config: SWAAConfig | None) -> None:
    """Raises RuntimeError when a layer's KV spec does not carry its model's SWAA settings."""
    if config is None:
        return
    expected = None
    if isinstance(spec, SlidingWindowSpec) and not config.fa_decode:
        ok = isinstance(spec, SinkWindowSpec) and spec.sinks == config.sinks and \
            spec.sliding_window == config.window
        expected = f"SinkWindowSpec(sliding_window={config.window}, sinks={config.sinks})"
    elif config.fa_decode:
        ok = isinstance(spec, PromptPrefixSpec)
        expected = "PromptPrefixSpec"
    else:
        ok = True
    if not ok:
        raise RuntimeError(f"swaa_ext: a layer's KV-cache spec is {spec!r}, its SWAA settings "
                           f"need {expected}; was another model built in this process while "
                           "this one was being set up?")
