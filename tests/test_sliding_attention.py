"""Every backend against the float64 reference, forward and backward, over the shared cases."""

import pytest
import torch

import swaa_ext
from swaa_ext import reference
from backends import BACKENDS, assert_close, device_for
from cases import CASES, Case, make_inputs

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def run_both(case, dtype, device, *, transposed=False, seed=0):
    q, k, v = make_inputs(case, dtype, device, transposed=transposed, requires_grad=True,
                          seed=seed)
    out, lse = swaa_ext.sliding_attention(q, k, v, case.window, case.sinks,
                                          full_from=case.full_from_arg(device), return_lse=True)
    # The oracle sees the same (rounded) inputs, in float64 on the CPU.
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    ref_out, ref_lse = reference.sliding_attention(q64, k64, v64, case.window, case.sinks,
                                                   full_from=case.full_from_arg(),
                                                   return_lse=True)
    return (q, k, v, out, lse), (q64, k64, v64, ref_out, ref_lse)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_backward_match_reference(backend, dtype, case):
    device = device_for(backend)
    (q, k, v, out, lse), (q64, k64, v64, ref_out, ref_lse) = run_both(case, dtype, device)
    assert out.dtype == dtype and out.shape == q.shape and out.device == q.device
    assert lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(out, ref_out, dtype, "out")
    assert_close(lse, ref_lse, torch.float32 if dtype != torch.float64 else dtype, "lse")

    # Loss uses both outputs, so the LSE's gradient path is checked too.
    gen = torch.Generator().manual_seed(1)
    g_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    g_lse = torch.randn(lse.shape, generator=gen, dtype=torch.float64)
    loss = (out.double() * g_out.to(device)).sum() + (lse.double() * g_lse.to(device)).sum()
    grads = torch.autograd.grad(loss, (q, k, v))
    ref_loss = (ref_out * g_out).sum() + (ref_lse * g_lse).sum()
    ref_grads = torch.autograd.grad(ref_loss, (q64, k64, v64))
    for name, g, rg in zip("qkv", grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, rg, dtype, f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [CASES[2], CASES[9], CASES[11]], ids=str)
def test_strided_inputs(backend, case):
    """(B, L, H, D) projections viewed as (B, H, L, D): no copy needed, same answer."""
    device = device_for(backend)
    (q, k, v, out, lse), (q64, k64, v64, ref_out, ref_lse) = run_both(
        case, torch.float32, device, transposed=True)
    assert q.stride(-1) == 1 and not q.is_contiguous()
    assert_close(out, ref_out, torch.float32, "out")
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref_out.sum(), (q64, k64, v64))
    for g, rg in zip(grads, ref_grads):
        assert_close(g, rg, torch.float32, "grad")


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_from_int_equals_per_row_tensor(backend):
    device = device_for(backend)
    case = CASES[11]
    q, k, v = make_inputs(case, torch.float32, device)
    as_int = swaa_ext.sliding_attention(q, k, v, 20, 3, full_from=60)
    as_tensor = swaa_ext.sliding_attention(
        q, k, v, 20, 3, full_from=torch.tensor([60, 60], device=device))
    assert torch.equal(as_int, as_tensor)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape_q,shape_k", [
    ((0, 2, 5, 16), (0, 2, 5, 16)),   # empty batch
    ((1, 2, 0, 16), (1, 2, 0, 16)),   # zero-length sequences
    ((1, 2, 0, 16), (1, 2, 9, 16)),   # no queries, some keys
    ((1, 0, 4, 16), (1, 1, 4, 16)),   # no query heads
])
def test_empty_inputs_give_empty_outputs(backend, shape_q, shape_k):
    device = device_for(backend)
    q = torch.randn(shape_q, device=device, requires_grad=True)
    k = torch.randn(shape_k, device=device, requires_grad=True)
    v = torch.randn(shape_k, device=device, requires_grad=True)
    out, lse = swaa_ext.sliding_attention(q, k, v, 4, 1, return_lse=True)
    assert out.shape == q.shape and lse.shape == q.shape[:3]
    out.sum().backward()
    assert q.grad.shape == q.shape
    assert k.grad.shape == k.shape and torch.count_nonzero(k.grad) == 0
    assert v.grad.shape == v.shape and torch.count_nonzero(v.grad) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_unseen_keys_get_zero_gradient(backend):
    """Keys outside every query's sinks and window receive exactly zero dK/dV."""
    device = device_for(backend)
    q = torch.randn(1, 2, 4, 16, device=device)
    k = torch.randn(1, 1, 300, 16, device=device, requires_grad=True)
    v = torch.randn(1, 1, 300, 16, device=device, requires_grad=True)
    swaa_ext.sliding_attention(q, k, v, 10, 5).sum().backward()
    # The 4 queries sit at 296..299 and see keys 0..4 (sinks) and 287..299 (window).
    seen = torch.zeros(300, dtype=torch.bool)
    seen[:5] = True
    seen[287:] = True
    assert torch.count_nonzero(k.grad[0, 0, ~seen]) == 0
    assert torch.count_nonzero(v.grad[0, 0, ~seen]) == 0
    assert torch.count_nonzero(v.grad[0, 0, seen].abs().sum(-1)) == int(seen.sum())


def test_backward_is_deterministic():
    case = CASES[9]
    q, k, v = make_inputs(case, torch.float32, requires_grad=True)
    runs = []
    for _ in range(2):
        out = swaa_ext.sliding_attention(q, k, v, case.window, case.sinks)
        runs.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


# Above the kernels' serial cutoff (tile_ops.h worth_parallel: 16 MFLOP), so OpenMP shares it.
PARALLEL_CASE = Case(1500, 1500, window=300, sinks=20, heads_q=4, heads_kv=2, head_dim=64,
                     full_from=(1200,))


def test_parallel_path_matches_reference_and_thread_count():
    case = PARALLEL_CASE
    (q, k, v, out, lse), (q64, k64, v64, ref_out, ref_lse) = run_both(case, torch.float32, "cpu")
    assert_close(out, ref_out, torch.float32, "out")
    assert_close(lse, ref_lse, torch.float32, "lse")
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref_out.sum(), (q64, k64, v64))
    for g, rg in zip(grads, ref_grads):
        assert_close(g, rg, torch.float32, "grad")
    # Every work item is computed alone, so the answer does not depend on the thread count.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = torch.autograd.grad(
            swaa_ext.sliding_attention(q, k, v, case.window, case.sinks,
                                       full_from=case.full_from_arg()).sum(), (q, k, v))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(grads, serial):
        assert torch.equal(a, b)


@pytest.mark.parametrize("attention",
                         [swaa_ext.sliding_attention, swaa_ext.emulated.sliding_attention],
                         ids=["cpu", "emulated"])
def test_default_full_from_allocates_nothing_per_call(attention):
    """A decode step with full_from=None dispatches no tensor creation for it (the kernels take
    a null pointer as "never"); an int full_from does build its (B,) tensor, which shows the
    profiler sees such allocations."""
    from torch.profiler import profile

    q, k, v = (torch.randn(2, 2, n, 64, dtype=torch.float16) for n in (1, 40, 40))
    ops = {}
    for full_from in (None, 10):
        with profile() as prof:
            attention(q, k, v, 8, 2, full_from=full_from)
        ops[full_from] = {e.name for e in prof.events()}
    assert not ops[None] & {"aten::full", "aten::fill_"}, ops[None]
    assert "aten::full" in ops[10]
