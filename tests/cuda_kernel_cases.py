"""Sample inputs shared by the CUDA kernel's tests (emulated and real GPU): small shapes that are
ragged around the kernel's tiles (64 query rows; 64 keys for head dim 64, 32 for head dim 128), and
the same-precision PyTorch attention that sets each case's error budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from swaa_ext import reference

# What the CUDA kernel is instantiated for (csrc/swaa/cuda/generate_instantiations.py).
DTYPES = [torch.float16, torch.bfloat16]
HEAD_DIMS = [64, 128]

@dataclass(frozen=True)
class Case:
    len_q: int
    len_k: int
    window: int | None
    sinks: int = 0
    heads_q: int = 2
    heads_kv: int = 2
    batch: int = 1
    full_from: tuple[int, ...] | int | None = None
    transposed: bool = False  # q/k/v as (B, H, L, D) views of (B, L, H, D) tensors

    def __str__(self) -> str:
        return "-".join(f"{k}={v}" for k, v in vars(self).items())


CASES = [
    Case(1, 1, window=1),                                   # one row, one key
    Case(7, 7, window=2, sinks=1),                          # smaller than every tile
    Case(63, 63, window=16, sinks=3),                       # window inside one key tile
    Case(65, 65, window=40),                                # one row past the query tile
    Case(130, 130, window=70, sinks=5),                     # window spans 2-3 key tiles
    Case(70, 70, window=1),                                 # each row sees only itself
    Case(1, 150, window=20, sinks=4),                       # decode: Lq = 1, long Lk
    Case(1, 150, window=None),                              # decode with full attention
    Case(33, 100, window=50, sinks=2),                      # Lq < Lk, bottom-right aligned
    Case(40, 129, window=33, sinks=70),                     # sinks reach past the window start
    Case(97, 97, window=500, sinks=3),                      # window >= Lk: full causal
    Case(97, 97, window=None),                              # no window
    Case(80, 80, window=24, sinks=37, heads_q=4, heads_kv=2),   # GQA 2, sinks not a tile multiple
    Case(66, 90, window=17, sinks=1, heads_q=4, heads_kv=1),    # GQA 4 (MQA)
    Case(100, 100, window=8, sinks=2, batch=3, full_from=(0, 50, 1000)),  # full_from per row
    Case(50, 120, window=12, full_from=100),                # FA decode boundary inside the queries
    Case(70, 95, window=30, sinks=9, heads_q=4, heads_kv=2, batch=2, transposed=True),  # strided
]


def make_inputs(case: Case, dtype: torch.dtype, head_dim: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def rand(heads: int, length: int) -> torch.Tensor:
        if case.transposed:  # (B, L, H, D) storage, viewed as (B, H, L, D)
            x = torch.randn(case.batch, length, heads, head_dim, generator=gen)
            return x.to(dtype).transpose(1, 2)
        return torch.randn(case.batch, heads, length, head_dim, generator=gen).to(dtype)

    q, k, v = rand(case.heads_q, case.len_q), rand(case.heads_kv, case.len_k), rand(case.heads_kv, case.len_k)
    full_from = case.full_from
    if isinstance(full_from, tuple):
        full_from = torch.tensor(full_from, dtype=torch.int64)
    return q, k, v, full_from


def same_precision_attention(q, k, v, window, sinks, full_from):
    """Dense masked attention in the inputs' own precision: the error budget a same-precision
    PyTorch implementation needs, against which the kernel's error is judged."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    mask = reference.visible(q.shape[2], k.shape[2], window, sinks, full_from, device=q.device)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


def max_error(out: torch.Tensor, q, k, v, window, sinks, full_from) -> tuple[float, float]:
    """(kernel error, same-precision PyTorch error), both against the float64 reference."""
    ref64 = reference.sliding_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(),
                                        window, sinks, full_from=full_from)
    pt = same_precision_attention(q, k, v, window, sinks, full_from)
    err = (out.double().cpu() - ref64).abs().max().item()
    pt_err = (pt.double().cpu() - ref64).abs().max().item()
    return err, pt_err
