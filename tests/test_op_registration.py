"""The op is a real PyTorch custom op: opcheck, gradcheck in float64, torch.compile."""

import pytest
import torch

import swaa_ext
from cases import Case, make_inputs

OP_CASES = [
    (Case(9, 13, window=3, sinks=1, heads_q=4, heads_kv=2, batch=2, head_dim=8), None),
    (Case(5, 5, window=2, heads_q=2, heads_kv=1, head_dim=4), (3,)),
    (Case(1, 6, window=None, heads_q=2, heads_kv=2, head_dim=4), None),
]


@pytest.mark.parametrize("case,full_from", OP_CASES, ids=str)
def test_opcheck(case, full_from):
    q, k, v = make_inputs(case, torch.float32, requires_grad=True)
    ff = None if full_from is None else torch.tensor(full_from * case.batch)
    torch.library.opcheck(torch.ops.swaa_ext.fwd.default,
                          (q, k, v, case.window, case.sinks, ff, 0.3))


@pytest.mark.parametrize("case,full_from", OP_CASES, ids=str)
def test_gradcheck_float64(case, full_from):
    q, k, v = make_inputs(case, torch.float64, requires_grad=True)
    ff = None if full_from is None else full_from[0]

    def fn(q, k, v):
        out, lse = swaa_ext.sliding_attention(q, k, v, case.window, case.sinks, full_from=ff,
                                              return_lse=True)
        return out, lse

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-6)


def test_torch_compile_fullgraph_matches_eager():
    case = Case(70, 70, window=9, sinks=2, heads_q=4, heads_kv=2, head_dim=16)
    q, k, v = make_inputs(case, torch.float32, requires_grad=True)

    def loss(q, k, v):
        return swaa_ext.sliding_attention(q, k, v, case.window, case.sinks, full_from=50).sum()

    compiled = torch.compile(loss, fullgraph=True)
    eager_grads = torch.autograd.grad(loss(q, k, v), (q, k, v))
    compiled_grads = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    for a, b in zip(eager_grads, compiled_grads):
        torch.testing.assert_close(a, b)
