"""Learned sink logits (gpt-oss's `sinks`): `sink_logits=` on the dense, varlen and paged ops and
their emulated twins, against the float64 reference (which writes the virtual key out as a
column of the scores): out, LSE and the gradients of q, k, v and the logits, with hard sinks,
windows, full_from, GQA, ragged batches, rows that see only themselves, logits that dominate,
and very large and very negative logits; bad input; torch.compile; and a GPU row (skipped
without one)."""

from __future__ import annotations

import pytest
import torch
from backends import assert_close, device_for
from cases import Case, make_inputs
from paged_cases import paged, seqused
from varlen_cases import VarlenCase, pack

import swaa_ext
from swaa_ext import reference

CASES = [
    Case(63, 63, window=17, sinks=5, heads_q=4, heads_kv=2, head_dim=32),
    Case(65, 65, window=1, heads_q=4, heads_kv=1, batch=2, head_dim=32),  # rows see themselves
    Case(1, 333, window=50, sinks=70, heads_q=8, heads_kv=2, batch=2, head_dim=32),  # decode
    Case(150, 150, window=20, sinks=3, heads_q=2, heads_kv=1, batch=2, head_dim=32,
         full_from=(0, 75)),
    Case(100, 200, window=None, heads_q=2, heads_kv=2, head_dim=64),
]
# Per query head: ordinary, dominating, negligible, and extreme logits.
LOGIT_SETS = {
    "ordinary": [0.3, -1.2, 2.0, 0.0, 0.5, -0.1, 1.1, -2.0],
    "dominating": [20.0] * 8,
    "extreme": [1e4, -1e4, float("-inf"), 30.0, -30.0, 1e4, -1e4, 0.0],
}


