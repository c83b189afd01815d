"""Ragged batches as one varlen kernel call.

Two kinds of raggedness reach the attention function, and both become FlashAttention's varlen
layout (each sequence's real queries and keys, flattened to (total, H, D), with `cu_seqlens`):

- **Padded rows** (batched generation, padded training): row b's real keys start at its pad count
  `pad[b]`; one sequence per row, so its sinks are its own first real tokens. A layer holding a
  sink + window cache (hf/cache.py) sees [head | window tail]; a row's keys are then its sinks in
  the head followed by the tail, as in `attention._sink_window_head`.
- **Packed sequences** (training with `DataCollatorWithFlattening`): several samples share a row.
  transformers signals them the two ways its own backends read: the flash-attention kwargs
  `cu_seq_lens_q` / `cu_seq_lens_k` / `max_length_q` / `max_length_k` over the flattened tokens,
  or, without them, `position_ids` that restart (sdpa's `find_packed_sequence_indices` rule: a
  new sequence starts wherever the position is not the previous one plus 1). Like transformers,
  position ids are read only when no 2-D padding mask was given, and only when the layer sees no
  past keys (packing is a prefill/training layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .. import ops

_FLASH_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


@dataclass(frozen=True)
class Ragged:
    """Where each sequence's tokens sit in the padded (B, Lq) queries / (B, Lk) keys.

    `query_index` / `key_index`: flat indices into B * Lq / B * Lk of the tokens the sequences
    use, in order; None means every token (packing, where nothing is padding).
    `key_start[s]`: the padded position of sequence s's first key, which turns a padded absolute
    `full_from` into the position relative to the sequence that the varlen op takes."""

    query_index: Tensor | None
    key_index: Tensor | None
    cu_seqlens_q: Tensor
    cu_seqlens_k: Tensor
    max_seqlen_q: int
    max_seqlen_k: int
    key_start: Tensor
    packed: bool

    @property
    def num_sequences(self) -> int:
        return self.cu_seqlens_q.numel() - 1


def _cu_seqlens(lengths: Tensor) -> Tensor:
    return torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)


def from_padding(pad: Tensor, len_q: int, len_k: int, total: int, sinks: int,
                 head: int | None) -> Ragged:
    """One sequence per padded row. `pad`: (B,) left-padding counts; the layer got `len_k` of the
    `total` keys (fewer: a sink + window cache whose tail starts at `head`)."""
    batch, device = pad.shape[0], pad.device
    i = torch.arange(len_q, device=device)
    j = torch.arange(len_k, device=device)
    # Query row i sits at absolute position i + total - len_q; padding queries are dropped.
    keep_q = (i[None] + (total - len_q)) >= pad[:, None]
    keep_k = j[None] >= pad[:, None]
    if head is not None:  # the row's sinks inside the head, then the window tail
        keep_k &= (j[None] < pad[:, None] + sinks) | (j[None] >= head)
    len_q_per_row, len_k_per_row = keep_q.sum(1), keep_k.sum(1)
    return Ragged(query_index=keep_q.reshape(-1).nonzero().squeeze(1),
                  key_index=keep_k.reshape(-1).nonzero().squeeze(1),
                  cu_seqlens_q=_cu_seqlens(len_q_per_row), cu_seqlens_k=_cu_seqlens(len_k_per_row),
                  max_seqlen_q=int(len_q_per_row.max()) if batch else 0,
                  max_seqlen_k=int(len_k_per_row.max()) if batch else 0,
                  key_start=pad.to(torch.int64), packed=False)


def from_packing(kwargs: dict, batch: int, len_q: int, len_k: int, has_padding_mask: bool,
                 device: torch.device) -> Ragged | None:
    """The packed layout transformers signals, or None when the batch is not packed. Pops the
    flash-attention kwargs it reads from `kwargs`."""
    flash = {name: kwargs.pop(name, None) for name in _FLASH_KWARGS}
    position_ids = kwargs.get("position_ids")
    given = [name for name, value in flash.items() if value is not None]
    if given:
        if len(given) != len(_FLASH_KWARGS):
            raise ValueError(f"packed sequences need all of {', '.join(_FLASH_KWARGS)}; got only "
                             f"{', '.join(given)}")
        if not torch.equal(flash["cu_seq_lens_q"], flash["cu_seq_lens_k"]):
            raise ValueError("swaa attention packs self-attention only: cu_seq_lens_q and "
                             "cu_seq_lens_k must be equal")
        cu_seqlens = flash["cu_seq_lens_q"]
        max_len = int(max(flash["max_length_q"], flash["max_length_k"]))
    elif position_ids is not None and not has_padding_mask and len_q > 1:
        cu_seqlens, max_len = _restarts(position_ids, batch, len_q)
        if cu_seqlens is None:
            return None
    else:
        return None
    if len_k != len_q:
        raise ValueError(f"packed sequences must be a prefill without past keys (this layer has "
                         f"{len_k - len_q} past keys): packing is a training / prefill layout")
    cu_seqlens = torch.as_tensor(cu_seqlens).to(device=device, dtype=torch.int32)
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or int(cu_seqlens[-1]) != batch * len_q:
        raise ValueError(f"cu_seq_lens_q must be a 1-D prefix sum ending at the number of tokens "
                         f"({batch} x {len_q} = {batch * len_q}), got "
                         f"{cu_seqlens.tolist() if cu_seqlens.numel() < 20 else cu_seqlens.shape}")
    return Ragged(query_index=None, key_index=None, cu_seqlens_q=cu_seqlens,
                  cu_seqlens_k=cu_seqlens, max_seqlen_q=max_len, max_seqlen_k=max_len,
                  key_start=cu_seqlens[:-1].to(torch.int64), packed=True)


def _restarts(position_ids: Tensor, batch: int, len_q: int) -> tuple[Tensor | None, int]:
    """Sequence boundaries over the flattened (B * Lq) tokens from restarting position ids, or
    (None, 0) when every row is one sequence."""
    position_ids = position_ids.expand(batch, -1)
    first = position_ids[:, :1] - 1
    starts = torch.diff(position_ids, prepend=first, dim=-1) != 1
    starts[:, 0] = True  # every row starts a sequence (a sequence never spans two rows)
    if int(starts.sum()) == batch:
        return None, 0
    begin = starts.reshape(-1).nonzero().squeeze(1)
    cu_seqlens = torch.cat([begin, begin.new_tensor([batch * len_q])])
    return cu_seqlens, int(cu_seqlens.diff().max())


def per_sequence_full_from(ragged: Ragged, full_from: Tensor | int | None) -> Tensor | None:
    """The varlen op's (n,) full_from, relative to each sequence's first key.

    Padded rows: `full_from` is (B,) absolute positions in the padded rows, as everywhere else in
    the HF layer. Packed sequences: an int applies to every sequence (relative to its start, e.g.
    one prompt length for all) and a tensor holds one value per packed sequence."""
    if full_from is None:
        return None
    n = ragged.num_sequences
    device = ragged.cu_seqlens_q.device
    if ragged.packed:
        if isinstance(full_from, Tensor):
            full_from = full_from.to(device=device, dtype=torch.int64).reshape(-1)
            if full_from.numel() != n:
                raise ValueError(f"swaa_full_from for packed sequences must be an int or have one "
                                 f"value per packed sequence ({n}), got {full_from.numel()}")
            return full_from.contiguous()
        return torch.full((n,), int(full_from), dtype=torch.int64, device=device)
    # Padded rows: a (B,) tensor of absolute padded positions (attention._full_from made it).
    return (full_from.to(device=device, dtype=torch.int64) - ragged.key_start).contiguous()


def _flatten(states: Tensor, index: Tensor | None) -> Tensor:
    """(B, H, L, D) -> (total, H, D): the tokens `index` selects (all when None)."""
    tokens = states.transpose(1, 2).reshape(-1, states.shape[1], states.shape[3])
    return tokens if index is None else tokens.index_select(0, index)


def varlen_attention(ragged: Ragged, query: Tensor, key: Tensor, value: Tensor,
                     window: int | None, sinks: int, full_from: Tensor | None,
                     scale: float | None, sink_logits: Tensor | None = None) -> Tensor:
    """One varlen call for the whole batch; returns (B, Lq, H, D) with zeros at padding
    queries (they see no real key)."""
    batch, heads, len_q, head_dim = query.shape
    out = ops.sliding_attention_varlen(
        _flatten(query, ragged.query_index), _flatten(key, ragged.key_index),
        _flatten(value, ragged.key_index), ragged.cu_seqlens_q, ragged.cu_seqlens_k,
        ragged.max_seqlen_q, ragged.max_seqlen_k, window, sinks, full_from=full_from, scale=scale,
        sink_logits=sink_logits)
    if ragged.query_index is not None:
        out = out.new_zeros(batch * len_q, heads, head_dim).index_copy(0, ragged.query_index, out)
    return out.view(batch, len_q, heads, head_dim)
