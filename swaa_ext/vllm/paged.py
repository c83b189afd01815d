"""vLLM's paged KV cache, as vLLM's CPU backend lays it out (this backend shares the layout, so
KV connectors and offloading read what they expect): the views the kernels read, on every device,
through the block table (no gather), and the cache write for devices without the C++ write op.

One layer's cache arrives as vLLM's logical per-layer view `(num_blocks, Hkv, block_size, 2 * D)`
(KVCacheLayout.LBHNC); its memory per block and KV head is the block's key rows, then its value
rows (vLLM's cpu_attn.py views it as `(num_blocks, Hkv, 2 * block_size, D)`), each half in rows
of D, or, where vLLM's CPU attention runs on AMX (bfloat16, blocks of a multiple of 32 tokens),
as AMX tiles (`cache_views`). The slot of a token is `block * block_size + offset`, as in vLLM's
slot_mapping (negative = padding).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..ops import amx_kv_layout_fits


def uses_cpu_ops(kv_cache: Tensor) -> bool:
    """Whether this cache takes the CPU-only parts: the C++ write op and the AMX layout. The
    paged attention op itself reads every device's cache in place."""
    return kv_cache.device.type == "cpu"


def block_size(kv_cache: Tensor) -> int:
    return kv_cache.shape[2]


def split_cache(kv_cache: Tensor, head_size: int) -> tuple[Tensor, Tensor]:
    """(keys, values) views `(num_blocks, Hkv, block_size, D)` of one layer's cache."""
    if kv_cache.dim() != 4 or kv_cache.shape[-1] != 2 * head_size:
        raise ValueError(f"expected a KV cache (num_blocks, num_kv_heads, block_size, "
                         f"2 * {head_size}), got {tuple(kv_cache.shape)}: is the KV cache layout "
                         "LBHNC?")
    blocks, heads, size, _ = kv_cache.shape
    halves = kv_cache.view(blocks, heads, 2 * size, head_size)
    return halves[:, :, :size], halves[:, :, size:]


class CacheViews(NamedTuple):
    """How the CPU ops read and write one layer's cache: its key and value halves and the
    layout of their pages."""
    keys: Tensor
    values: Tensor
    layout: str  # "rows" or "amx" (swaa_ext.sliding_attention_paged's kv_layout)


def cache_views(kv_cache: Tensor, head_size: int) -> CacheViews:
    """split_cache with the layout a CPU cache takes: vLLM's own choice for its CPU attention
    (cpu_attn.py's _get_attn_isa): on a CPU with AMX, bfloat16 blocks of a multiple of 32
    tokens hold AMX tiles ("amx", as vLLM's AMX kernel stores them); otherwise rows."""
    keys, values = split_cache(kv_cache, head_size)
    fits = uses_cpu_ops(kv_cache) and amx_kv_layout_fits(kv_cache.dtype, head_size,
                                                         block_size(kv_cache))
    return CacheViews(keys, values, "amx" if fits else "rows")


def write(keys: Tensor, values: Tensor, key: Tensor, value: Tensor, slot_mapping: Tensor) -> None:
    """Stores token t's key/value `(T, Hkv, D)` at slot_mapping[t] of the key and value views
    `(num_blocks, Hkv, block_size, D)`; padding slots (< 0) keep what they hold. Tensor ops only,
    no host synchronisation (a GPU step runs this for every layer): a padding token writes the
    first real token's row to that token's slot (the same bytes twice), or, with no real token,
    slot 0's own contents back."""
    tokens = key.shape[0]
    slots = slot_mapping[:tokens].to(torch.int64)
    real = slots >= 0
    first = torch.argmax(real.to(torch.int8))  # the first real token (0 if none)
    source = torch.where(real, torch.arange(tokens, device=slots.device), first)
    target = slots[source].clamp(min=0)
    size = keys.shape[2]
    blocks, offsets = target // size, target % size
    keep = ~real.any()  # nothing to write: every row writes itself back
    keys[blocks, :, offsets] = torch.where(keep, keys[blocks, :, offsets],
                                           key[source].to(keys.dtype))
    values[blocks, :, offsets] = torch.where(keep, values[blocks, :, offsets],
                                             value[source].to(values.dtype))