def logits(name: str, heads: int, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(LOGIT_SETS[name][:heads], dtype=dtype)


@pytest.mark.parametrize("logit_set", list(LOGIT_SETS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(case, dtype, logit_set):
    q, k, v = make_inputs(case, dtype)
    t = logits(logit_set, case.heads_q)
    ff = case.full_from_arg()
    out, lse = swaa_ext.sliding_attention(q, k, v, case.window, case.sinks, full_from=ff,
                                          sink_logits=t, return_lse=True)
    ref_out, ref_lse = reference.sliding_attention(q, k, v, case.window, case.sinks,
                                                   full_from=ff, sink_logits=t, return_lse=True)
    assert out.dtype == dtype and lse.dtype == ref_lse.dtype
    assert_close(out, ref_out, dtype, "out")
    assert_close(lse, ref_lse, dtype, "lse")


@pytest.mark.parametrize("logit_set", ["ordinary", "extreme"])
@pytest.mark.parametrize("case", CASES[:4], ids=str)
def test_gradients_match_reference(case, logit_set):
    """dq, dk, dv and d(sink_logits) through out and LSE, float64, against autograd through the
    reference (a different formula: the virtual key as a column of the scores)."""
    q, k, v = make_inputs(case, torch.float64, requires_grad=True)
    finite = [x if x != float("-inf") else -1e30 for x in LOGIT_SETS[logit_set]]
    t = torch.tensor(finite[:case.heads_q], dtype=torch.float64, requires_grad=True)
    ff = case.full_from_arg()
    gen = torch.Generator().manual_seed(3)

    def grads(fn):
        out, lse = fn(q, k, v, case.window, case.sinks, full_from=ff, sink_logits=t,
                      return_lse=True)
        d_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        d_lse = torch.randn(lse.shape, generator=gen, dtype=torch.float64)
        return torch.autograd.grad([out, lse], [q, k, v, t], [d_out, d_lse])

    gen.manual_seed(3)
    ours = grads(swaa_ext.sliding_attention)
    gen.manual_seed(3)
    ref = grads(reference.sliding_attention)
    for name, a, b in zip(("dq", "dk", "dv", "d_sink_logits"), ours, ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=lambda m: f"{name}: {m}")


def test_gradcheck():
    case = Case(9, 12, window=3, sinks=2, heads_q=4, heads_kv=2, head_dim=8)
    q, k, v = make_inputs(case, torch.float64, requires_grad=True)
    t = torch.tensor([0.2, -0.7, 1.5, -3.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, t: swaa_ext.sliding_attention(q, k, v, 3, 2, sink_logits=t,
                                                      return_lse=True), (q, k, v, t))


def test_minus_infinity_is_no_sink_at_all():
    case = CASES[0]
    q, k, v = make_inputs(case, torch.float32)
    t = torch.full((case.heads_q,), float("-inf"))
    plain = swaa_ext.sliding_attention(q, k, v, 17, 5, return_lse=True)
    with_sink = swaa_ext.sliding_attention(q, k, v, 17, 5, sink_logits=t, return_lse=True)
    assert torch.equal(plain[0], with_sink[0]) and torch.equal(plain[1], with_sink[1])


VARLEN = VarlenCase(((0, 0), (1, 1), (30, 70), (65, 65), (1, 300)), 4, 2, window=16, sinks=3,
                    full_from=(0, 0, 50, 1000, 0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_varlen_and_paged_match_reference(dtype):
    q, k, v, cu_q, cu_k, max_q, max_k = pack(VARLEN, 32, dtype)
    t = logits("ordinary", VARLEN.heads_q)
    ff = VARLEN.full_from_arg("cpu")
    expected = reference.sliding_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, 16, 3,
                                                  full_from=ff, sink_logits=t, return_lse=True)
    got = swaa_ext.sliding_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, 16, 3,
                                            full_from=ff, sink_logits=t, return_lse=True)
    k_cache, v_cache, table = paged(k, v, cu_k, 16)
    paged_args = (q, k_cache, v_cache, table, cu_q, seqused(cu_k), max_q, max_k, 16, 3)
    from_pages = swaa_ext.sliding_attention_paged(*paged_args, full_from=ff, sink_logits=t,
                                                  return_lse=True)
    buffer = torch.full_like(q, float("nan"))
    into = swaa_ext.sliding_attention_paged(*paged_args, full_from=ff, sink_logits=t, out=buffer)
    assert into.data_ptr() == buffer.data_ptr()
    for name, (out, lse) in {"varlen": got, "paged": from_pages}.items():
        assert_close(out, expected[0], dtype, f"{name} out")
        assert_close(lse, expected[1], dtype, f"{name} lse")
    assert_close(buffer, expected[0], dtype, "paged out=")


def test_varlen_gradients_match_reference():
    q, k, v, cu_q, cu_k, max_q, max_k = pack(VARLEN, 16, torch.float64)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    t = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    ff = VARLEN.full_from_arg("cpu")
    results = []
    for fn in (swaa_ext.sliding_attention_varlen, reference.sliding_attention_varlen):
        out, lse = fn(q, k, v, cu_q, cu_k, max_q, max_k, 16, 3, full_from=ff, sink_logits=t,
                      return_lse=True)
        results.append(torch.autograd.grad(out.sum() + lse.sum(), [q, k, v, t]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("change, error, match", [
    (lambda t: t[:3], ValueError, r"sink_logits must have shape \(heads_q,\) = \(4,\)"),
    (lambda t: t.view(2, 2), ValueError, "sink_logits must have shape"),
    (lambda t: t.to(torch.int64), TypeError, "sink_logits must be float32, float64 or q's"),
    (lambda t: t.tolist(), TypeError, "sink_logits must be None or a tensor"),
    (lambda t: t.to("meta"), ValueError, "sink_logits must be on q's device"),
])
def test_bad_sink_logits_name_the_argument(change, error, match):
    q, k, v = make_inputs(CASES[0], torch.float32)
    with pytest.raises(error, match=match):
        swaa_ext.sliding_attention(q, k, v, 8, 2, sink_logits=change(torch.zeros(4)))


def test_compiles_fullgraph():
    case = CASES[0]
    q, k, v = make_inputs(case, torch.float32, requires_grad=True)
    t = torch.randn(case.heads_q, requires_grad=True)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def run(q, k, v, t):
        return swaa_ext.sliding_attention(q, k, v, 17, 5, sink_logits=t)

    out = run(q, k, v, t)
    torch.testing.assert_close(out, swaa_ext.sliding_attention(q, k, v, 17, 5, sink_logits=t))
    out.sum().backward()
    assert t.grad is not None and t.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("schedule", [("default", 0), ("random", 1), ("warp_serial", 0),
                                      ("race_check", 0)], ids=lambda s: s[0])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_emulated_cuda_kernels(dtype, schedule):
    """The CUDA forward, decode and backward kernels (emulated) with sink logits: dense (tile and
    decode kernels), varlen and paged, against the reference; gradients of q, k, v, t."""
    emulated = pytest.importorskip("swaa_ext.emulated")
    case = Case(70, 130, window=20, sinks=4, heads_q=4, heads_kv=2, head_dim=64)
    decode = Case(1, 300, window=40, sinks=4, heads_q=8, heads_kv=2, head_dim=64)
    with emulated.mode(*schedule):
        for c in (case, decode):
            q, k, v = make_inputs(c, dtype, requires_grad=True)
            t = logits("ordinary", c.heads_q).requires_grad_()
            out, lse = emulated.sliding_attention(q, k, v, c.window, c.sinks, sink_logits=t,
                                                  return_lse=True)
            ref_out, ref_lse = reference.sliding_attention(q, k, v, c.window, c.sinks,
                                                           sink_logits=t, return_lse=True)
            assert_close(out, ref_out, dtype, f"{c} out")
            assert_close(lse, ref_lse, dtype, f"{c} lse")
            if c is case:
                ours = torch.autograd.grad(out.float().sum() + lse.sum(), [q, k, v, t])
                ref = torch.autograd.grad(ref_out.float().sum() + ref_lse.sum(), [q, k, v, t])
                for name, a, b in zip(("dq", "dk", "dv", "dt"), ours, ref):
                    assert_close(a, b, dtype, name)
        q, k, v, cu_q, cu_k, max_q, max_k = pack(VARLEN, 64, dtype)
        t = logits("extreme", VARLEN.heads_q)
        ff = VARLEN.full_from_arg("cpu")
        expected = reference.sliding_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, 16, 3,
                                                      full_from=ff, sink_logits=t,
                                                      return_lse=True)
        got = emulated.sliding_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, 16, 3,
                                                full_from=ff, sink_logits=t, return_lse=True)
        k_cache, v_cache, table = paged(k, v, cu_k, 16)
        from_pages = emulated.sliding_attention_paged(
            q, k_cache, v_cache, table, cu_q, seqused(cu_k), max_q, max_k, 16, 3, full_from=ff,
            sink_logits=t, return_lse=True)
        for name, (out, lse) in {"varlen": got, "paged": from_pages}.items():
            assert_close(out, expected[0], dtype, f"{name} out")
            assert_close(lse, expected[1], dtype, f"{name} lse")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda(dtype):
    device = device_for("cuda")
    case = Case(300, 500, window=64, sinks=4, heads_q=8, heads_kv=2, head_dim=128)
    q, k, v = (x.to(device).requires_grad_() for x in make_inputs(case, dtype))
    t = logits("ordinary", case.heads_q).to(device).requires_grad_()
    out, lse = swaa_ext.sliding_attention(q, k, v, 64, 4, sink_logits=t, return_lse=True)
    ref_out, ref_lse = reference.sliding_attention(q, k, v, 64, 4, sink_logits=t,
                                                   return_lse=True)
    assert_close(out, ref_out, dtype, "out")
    assert_close(lse, ref_lse, dtype, "lse")
    ours = torch.autograd.grad(out.float().sum(), [q, k, v, t])
    ref = torch.autograd.grad(ref_out.float().sum(), [q, k, v, t])
    for name, a, b in zip(("dq", "dk", "dv", "dt"), ours, ref):
        assert_close(a, b, dtype, name)
