"""The CUDA backward kernels on a real GPU, through autograd: against the float64 reference, and
against their own emulated run. Skipped without a GPU (or a build without the CUDA kernels)."""

from __future__ import annotations

import pytest
import torch
from cuda_kernel_cases import (BACKWARD_CASES, CASES, DTYPES, HEAD_DIMS, Case,
                               assert_gradients_match, gradients, make_inputs)

import swaa_ext

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        not torch._C._dispatch_has_kernel_for_dispatch_key("swaa_ext::bwd", "CUDA"),
        reason="swaa_ext._C was built without the CUDA kernels",
    ),
]

# Larger than the emulated cases: many query and key tiles per block, on both sides of every edge.
GPU_CASES = CASES + BACKWARD_CASES + [
    Case(1025, 1025, window=256, sinks=64, heads_q=8, heads_kv=2),
    Case(1, 1000, window=20, sinks=0),
    Case(97, 4099, window=1000, sinks=33, heads_q=4, heads_kv=4, batch=2),
    Case(2048, 2048, window=None, heads_q=4, heads_kv=1),
    Case(777, 1500, window=129, sinks=5, batch=2, full_from=(1200, 900)),
]


def cuda_inputs(case: Case, dtype: torch.dtype, head_dim: int):
    q, k, v, full_from = make_inputs(case, dtype, head_dim)
    if isinstance(full_from, torch.Tensor):
        full_from = full_from.cuda()
    return q.cuda(), k.cuda(), v.cuda(), full_from


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_backward_matches_reference(case: Case, dtype: torch.dtype, head_dim: int) -> None:
    q, k, v, full_from = cuda_inputs(case, dtype, head_dim)
    args = (q, k, v, case.window, case.sinks, full_from)
    grads = gradients(swaa_ext.sliding_attention, *args, with_lse=True)
    for name, g, t in zip(("dq", "dk", "dv"), grads, (q, k, v)):
        assert g.shape == t.shape and g.dtype == dtype and g.device == t.device, name
    assert_gradients_match(grads, *args, with_lse=True)


def test_unseen_keys_get_exactly_zero_gradient() -> None:
    q, k, v, _ = cuda_inputs(Case(1, 1000, window=20), torch.bfloat16, 128)
    _, dk, dv = gradients(swaa_ext.sliding_attention, q, k, v, 20, 0, None, with_lse=False)
    for grad in (dk, dv):
        assert torch.count_nonzero(grad[:, :, :980]) == 0
        assert (grad[:, :, 980:].abs().sum(-1) > 0).all()


def test_two_runs_are_bitwise_equal() -> None:
    q, k, v, _ = cuda_inputs(Case(1025, 1300, window=256, sinks=64, heads_q=8, heads_kv=1),
                             torch.bfloat16, 128)
    runs = [gradients(swaa_ext.sliding_attention, q, k, v, 256, 64, None, with_lse=True)
            for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_agrees_with_its_emulated_run() -> None:
    """Same source, two machines: the GPU and the SIMT emulator differ only by fp32 rounding of
    the mma accumulation and exp2 approximations."""
    emulated = pytest.importorskip("swaa_ext.emulated")
    case = Case(130, 200, window=70, sinks=5, heads_q=4, heads_kv=2)
    q, k, v, _ = make_inputs(case, torch.bfloat16, 64)
    expected = gradients(emulated.sliding_attention, q, k, v, 70, 5, None, with_lse=True)
    got = gradients(swaa_ext.sliding_attention, q.cuda(), k.cuda(), v.cuda(), 70, 5, None,
                    with_lse=True)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.cpu(), e, atol=3e-2, rtol=2e-2)


def test_opcheck() -> None:
    q, k, v, full_from = cuda_inputs(Case(70, 90, window=9, sinks=3, batch=2,
                                          full_from=(80, 30)), torch.float16, 64)
    out, lse = swaa_ext.sliding_attention(q, k, v, 9, 3, full_from=full_from, return_lse=True)
    d_o, d_lse = torch.randn_like(out), torch.randn_like(lse)
    torch.library.opcheck(torch.ops.swaa_ext.bwd.default,
                          (d_o, d_lse, q, k, v, out, lse, 9, 3, full_from, 0.125))
