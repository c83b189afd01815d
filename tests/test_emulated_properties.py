"""Property-based check of the emulated CUDA forward and backward: random shapes, windows, sinks,
GQA ratios and full_from positions against the float64 reference (default schedule; few, small
examples because emulation is slow)."""

from __future__ import annotations

import pytest
import torch
from cuda_kernel_cases import (DTYPES, HEAD_DIMS, Case, assert_gradients_match, gradients,
                               make_inputs, max_error)
from hypothesis import given, settings
from hypothesis import strategies as st

emulated = pytest.importorskip("swaa_ext.emulated", reason="swaa_ext._C_emulated was not built")
# The emulator runs about 1 GFLOP/s: minutes for the emulated suites (docs/testing.md, "Tiers").
pytestmark = pytest.mark.slow


@st.composite
def cases(draw, max_len: int = 140) -> tuple[Case, torch.dtype, int]:
    len_k = draw(st.integers(1, max_len))
    len_q = draw(st.integers(1, len_k))
    heads_kv = draw(st.integers(1, 2))
    full_from = draw(st.none() | st.integers(-5, len_k + 5))
    case = Case(len_q, len_k,
                window=draw(st.none() | st.integers(1, len_k + 10)),
                sinks=draw(st.integers(0, len_k)),
                heads_q=heads_kv * draw(st.sampled_from([1, 2, 4])),
                heads_kv=heads_kv,
                full_from=full_from,
                transposed=draw(st.booleans()))
    return case, draw(st.sampled_from(DTYPES)), draw(st.sampled_from(HEAD_DIMS))


@settings(max_examples=25, deadline=None)
@given(cases())
def test_forward_matches_reference(drawn: tuple[Case, torch.dtype, int]) -> None:
    case, dtype, head_dim = drawn
    q, k, v, full_from = make_inputs(case, dtype, head_dim)
    out = emulated.sliding_attention(q, k, v, case.window, case.sinks, full_from=full_from)
    err, pt_err = max_error(out, q, k, v, case.window, case.sinks, full_from)
    assert err <= 2 * pt_err + 1e-5, f"max error {err:.3g} vs same-precision PyTorch {pt_err:.3g}"


@settings(max_examples=10, deadline=None)
@given(cases(max_len=100), st.booleans())
def test_backward_matches_reference(drawn: tuple[Case, torch.dtype, int], with_lse: bool) -> None:
    case, dtype, head_dim = drawn
    q, k, v, full_from = make_inputs(case, dtype, head_dim)
    args = (q, k, v, case.window, case.sinks, full_from)
    grads = gradients(emulated.sliding_attention, *args, with_lse=with_lse)
    assert_gradients_match(grads, *args, with_lse=with_lse)
