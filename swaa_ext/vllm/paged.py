"""vLLM's paged KV cache, as vLLM's CPU backend lays it out (this backend shares the layout, so
KV connectors and offloading read what they expect): the views the kernels read, and for the
caches the paged op cannot read (non-CPU devices), the write and the gather that turns the cache
into the varlen op's packed keys.

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


def reads_in_place(kv_cache: Tensor) -> bool:
    """Whether swaa_ext.sliding_attention_paged reads this cache through the block table (the
    CPU kernel, any dtype), rather than a gather into packed keys."""
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
    fits = amx_kv_layout_fits(kv_cache.dtype, head_size, block_size(kv_cache))
    return CacheViews(keys, values, "amx" if fits else "rows")


def write(kv_cache: Tensor, key: Tensor, value: Tensor, slot_mapping: Tensor) -> None:
    """Stores token t's key/value `(T, Hkv, D)` at slot_mapping[t]; padding slots (< 0) are
    skipped."""
    keys, values = split_cache(kv_cache, key.shape[-1])
    slots = slot_mapping[: key.shape[0]].to(torch.int64)
    real = slots >= 0
    if not bool(real.all()):
        slots, key, value = slots[real], key[real], value[real]
    block_size = keys.shape[2]
    blocks, offsets = slots // block_size, slots % block_size
    keys[blocks, :, offsets] = key.to(keys.dtype)  # (T, Hkv, D) into (nb, Hkv, bs, D)
    values[blocks, :, offsets] = value.to(values.dtype)


def gather(kv_cache: Tensor, head_size: int, slots: Tensor) -> tuple[Tensor, Tensor]:
    """Keys and values `(len(slots), Hkv, D)` of the given slots, packed in order."""
    keys, values = split_cache(kv_cache, head_size)
    block_size = keys.shape[2]
    blocks, offsets = slots // block_size, slots % block_size
    return keys[blocks, :, offsets], values[blocks, :, offsets]


def key_slots(block_table: Tensor, block_size: int, starts: Tensor, ends: Tensor,
              sinks: int = 0) -> tuple[Tensor, Tensor]:
    """The cache slots of each request's keys, packed request after request, and their varlen
    prefix sums `cu_seqlens_k` (int32). Request r keeps its first `min(sinks, ...)` keys and the
    keys `[starts[r], ends[r])`; with starts all 0 that is every key. Returns (slots int64,
    cu_seqlens_k int32)."""
    starts = torch.where(starts <= sinks, torch.zeros_like(starts), starts)  # contiguous: keep all
    heads = torch.where(starts > 0, torch.full_like(starts, sinks), torch.zeros_like(starts))
    lengths = heads + (ends - starts)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=cu[1:])
    total = int(cu[-1])
    request = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device),
                                      lengths, output_size=total)
    index = torch.arange(total, device=lengths.device) - cu[:-1][request]  # within the request
    # index < head: sink key `index`; else key starts + (index - head)
    head = heads[request]
    position = torch.where(index < head, index, starts[request] + index - head)
    blocks = block_table[request, position // block_size].to(torch.int64)
    return blocks * block_size + position % block_size, cu.to(torch.int32)
