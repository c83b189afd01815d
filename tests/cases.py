"""Shared sample inputs for every backend's tests (extension-cpp style): one list of awkward
shapes and rule settings, and one function that builds the tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    """One attention problem: lengths, the rule, heads and batch. `head_dim` where the case fixes
    it (the CPU suites); None where the suite runs each case at every head dim it covers (the
    CUDA suites, cuda_kernel_cases.py). `transposed`: q/k/v as (B, H, L, D) views of (B, L, H, D)
    tensors, the layout of a projection output."""

    len_q: int
    len_k: int
    window: int | None
    sinks: int = 0
    heads_q: int = 2
    heads_kv: int = 2
    batch: int = 1
    full_from: tuple[int, ...] | int | None = None  # tuple = one value per batch row
    head_dim: int | None = None
    transposed: bool = False

    def __str__(self) -> str:
        return (f"B{self.batch}-H{self.heads_q}/{self.heads_kv}-Lq{self.len_q}-Lk{self.len_k}"
                f"-D{self.head_dim}-w{self.window}-s{self.sinks}-ff{self.full_from}"
                + ("-T" if self.transposed else ""))

    def full_from_arg(self, device: torch.device | str = "cpu") -> torch.Tensor | int | None:
        if isinstance(self.full_from, tuple):
            return torch.tensor(self.full_from, dtype=torch.int64, device=device)
        return self.full_from


# Ragged lengths around the 64-row/64-key tiles, Lq = 1 and Lq < Lk, GQA ratios 1/2/4/8, windows
# 1, 2, small, >= Lk and None, sinks 0 / inside the window / beyond it / not a tile multiple,
# full_from before, inside and after the prompt, per batch row.
CASES = [
    Case(1, 1, window=None, heads_q=1, heads_kv=1, head_dim=16),
    Case(7, 7, window=3, heads_q=2, heads_kv=2, batch=2, head_dim=16),
    Case(63, 63, window=17, sinks=5, heads_q=4, heads_kv=2, head_dim=32),
    Case(64, 64, window=64, heads_q=4, heads_kv=2, head_dim=32),
    Case(65, 65, window=1, heads_q=4, heads_kv=1, batch=2, head_dim=32),
    Case(65, 65, window=2, sinks=1, heads_q=2, heads_kv=2, head_dim=32),
    Case(1, 1000, window=100, sinks=4, heads_q=8, heads_kv=1, head_dim=64),  # decode row, MQA
    # decode row, sinks beyond the window
    Case(1, 333, window=50, sinks=70, heads_q=8, heads_kv=2, batch=2, head_dim=32),
    Case(40, 1030, window=200, sinks=10, heads_q=2, heads_kv=1, head_dim=32),  # Lq < Lk
    # sinks not a tile multiple, long
    Case(1030, 1030, window=129, sinks=67, heads_q=4, heads_kv=4, head_dim=16),
    # sinks reach past the window start
    Case(300, 300, window=7, sinks=100, heads_q=8, heads_kv=1, head_dim=48),
    # full_from before / inside, per row
    Case(150, 150, window=20, sinks=3, heads_q=2, heads_kv=1, batch=2, head_dim=32,
         full_from=(0, 75)),
    # inside the prompt / never
    Case(100, 200, window=16, sinks=2, heads_q=2, heads_kv=2, batch=2, head_dim=32,
         full_from=(150, 10**6)),
    # full_from after the sequence
    Case(128, 128, window=10, heads_q=2, heads_kv=1, head_dim=32, full_from=200),
    Case(77, 77, window=1000, heads_q=2, heads_kv=2, head_dim=32),  # window >= Lk
    Case(70, 90, window=30, sinks=2, heads_q=3, heads_kv=1, head_dim=256),  # largest CPU head dim
    Case(50, 50, window=5, sinks=1, heads_q=2, heads_kv=1, head_dim=1),  # head dim 1
    # window edge lands on a tile's last key
    Case(130, 130, window=2, heads_q=2, heads_kv=1, head_dim=16),
    Case(200, 200, window=66, heads_q=2, heads_kv=1, head_dim=16),  # window one tile + 2
]


def make_inputs(case: Case, dtype: torch.dtype, device: str = "cpu", *, seed: int = 0,
                transposed: bool = False, requires_grad: bool = False):
    """q (B, Hq, Lq, D), k, v (B, Hkv, Lk, D). With `transposed`, each is a (B, H, L, D) view of
    a (B, L, H, D) tensor, the layout of a projection output."""
    gen = torch.Generator().manual_seed(seed)
    transposed = transposed or case.transposed

    def rand(heads: int, length: int) -> torch.Tensor:
        shape = (case.batch, length, heads, case.head_dim) if transposed else (
            case.batch, heads, length, case.head_dim)
        t = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        t = t.transpose(1, 2) if transposed else t
        return t.requires_grad_(requires_grad)

    return rand(case.heads_q, case.len_q), rand(case.heads_kv, case.len_k), rand(case.heads_kv,
                                                                                   case.len_k)


# Absolute tolerances on outputs and gradients of unit-variance inputs, per input dtype. bf16 and
# fp16 are compared with the reference computed from the same rounded inputs, so the error is the
# output rounding plus fp32 accumulation.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 3e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}
