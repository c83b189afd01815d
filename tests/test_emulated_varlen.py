"""The CUDA kernels (forward, dK/dV, dQ) on packed variable-length batches, run on the CPU by the
SIMT emulator: each sequence gets what it gets alone through the emulated dense op, and what the
float64 reference gives, out, LSE and gradients. Every case runs for float16 and bfloat16, head dims
64 and 128, under the default schedule, and the cases rotate over the other schedules. Shapes are
small but ragged around the tiles (64 query rows; 64 keys for head dim 64, 32 for 128; dK/dV: 128
keys): emulation runs at about 1 GFLOP/s."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from varlen_cases import VarlenCase, check_varlen, pack

emulated = pytest.importorskip("swaa_ext.emulated", reason="swaa_ext._C_emulated was not built")
# The emulator runs about 1 GFLOP/s: minutes for the emulated suites (docs/testing.md, "Tiers").
pytestmark = pytest.mark.slow

OPS = SimpleNamespace(varlen=emulated.sliding_attention_varlen, dense=emulated.sliding_attention)
DTYPES = [torch.float16, torch.bfloat16]
HEAD_DIMS = [64, 128]

CASES = [
    VarlenCase(((0, 0), (1, 1), (63, 65), (65, 129)), 2, 1, window=16, sinks=3),
    VarlenCase(((0, 5), (64, 64), (33, 127)), 4, 2, window=None, full_from=(0, 40, 1000),
               slack=70),  # max_seqlen past every length: whole blocks return at once
    VarlenCase(((7, 7), (1, 40), (31, 33)), 2, 2, window=1, sinks=9, full_from=20, strided=True),
]
OTHER_SCHEDULES = [("random", 1), ("warp_serial", 0), ("race_check", 0)]


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_varlen_matches_each_sequence_alone_and_reference(case, dtype, head_dim):
    with emulated.mode("default"):
        check_varlen(OPS, case, head_dim, dtype, grad_tol=4.0)


@pytest.mark.parametrize("schedule", OTHER_SCHEDULES, ids=lambda s: f"{s[0]}{s[1]}")
@pytest.mark.parametrize("index", range(len(CASES)), ids=lambda i: str(CASES[i]))
def test_varlen_under_schedule(index, schedule):
    dtype = DTYPES[index % len(DTYPES)]
    head_dim = HEAD_DIMS[(index // len(DTYPES)) % len(HEAD_DIMS)]
    with emulated.mode(*schedule):
        check_varlen(OPS, CASES[index], head_dim, dtype, grad_tol=4.0)


def test_neighbour_rows_are_never_read():
    """NaN in the rows of sequence 0 must not reach sequence 1's output or gradients (the tiles
    of sequence 1 are zero-filled at its own bounds, never loaded from its neighbour)."""
    case = VarlenCase(((40, 70), (50, 50)), 2, 1, window=8, sinks=2)
    q, k, v, cu_q, cu_k, mq, mk = pack(case, 64, torch.float16)
    q[:40], k[:70], v[:70] = float("nan"), float("nan"), float("nan")
    leaves = [t.requires_grad_() for t in (q, k, v)]
    out = emulated.sliding_attention_varlen(*leaves, cu_q, cu_k, mq, mk, 8, 2)
    assert out[40:].isfinite().all()
    out[40:].sum().backward()
    assert q.grad[40:].isfinite().all() and k.grad[70:].isfinite().all()
    assert v.grad[70:].isfinite().all()


def test_opcheck():
    case = VarlenCase(((20, 30), (0, 4), (9, 9)), 2, 1, window=5, sinks=2, full_from=(10, 0, 5))
    q, k, v, cu_q, cu_k, mq, mk = pack(case, 64, torch.bfloat16)
    ff = case.full_from_arg("cpu")
    args = (q, k, v, cu_q, cu_k, mq, mk, 5, 2, ff, 0.125)
    out, lse = torch.ops.swaa_emulated.fwd_varlen(*args)
    torch.library.opcheck(torch.ops.swaa_emulated.bwd_varlen.default,
                          (torch.randn_like(out), torch.randn_like(lse), q, k, v, out, lse,
                           *args[3:]))
    q.requires_grad_()
    torch.library.opcheck(torch.ops.swaa_emulated.fwd_varlen.default, args,
                          test_utils=("test_autograd_registration",))
