"""swaa_ext.sliding_attention_varlen (FlashAttention's varlen layout): every sequence of a packed
batch gets exactly what it gets alone through sliding_attention, and what the float64 reference
gives, forward (out, LSE) and backward (dq, dk, dv); bad input names the argument; the op is a real
custom op (opcheck, gradcheck, torch.compile)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from backends import BACKENDS, device_for
from hypothesis import given, settings
from hypothesis import strategies as st
from varlen_cases import VarlenCase, check_varlen, cu_seqlens, pack

import swaa_ext
from swaa_ext import reference

OPS = SimpleNamespace(varlen=swaa_ext.sliding_attention_varlen, dense=swaa_ext.sliding_attention)

# Ragged lengths around the 64-row / 64-key CPU tiles (0, 1, 63, 64, 65, 1000+), Lq < Lk per
# sequence, GQA, windows 1 / small / None, sinks past a short sequence, full_from per sequence.
CASES = [
    VarlenCase(((0, 0), (1, 1), (63, 63), (65, 65), (64, 64)), 2, 1, window=5, sinks=2),
    VarlenCase(((1030, 1030), (3, 40), (0, 7)), 4, 2, window=100, sinks=3),
    VarlenCase(((10, 70), (65, 129), (1, 1)), 4, 1, window=None),
    VarlenCase(((7, 9), (66, 66)), 2, 2, window=1),
    VarlenCase(((5, 5), (100, 130), (2, 3)), 2, 1, window=8, sinks=20),
    VarlenCase(((50, 50), (80, 100), (30, 30)), 2, 1, window=6, sinks=1, full_from=(0, 60, 1000)),
    VarlenCase(((40, 40), (70, 90)), 4, 2, window=10, full_from=35, strided=True),
    VarlenCase(((0, 20), (30, 30), (0, 0)), 2, 2, window=4, sinks=2),
    VarlenCase(((65, 65),), 2, 1, window=17, sinks=3, slack=70),  # max_seqlen > every length
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_matches_each_sequence_alone_and_reference(backend, case, dtype):
    device = device_for(backend)
    if backend == "cuda":
        pytest.skip("the CUDA kernels take float16/bfloat16: tests/test_emulated_varlen.py")
    check_varlen(OPS, case, 16, dtype, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_varlen_on_cuda(dtype, head_dim):
    device = device_for("cuda")
    for case in CASES:
        check_varlen(OPS, case, head_dim, dtype, device, grad_tol=4.0)


def test_lse_is_flash_attention_layout():
    case = VarlenCase(((3, 5), (4, 4)), 2, 1, window=None)
    q, k, v, cu_q, cu_k, mq, mk = pack(case, 8, torch.float64)
    out, lse = swaa_ext.sliding_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, None,
                                                 return_lse=True)
    assert out.shape == (7, 2, 8) and lse.shape == (2, 7) and lse.dtype == torch.float64
    _, lse32 = swaa_ext.sliding_attention_varlen(q.float(), k.float(), v.float(), cu_q, cu_k, mq,
                                                 mk, None, return_lse=True)
    assert lse32.dtype == torch.float32


def test_all_sequences_empty():
    q = torch.randn(0, 2, 8, requires_grad=True)
    k = torch.randn(0, 2, 8, requires_grad=True)
    cu = torch.zeros(3, dtype=torch.int32)
    out, lse = swaa_ext.sliding_attention_varlen(q, k, k, cu, cu, 0, 0, 4, return_lse=True)
    assert out.shape == (0, 2, 8) and lse.shape == (2, 0)
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_no_sequences():
    q = torch.randn(0, 2, 8)
    cu = torch.zeros(1, dtype=torch.int32)
    out = swaa_ext.sliding_attention_varlen(q, q, q, cu, cu, 0, 0, None)
    assert out.shape == (0, 2, 8)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 4))
    lens = []
    for _ in range(n):
        lk = draw(st.integers(0, 150))
        lens.append((draw(st.integers(0, lk)), lk))
    heads_kv = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2, 3]))
    window = draw(st.one_of(st.none(), st.integers(1, 160)))
    sinks = draw(st.integers(0, 70))
    full_from = draw(st.one_of(st.none(), st.integers(-2, 160),
                               st.tuples(*[st.integers(0, 160)] * n)))
    return VarlenCase(tuple(lens), heads_kv * group, heads_kv, window, sinks, full_from,
                      strided=draw(st.booleans()))


@settings(max_examples=40, deadline=None)
@given(problems())
def test_random_varlen_problems(case):
    check_varlen(OPS, case, 8, torch.float64)


# ---- bad input --------------------------------------------------------------------------------

def varlen_args(**overrides):
    q, k, v = torch.randn(7, 4, 16), torch.randn(10, 2, 16), torch.randn(10, 2, 16)
    args = dict(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens([3, 4]), cu_seqlens_k=cu_seqlens([4, 6]),
                max_seqlen_q=4, max_seqlen_k=6, window=4)
    args.update(overrides)
    return args


def i32(*values):
    return torch.tensor(values, dtype=torch.int32)


@pytest.mark.parametrize("overrides,error,match", [
    ({"q": torch.randn(1, 7, 4, 16)}, ValueError, "q must have 3 dims"),
    ({"k": torch.randn(10, 2, 8), "v": torch.randn(10, 2, 8)}, ValueError, "head_dim"),
    ({"k": torch.randn(10, 3, 16), "v": torch.randn(10, 3, 16)}, ValueError, "multiple of k's"),
    ({"v": torch.randn(9, 2, 16)}, ValueError, "same shape"),
    ({"q": torch.randn(7, 4, 16).double()}, TypeError, "one dtype"),
    ({"cu_seqlens_q": i32(0, 3, 7).long()}, TypeError, "cu_seqlens_q must be an int32"),
    ({"cu_seqlens_k": i32(0, 4, 10).float()}, TypeError, "cu_seqlens_k must be an int32"),
    ({"cu_seqlens_q": i32(0, 3, 7).view(1, 3)}, ValueError, "cu_seqlens_q must have shape"),
    ({"cu_seqlens_q": i32()}, ValueError, "cu_seqlens_q must have shape"),
    ({"cu_seqlens_q": i32(0, 7)}, ValueError, "cu_seqlens_k must have cu_seqlens_q's length"),
    ({"cu_seqlens_k": i32(0, 4, 10).to("meta")}, ValueError, "cu_seqlens_k must be on q's"),
    ({"cu_seqlens_q": i32(1, 3, 7)}, ValueError, "cu_seqlens_q must start at 0"),
    ({"cu_seqlens_q": i32(0, 3, 6)}, ValueError, r"cu_seqlens_q must end at q.size\(0\) = 7"),
    ({"cu_seqlens_k": i32(0, 4, 11)}, ValueError, r"cu_seqlens_k must end at k.size\(0\) = 10"),
    ({"cu_seqlens_q": i32(0, 0, 0, 7), "cu_seqlens_k": i32(0, 4, 3, 10), "max_seqlen_q": 7,
      "max_seqlen_k": 7}, ValueError, "cu_seqlens_k must be non-decreasing"),
    ({"cu_seqlens_q": i32(0, 5, 7), "max_seqlen_q": 5}, ValueError, "more queries"),
    ({"max_seqlen_q": 3}, ValueError, "max_seqlen_q"),
    ({"max_seqlen_k": 5}, ValueError, "max_seqlen_k"),
    ({"max_seqlen_k": -1}, ValueError, "max_seqlen_k must be >= 0"),
    ({"max_seqlen_q": 4.0}, TypeError, "max_seqlen_q must be an int"),
    ({"cu_seqlens_q": [0, 3, 7]}, TypeError, "cu_seqlens_q must be an int32 torch.Tensor"),
    ({"full_from": torch.tensor([1, 2, 3])}, ValueError, r"full_from must have shape \(sequences"),
    ({"full_from": torch.tensor([1.0, 2.0])}, TypeError, "full_from must be an int64"),
    ({"full_from": 2.5}, TypeError, "full_from"),
    ({"window": 0}, ValueError, "window"),
    ({"sinks": -1}, ValueError, "sinks"),
    ({"q": torch.randn(7, 4, 300), "k": torch.randn(10, 2, 300), "v": torch.randn(10, 2, 300)},
     ValueError, "head_dim must be in"),
])
def test_bad_input_names_the_argument(overrides, error, match):
    with pytest.raises(error, match=match):
        swaa_ext.sliding_attention_varlen(**varlen_args(**overrides))


# ---- the custom op ------------------------------------------------------------------------------

OP_CASES = [
    VarlenCase(((3, 5), (0, 2), (6, 6)), 4, 2, window=3, sinks=1, full_from=(1, 0, 4)),
    VarlenCase(((1, 4), (5, 5)), 2, 1, window=None),
]


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_opcheck(case):
    q, k, v, cu_q, cu_k, mq, mk = pack(case, 8, torch.float32)
    for t in (q, k, v):
        t.requires_grad_()
    ff = case.full_from_arg("cpu")
    torch.library.opcheck(torch.ops.swaa_ext.fwd_varlen.default,
                          (q, k, v, cu_q, cu_k, mq, mk, case.window, case.sinks, ff, 0.3))
    out, lse = torch.ops.swaa_ext.fwd_varlen(q, k, v, cu_q, cu_k, mq, mk, case.window, case.sinks,
                                             ff, 0.3)
    torch.library.opcheck(torch.ops.swaa_ext.bwd_varlen.default,
                          (torch.randn_like(out), torch.randn_like(lse), q.detach(), k.detach(),
                           v.detach(), out.detach(), lse.detach(), cu_q, cu_k, mq, mk,
                           case.window, case.sinks, ff, 0.3))


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_gradcheck_float64(case):
    q, k, v, cu_q, cu_k, mq, mk = pack(case, 4, torch.float64)
    ff = case.full_from_arg("cpu")

    def fn(q, k, v):
        return swaa_ext.sliding_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, case.window,
                                                 case.sinks, full_from=ff, return_lse=True)

    inputs = tuple(t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def test_torch_compile_fullgraph_matches_eager():
    case = VarlenCase(((30, 40), (70, 70), (0, 3)), 4, 2, window=9, sinks=2)
    q, k, v, cu_q, cu_k, mq, mk = pack(case, 16, torch.float32)
    for t in (q, k, v):
        t.requires_grad_()

    def loss(q, k, v, cu_q, cu_k):
        out, lse = swaa_ext.sliding_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, case.window,
                                                     case.sinks, full_from=50, return_lse=True)
        return out.sum() + lse.sum()

    compiled = torch.compile(loss, fullgraph=True)
    eager_grads = torch.autograd.grad(loss(q, k, v, cu_q, cu_k), (q, k, v))
    compiled_grads = torch.autograd.grad(compiled(q, k, v, cu_q, cu_k), (q, k, v))
    for a, b in zip(eager_grads, compiled_grads):
        torch.testing.assert_close(a, b)


def test_reference_varlen_is_the_dense_reference_per_sequence():
    case = VarlenCase(((4, 6), (2, 2)), 2, 2, window=2, sinks=1, full_from=(5, 0))
    q, k, v, cu_q, cu_k, mq, mk = pack(case, 8, torch.float64)
    out = reference.sliding_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, 2, 1,
                                             full_from=torch.tensor([5, 0]))
    first = reference.sliding_attention(q[:4].transpose(0, 1)[None], k[:6].transpose(0, 1)[None],
                                        v[:6].transpose(0, 1)[None], 2, 1, full_from=5)
    torch.testing.assert_close(out[:4], first[0].transpose(0, 1))
