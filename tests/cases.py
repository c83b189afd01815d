"""Shared sample inputs for every backend's tests (extension-cpp style): one list of awkward
shapes and rule settings, and one function that builds the tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    batch: int
    heads_q: int
    heads_kv: int
    len_q: int
    len_k: int
    head_dim: int
    window: int | None
    sinks: int = 0
    full_from: tuple[int, ...] | int | None = None  # tuple = one value per batch row

    def __str__(self) -> str:
        return (f"B{self.batch}-H{self.heads_q}/{self.heads_kv}-Lq{self.len_q}-Lk{self.len_k}"
                f"-D{self.head_dim}-w{self.window}-s{self.sinks}-ff{self.full_from}")

    def full_from_arg(self, device: torch.device | str = "cpu") -> torch.Tensor | int | None:
        if isinstance(self.full_from, tuple):
            return torch.tensor(self.full_from, dtype=torch.int64, device=device)
        return self.full_from


# Ragged lengths around the 64-row/64-key tiles, Lq = 1 and Lq < Lk, GQA ratios 1/2/4/8, windows
# 1, 2, small, >= Lk and None, sinks 0 / inside the window / beyond it / not a tile multiple,
# full_from before, inside and after the prompt, per batch row.
CASES = [
    Case(1, 1, 1, 1, 1, 16, None),
    Case(2, 2, 2, 7, 7, 16, 3, 0),
    Case(1, 4, 2, 63, 63, 32, 17, 5),
    Case(1, 4, 2, 64, 64, 32, 64, 0),
    Case(2, 4, 1, 65, 65, 32, 1, 0),
    Case(1, 2, 2, 65, 65, 32, 2, 1),
    Case(1, 8, 1, 1, 1000, 64, 100, 4),             # decode row, MQA
    Case(2, 8, 2, 1, 333, 32, 50, 70),              # decode row, sinks beyond the window
    Case(1, 2, 1, 40, 1030, 32, 200, 10),           # Lq < Lk
    Case(1, 4, 4, 1030, 1030, 16, 129, 67),         # sinks not a tile multiple, long
    Case(1, 8, 1, 300, 300, 48, 7, 100),            # sinks reach past the window start
    Case(2, 2, 1, 150, 150, 32, 20, 3, (0, 75)),    # full_from before / inside, per row
    Case(2, 2, 2, 100, 200, 32, 16, 2, (150, 10**6)),  # inside the prompt / never
    Case(1, 2, 1, 128, 128, 32, 10, 0, 200),        # full_from after the sequence
    Case(1, 2, 2, 77, 77, 32, 1000, 0),             # window >= Lk
    Case(1, 3, 1, 70, 90, 256, 30, 2),              # largest CPU head dim
    Case(1, 2, 1, 50, 50, 1, 5, 1),                 # head dim 1
    Case(1, 2, 1, 130, 130, 16, 2, 0),              # window edge lands on a tile's last key
    Case(1, 2, 1, 200, 200, 16, 66, 0),             # window one tile + 2
]


def make_inputs(case: Case, dtype: torch.dtype, device: str = "cpu", *, seed: int = 0,
                transposed: bool = False, requires_grad: bool = False):
    """q (B, Hq, Lq, D), k, v (B, Hkv, Lk, D). With `transposed`, each is a (B, H, L, D) view of
    a (B, L, H, D) tensor, the layout of a projection output."""
    gen = torch.Generator().manual_seed(seed)

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
