"""Peers as oracles: SDPA with the equivalent boolean mask, and SDPA causal for window=None."""

import pytest
import torch
import torch.nn.functional as F

import swaa_ext
from swaa_ext import reference
from cases import Case, make_inputs

PEER_CASES = [
    Case(100, 100, window=17, heads_q=4, heads_kv=2, batch=2, head_dim=32),
    Case(1, 500, window=64, heads_q=8, heads_kv=1, head_dim=64),
    Case(70, 300, window=1, heads_q=4, heads_kv=4, head_dim=32),
    Case(200, 200, window=129, heads_q=2, heads_kv=1, head_dim=16),
]


@pytest.mark.parametrize("case", PEER_CASES, ids=str)
def test_window_without_sinks_equals_sdpa_with_boolean_mask(case):
    q, k, v = make_inputs(case, torch.float32)
    mask = reference.visible(case.len_q, case.len_k, case.window)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    got = swaa_ext.sliding_attention(q, k, v, case.window)
    torch.testing.assert_close(got, expected, atol=3e-5, rtol=3e-5)


@pytest.mark.parametrize("case", PEER_CASES, ids=str)
def test_no_window_equals_sdpa_causal_bottom_right(case):
    from torch.nn.attention.bias import causal_lower_right

    q, k, v = make_inputs(case, torch.float32)
    bias = causal_lower_right(case.len_q, case.len_k)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    got = swaa_ext.sliding_attention(q, k, v, None)
    torch.testing.assert_close(got, expected, atol=3e-5, rtol=3e-5)


def test_window_at_least_lk_is_full_causal():
    case = PEER_CASES[0]
    q, k, v = make_inputs(case, torch.float32)
    full = swaa_ext.sliding_attention(q, k, v, None)
    assert torch.equal(swaa_ext.sliding_attention(q, k, v, case.len_k), full)
    assert torch.equal(swaa_ext.sliding_attention(q, k, v, 10**9), full)
