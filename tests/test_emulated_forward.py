"""The CUDA forward kernel, run on the CPU by the SIMT emulator, against the float64 reference.

Every case runs for every (dtype, head dim) under the default schedule, and once more under each
other emulator schedule (random with two seeds, warp-serial with eager cp.async, race check), the
(dtype, head dim) rotating over the cases so each schedule sees all four. Shapes are small and
ragged around the kernel's tiles (64 query rows; 64 keys for head dim 64, 32 for head dim 128):
emulation runs at about 1 GFLOP/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from swaa_ext import reference

emulated = pytest.importorskip("swaa_ext.emulated", reason="swaa_ext._C_emulated was not built")

OTHER_SCHEDULES = [("random", 1), ("random", 2), ("warp_serial", 0), ("race_check", 0)]
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
    mask = reference.visible(q.shape[2], k.shape[2], window, sinks, full_from)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


def check_against_reference(case: Case, dtype: torch.dtype, head_dim: int) -> None:
    q, k, v, full_from = make_inputs(case, dtype, head_dim)
    args = (q, k, v, case.window, case.sinks)
    out, lse = emulated.sliding_attention(*args, full_from=full_from, return_lse=True)
    ref_out, ref_lse = reference.sliding_attention(*args, full_from=full_from, return_lse=True)
    pt_out = same_precision_attention(*args, full_from)

    assert out.shape == q.shape and out.dtype == dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    ref64 = reference.sliding_attention(q.double(), k.double(), v.double(), case.window,
                                        case.sinks, full_from=full_from)
    err = (out.double() - ref64).abs().max().item()
    pt_err = (pt_out.double() - ref64).abs().max().item()
    # FlashAttention's criterion: at most twice the error of the same-precision computation.
    assert err <= 2 * pt_err + 1e-5, f"max error {err:.3g} vs same-precision PyTorch {pt_err:.3g}"
    # The LSE accumulates in float32 from exact products: only float32 rounding remains.
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-4)
    assert torch.equal(out.isfinite(), ref_out.isfinite())


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(case: Case, dtype: torch.dtype, head_dim: int) -> None:
    with emulated.mode("default"):
        check_against_reference(case, dtype, head_dim)


@pytest.mark.parametrize("schedule", OTHER_SCHEDULES, ids=lambda s: f"{s[0]}{s[1]}")
@pytest.mark.parametrize("index", range(len(CASES)), ids=lambda i: str(CASES[i]))
def test_forward_under_schedule(index: int, schedule: tuple[str, int]) -> None:
    dtype = DTYPES[index % len(DTYPES)]
    head_dim = HEAD_DIMS[(index // len(DTYPES)) % len(HEAD_DIMS)]
    with emulated.mode(*schedule):
        check_against_reference(CASES[index], dtype, head_dim)


def test_misaligned_view_is_copied_not_misread() -> None:
    """A view whose rows are not 16-byte aligned (an offset into a wider buffer) still works."""
    wide = torch.randn(1, 2, 40, 65).half()
    q = k = v = wide[..., 1:]  # last dim contiguous, rows start 2 bytes off
    out = emulated.sliding_attention(q, k, v, window=9, sinks=2)
    ref = reference.sliding_attention(q, k, v, window=9, sinks=2)
    pt_err = (same_precision_attention(q, k, v, 9, 2, None).double() - ref.double()).abs().max()
    assert (out.double() - ref.double()).abs().max() <= 2 * pt_err + 1e-5


def test_mode_context_restores_and_rejects_unknown() -> None:
    with emulated.mode("random", seed=7):
        with emulated.mode("race_check"):
            pass
        assert emulated._state.mode == ("random", 7)
    assert emulated._state.mode == ("default", 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        emulated.set_mode("fastest")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: [torch.randn(1, 2, 8, 96).half()] * 3, ValueError, "head_dim must be 64 or 128"),
        (lambda: [torch.randn(1, 2, 8, 64)] * 3, TypeError, "float16 or bfloat16"),
        (lambda: [torch.randn(1, 2, 8, 64).half(), torch.randn(1, 2, 8, 32).half(),
                  torch.randn(1, 2, 8, 32).half()], ValueError, "head_dim"),
        (lambda: [torch.randn(1, 3, 8, 64).half(), torch.randn(1, 2, 8, 64).half(),
                  torch.randn(1, 2, 8, 64).half()], ValueError, "multiple of k's heads"),
    ],
    ids=["head_dim_96", "float32", "k_head_dim", "gqa_ratio"],
)
def test_bad_input_raises(make, error, match) -> None:
    q, k, v = make()
    with pytest.raises(error, match=match):
        emulated.sliding_attention(q, k, v, window=4)


def test_opcheck() -> None:
    q, k, v, full_from = make_inputs(Case(20, 30, window=5, sinks=2, batch=2,
                                          full_from=(10, 25)), torch.bfloat16, 64)
    torch.library.opcheck(torch.ops.swaa_emulated.fwd.default,
                          (q, k, v, 5, 2, full_from, 0.125))
