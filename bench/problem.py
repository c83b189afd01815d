"""One benchmark case and the useful work in it, counted exactly from the visibility rule."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from swaa_ext import reference

MODES = ("fwd", "fwd+bwd", "decode")
# Matmul FLOPs per visible (query, key) pair and head dim: q.k and p.v forward (2 * 2); the
# backward adds dP = dO.v, dV, dK, dQ and the recomputed q.k (FlashAttention's convention: 2.5x).
FLOPS_PER_PAIR_DIM = {"fwd": 4, "fwd+bwd": 14, "decode": 4}


@dataclass(frozen=True)
class Case:
    mode: str  # one of MODES
    len_k: int  # sequence length (keys); queries: len_k, or 1 for decode
    window: int
    sinks: int
    batch: int = 1
    heads_q: int = 16
    heads_kv: int = 4
    head_dim: int = 128
    dtype: torch.dtype = torch.float32

    @property
    def len_q(self) -> int:
        return 1 if self.mode == "decode" else self.len_k

    def flops(self) -> int:
        pairs = visible_pairs(self.len_q, self.len_k, self.window, self.sinks)
        return FLOPS_PER_PAIR_DIM[self.mode] * self.head_dim * pairs * self.batch * self.heads_q

    def inputs(self, requires_grad: bool = False) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(self.batch, self.heads_q, self.len_q, self.head_dim, generator=gen)
        k = torch.randn(self.batch, self.heads_kv, self.len_k, self.head_dim, generator=gen)
        v = torch.randn(self.batch, self.heads_kv, self.len_k, self.head_dim, generator=gen)
        return tuple(t.to(self.dtype).requires_grad_(requires_grad) for t in (q, k, v))


@lru_cache(maxsize=None)
def visible_pairs(len_q: int, len_k: int, window: int, sinks: int, chunk: int = 256) -> int:
    """Number of visible (query, key) pairs, summed from `reference.visible` in row chunks.

    Rows [r0, r1) of a bottom-right aligned (Lq, Lk) problem are the rows of the (r1 - r0, k1)
    problem with k1 = r1 + Lk - Lq: keys past k1 are hidden by causality. So each chunk's mask
    is only as wide as it must be, and the rule is evaluated by the one Python mirror of mask.h.
    """
    offset = len_k - len_q
    total = 0
    for r0 in range(0, len_q, chunk):
        r1 = min(r0 + chunk, len_q)
        total += int(reference.visible(r1 - r0, r1 + offset, window, sinks).sum())
    return total
