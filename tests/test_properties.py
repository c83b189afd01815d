"""Property-based: random shapes and rule settings against the reference."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import swaa_ext
from swaa_ext import reference


@st.composite
def problems(draw):
    heads_kv = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 2, 4]))
    len_k = draw(st.integers(1, 200))
    len_q = draw(st.integers(1, len_k))
    batch = draw(st.integers(1, 2))
    window = draw(st.one_of(st.none(), st.integers(1, len_k + 5)))
    sinks = draw(st.integers(0, len_k + 2))
    full_from = draw(st.one_of(st.none(), st.lists(st.integers(0, len_k + 3), min_size=batch,
                                                   max_size=batch)))
    head_dim = draw(st.sampled_from([1, 8, 24]))
    seed = draw(st.integers(0, 2**16))
    return batch, heads_kv * group, heads_kv, len_q, len_k, head_dim, window, sinks, full_from, seed


@settings(max_examples=60, deadline=None)
@given(problems())
def test_random_problems_match_reference(problem):
    batch, hq, hkv, lq, lk, d, window, sinks, full_from, seed = problem
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, hq, lq, d, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(batch, hkv, lk, d, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(batch, hkv, lk, d, generator=gen, dtype=torch.float64, requires_grad=True)
    ff = None if full_from is None else torch.tensor(full_from)
    out, lse = swaa_ext.sliding_attention(q, k, v, window, sinks, full_from=ff, return_lse=True)
    ref_out, ref_lse = reference.sliding_attention(q, k, v, window, sinks, full_from=ff,
                                                   return_lse=True)
    torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(lse, ref_lse, atol=1e-10, rtol=1e-10)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((out * g).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref_out * g).sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
