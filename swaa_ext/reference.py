"""Dense masked attention in float64: the oracle every kernel is tested against.

`visible` mirrors `MaskRule::visible` in csrc/swaa/mask.h line for line (docs/architecture.md, "The masking rule").
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
    sink_logits: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as `swaa_ext.sliding_attention`, computed densely in float64.

    Returns the output in q's dtype and, with `return_lse`, the float32 log-sum-exp (float64 for
    float64 inputs), exactly like the kernels. `sink_logits` (Hq,): one more key per query head,
    always visible, with that logit and a zero value (gpt-oss's `sinks`), written out as a
    column of the scores.
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
    if sink_logits is not None:  # the virtual key: column Lk, value 0
        column = sink_logits.double().view(1, heads_q, 1, 1).expand(batch, heads_q, len_q, 1)
        scores = torch.cat([scores, column], dim=-1)
        v64 = torch.cat([v64, v64.new_zeros(v64.shape[0], heads_q, 1, head_dim)], dim=2)
    lse = torch.logsumexp(scores, dim=-1)  # (B, Hq, Lq)
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), v64).to(q.dtype)
    if not return_lse:
        return out
    return out, lse.to(torch.float64 if q.dtype == torch.float64 else torch.float32)


def sliding_attention_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    window: int | None,
    sinks: int = 0,
    *,
    full_from: Tensor | int | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    sink_logits: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as `swaa_ext.sliding_attention_varlen`: each sequence alone through
    `sliding_attention` (so `visible` stays the one rule), in float64. q (total_q, Hq, D), k/v
    (total_k, Hkv, D); LSE (Hq, total_q). max_seqlen_q/k are not needed here."""
    starts_q, starts_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs, lses = [], []
    for s in range(len(starts_q) - 1):
        q0, q1, k0, k1 = starts_q[s], starts_q[s + 1], starts_k[s], starts_k[s + 1]
        if q1 == q0:  # no queries: nothing to compute, and its keys get no gradient
            continue
        ff = full_from[s] if isinstance(full_from, Tensor) else full_from

        def heads_first(t: Tensor, a: int, b: int) -> Tensor:  # (L, H, D) -> (1, H, L, D)
            return t[a:b].transpose(0, 1).unsqueeze(0)

        out, lse = sliding_attention(heads_first(q, q0, q1), heads_first(k, k0, k1),
                                     heads_first(v, k0, k1), window, sinks, full_from=ff,
                                     scale=scale, return_lse=True, sink_logits=sink_logits)
        outs.append(out[0].transpose(0, 1))  # (len_q, Hq, D)
        lses.append(lse[0])                  # (Hq, len_q)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    if not outs:  # total_q == 0: empty results, still differentiable (as the op's are)
        out = q * 0
        lse = (q.sum(-1) * 0).t().to(lse_dtype)
    else:
        out, lse = torch.cat(outs, dim=0), torch.cat(lses, dim=1).to(lse_dtype)
    return (out, lse) if return_lse else out
