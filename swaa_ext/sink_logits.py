"""Learned sink logits (gpt-oss's `sinks`, `s_aux`): one more key per query head, visible to every
query, with a learned logit t_h and a zero value (docs/architecture.md, "Two kinds of sinks").

With the kernels' natural-log LSE over the visible keys, L = log sum_j exp(scale s_j), adding
that key gives exactly

    lse' = logaddexp(L, t_h)        out' = out * exp(L - lse') = out * sigmoid(L - t_h)

so every backend (CPU, CUDA, emulated; dense, varlen, paged) gets it from its own (out, LSE)
without a change to any kernel, and the gradients for q, k, v and t come through autograd: the
kernels' backward already takes a gradient of the LSE. The cost is one elementwise pass over the
output; the kernels' loops are the same with and without sink logits.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check(sink_logits: object, q: Tensor, heads_q: int) -> Tensor | None:
    """None, or a (Hq,) float tensor on q's device in float32, float64 or q's dtype."""
    if sink_logits is None:
        return None
    if not isinstance(sink_logits, Tensor):
        raise TypeError(f"sink_logits must be None or a tensor of shape (heads_q,), got "
                        f"{type(sink_logits).__name__}")
    if sink_logits.dim() != 1 or sink_logits.shape[0] != heads_q:
        raise ValueError(f"sink_logits must have shape (heads_q,) = ({heads_q},), got "
                         f"{tuple(sink_logits.shape)}")
    if sink_logits.dtype not in (torch.float32, torch.float64, q.dtype):
        raise TypeError(f"sink_logits must be float32, float64 or q's dtype {q.dtype}, got "
                        f"{sink_logits.dtype}")
    if sink_logits.device != q.device:
        raise ValueError(f"sink_logits must be on q's device {q.device}, got "
                         f"{sink_logits.device}")
    return sink_logits


def apply(out: Tensor, lse: Tensor, sink_logits: Tensor, packed: bool,
          into: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(out', lse') of the formula above, computed in the LSE's dtype. Dense: out (B, Hq, Lq, D),
    lse (B, Hq, Lq); packed (varlen, paged): out (total, Hq, D), lse (Hq, total). `into`: write
    out' there (the paged op's out buffer) instead of a new tensor."""
    t = sink_logits.to(lse.dtype)
    t = t.view(-1, 1) if packed else t.view(1, -1, 1)
    # sigmoid, not exp(L - lse'): a row with no visible key has L = +inf (params.h) and keeps
    # weight 1 on its zero output.
    weight = torch.sigmoid(lse - t)
    weight = weight.t().unsqueeze(-1) if packed else weight.unsqueeze(-1)
    scaled = (out.to(lse.dtype) * weight).to(out.dtype)
    if into is not None:
        into.copy_(scaled)
        scaled = into
    return scaled, torch.logaddexp(lse, t)
