"""The CUDA backward kernels, run on the CPU by the SIMT emulator through autograd, against the
float64 reference's autograd.

Every case (the forward suite's and the backward's own edges) runs for every (dtype, head dim)
under the default schedule, with a gradient flowing through both out and LSE, and once more under
each other schedule, the (dtype, head dim) rotating over the cases. Shapes are small: emulation
runs at about 1 GFLOP/s.
"""

from __future__ import annotations

import pytest
import torch
from cuda_kernel_cases import (BACKWARD_CASES, CASES, DTYPES, HEAD_DIMS, Case,
                               assert_gradients_match, check_rows_far_apart, gradients,
                               make_inputs)

emulated = pytest.importorskip("swaa_ext.emulated", reason="swaa_ext._C_emulated was not built")
# The emulator runs about 1 GFLOP/s: minutes for the emulated suites (docs/testing.md, "Tiers").
pytestmark = pytest.mark.slow

ALL_CASES = CASES + BACKWARD_CASES
OTHER_SCHEDULES = [("random", 1), ("random", 2), ("warp_serial", 0), ("race_check", 0)]


def emulated_gradients(case: Case, dtype: torch.dtype, head_dim: int, *, with_lse: bool = True):
    q, k, v, full_from = make_inputs(case, dtype, head_dim)
    grads = gradients(emulated.sliding_attention, q, k, v, case.window, case.sinks, full_from,
                      with_lse=with_lse)
    return grads, (q, k, v, case.window, case.sinks, full_from)


def check_against_reference(case: Case, dtype: torch.dtype, head_dim: int, *,
                            with_lse: bool = True) -> None:
    grads, args = emulated_gradients(case, dtype, head_dim, with_lse=with_lse)
    for name, g, t in zip(("dq", "dk", "dv"), grads, args[:3]):
        assert g.shape == t.shape and g.dtype == dtype, name
    assert_gradients_match(grads, *args, with_lse=with_lse)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ALL_CASES, ids=str)
def test_backward_matches_reference(case: Case, dtype: torch.dtype, head_dim: int) -> None:
    with emulated.mode("default"):
        check_against_reference(case, dtype, head_dim)


@pytest.mark.parametrize("schedule", OTHER_SCHEDULES, ids=lambda s: f"{s[0]}{s[1]}")
@pytest.mark.parametrize("index", range(len(ALL_CASES)), ids=lambda i: str(ALL_CASES[i]))
def test_backward_under_schedule(index: int, schedule: tuple[str, int]) -> None:
    dtype = DTYPES[index % len(DTYPES)]
    head_dim = HEAD_DIMS[(index // len(DTYPES)) % len(HEAD_DIMS)]
    with emulated.mode(*schedule):
        check_against_reference(ALL_CASES[index], dtype, head_dim)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_gradient_of_out_only(head_dim: int) -> None:
    """No gradient reaches the LSE: the op gets grad_lse = None."""
    check_against_reference(Case(70, 95, window=30, sinks=9, heads_q=4, heads_kv=2),
                            torch.bfloat16, head_dim, with_lse=False)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_unseen_keys_get_exactly_zero_gradient(head_dim: int) -> None:
    """One query at position 299 with window 20 sees keys 280-299 only: dK/dV rows of keys 0-279
    are exactly zero (FlashAttention-2 once left them uninitialised), the seen ones are not."""
    case = Case(1, 300, window=20)
    (_, dk, dv), _ = emulated_gradients(case, torch.float16, head_dim)
    for grad in (dk, dv):
        assert torch.count_nonzero(grad[:, :, :280]) == 0
        assert (grad[:, :, 280:].abs().sum(-1) > 0).all()


def test_two_runs_are_bitwise_equal() -> None:
    """No float atomics: gradients do not depend on the order threads and warps run in."""
    case = Case(130, 200, window=70, sinks=5, heads_q=4, heads_kv=1)
    runs = []
    for seed in (1, 2):
        with emulated.mode("random", seed):
            runs.append(emulated_gradients(case, torch.bfloat16, 64)[0])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_strided_grad_out_and_misaligned_inputs() -> None:
    """Inputs whose rows are not 16-byte aligned and a grad_out whose last dim is not contiguous
    (both copied at the boundary) give the gradients of their contiguous copies, bit for bit."""
    q, k, v = (torch.randn(1, 2, 40, 65).half()[..., 1:].requires_grad_() for _ in range(3))
    assert q.data_ptr() % 16 != 0
    d_o = torch.randn(1, 2, 64, 40).half().transpose(-1, -2)  # stride 40 along head_dim
    grads = torch.autograd.grad(emulated.sliding_attention(q, k, v, 9, 2), (q, k, v), d_o)
    dense = [t.detach().contiguous().requires_grad_() for t in (q, k, v)]
    expected = torch.autograd.grad(emulated.sliding_attention(*dense, 9, 2), dense,
                                   d_o.contiguous())
    for g, e in zip(grads, expected):
        assert torch.equal(g, e)


def test_rows_more_than_2_gib_apart_are_copied_not_misread() -> None:
    check_rows_far_apart(emulated.sliding_attention, "cpu")


def test_backward_bad_input_raises() -> None:
    q = torch.randn(1, 2, 8, 64).half()
    out, lse = emulated.sliding_attention(q, q, q, window=4, return_lse=True)
    with pytest.raises(ValueError, match="grad_out must have q's shape"):
        torch.ops.swaa_emulated.bwd(out[:, :1], None, q, q, q, out, lse, 4, 0, None, 0.125)
    with pytest.raises(ValueError, match="lse must have shape"):
        torch.ops.swaa_emulated.bwd(out, None, q, q, q, out, lse[..., :4], 4, 0, None, 0.125)
    with pytest.raises(ValueError, match="head_dim must be 64 or 128"):
        x = torch.randn(1, 2, 8, 96).half()
        torch.ops.swaa_emulated.bwd(x, None, x, x, x, x, lse, 4, 0, None, 0.125)


def test_opcheck() -> None:
    q, k, v, full_from = make_inputs(Case(20, 30, window=5, sinks=2, batch=2,
                                          full_from=(10, 25)), torch.bfloat16, 64)
    out, lse = emulated.sliding_attention(q, k, v, 5, 2, full_from=full_from, return_lse=True)
    d_o, d_lse = torch.randn_like(out), torch.randn_like(lse)
    torch.library.opcheck(torch.ops.swaa_emulated.bwd.default,
                          (d_o, d_lse, q, k, v, out, lse, 5, 2, full_from, 0.125))
    q.requires_grad_()
    torch.library.opcheck(torch.ops.swaa_emulated.fwd.default, (q, k, v, 5, 2, full_from, 0.125),
                          test_utils=("test_autograd_registration",))


def test_empty_queries_give_zero_key_gradients() -> None:
    q = torch.randn(1, 2, 0, 64).half().requires_grad_()
    k = torch.randn(1, 2, 5, 64).half().requires_grad_()
    out = emulated.sliding_attention(q, k, k, window=3)
    (dk,) = torch.autograd.grad(out.sum(), (k,), allow_unused=False)
    assert dk.shape == k.shape and torch.count_nonzero(dk) == 0
