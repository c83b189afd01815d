"""The oracle itself, against the rule written as a plain loop (docs/architecture.md, "The masking rule")."""

import math

import pytest
import torch

from swaa_ext import reference


def rule_by_loop(len_q, len_k, window, sinks, full_from):
    mask = torch.zeros(len_q, len_k, dtype=torch.bool)
    for i in range(len_q):
        p = i + (len_k - len_q)
        for j in range(len_k):
            in_window = window is None or p - j < window
            mask[i, j] = j <= p and (in_window or j < sinks or p >= full_from)
    return mask


@pytest.mark.parametrize("len_q,len_k,window,sinks,full_from", [
    (5, 5, 1, 0, 99), (5, 9, 2, 1, 99), (9, 9, 3, 2, 6), (4, 12, None, 0, 99),
    (12, 12, 4, 20, 99), (7, 7, 3, 0, 0),
])
def test_visible_matches_the_rule(len_q, len_k, window, sinks, full_from):
    got = reference.visible(len_q, len_k, window, sinks, full_from)[0, 0]
    assert torch.equal(got, rule_by_loop(len_q, len_k, window, sinks, full_from))


def test_window_one_sees_only_itself():
    mask = reference.visible(6, 6, 1)[0, 0]
    assert torch.equal(mask, torch.eye(6, dtype=torch.bool))


def test_reference_is_softmax_attention_on_visible_keys():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4)
    out = reference.sliding_attention(q, k, v, 2, 1)
    # Query row 0 sits at position 3 and sees key 0 (sink) and keys 2, 3 (window 2).
    scores = torch.tensor([q[0, 0, 0] @ k[0, 0, j] for j in (0, 2, 3)]) / math.sqrt(4)
    expected = torch.softmax(scores.double(), 0) @ v[0, 0, [0, 2, 3]].double()
    torch.testing.assert_close(out[0, 0, 0].double(), expected, rtol=1e-6, atol=1e-6)
