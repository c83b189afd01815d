"""Dense masked attention in float64: the oracle every kernel is tested against.

`visible` mirrors `MaskRule::visible` in csrc/swaa/mask.h line for line (DESIGN.md §2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def visible(
    len_q: int,
    len_k: int,
    window: int | None,
    sinks: int = 0,
    full_from: Tensor | int | None = None,
    *,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Boolean mask (B or 1, 1, Lq, Lk): True where query row i may attend to key j.

    `window` counts keys including the query itself; None means full causal attention.
    `full_from` is an absolute key position (int, or one per batch row) from which queries see
    every earlier key. Queries are bottom-right aligned: row i sits at position i + (Lk - Lq).
    """
    i = torch.arange(len_q, device=device).view(-1, 1)
    j = torch.arange(len_k, device=device).view(1, -1)
    p = i + (len_k - len_q)
    if full_from is None:
        full_from = len_k
    full_from = torch.as_tensor(full_from, device=device).reshape(-1, 1, 1, 1)
    in_window = torch.ones_like(j, dtype=torch.bool) if window is None else (p - j < window)
    return (j <= p) & (in_window | (j < sinks) | (p >= full_from))


def sliding_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None,
    sinks: int = 0,
    *,
    full_from: Tensor | int | None = None,
    scale: float | None = None,
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as `swaa_ext.sliding_attention`, computed densely in float64.

    Returns the output in q's dtype and, with `return_lse`, the float32 log-sum-exp (float64 for
    float64 inputs), exactly like the kernels.
    """
    batch, heads_q, len_q, head_dim = q.shape
    heads_kv, len_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    group = heads_q // heads_kv
    q64, k64, v64 = q.double(), k.double(), v.double()
    k64 = k64.repeat_interleave(group, dim=1)  # (B, Hq, Lk, D): fine for a dense oracle
    v64 = v64.repeat_interleave(group, dim=1)
    scores = torch.matmul(q64, k64.transpose(-1, -2)) * scale  # (B, Hq, Lq, Lk)
    mask = visible(len_q, len_k, window, sinks, full_from, device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, Hq, Lq)
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), v64).to(q.dtype)
    if not return_lse:
        return out
    return out, lse.to(torch.float64 if q.dtype == torch.float64 else torch.float32)
