"""The CUDA forward kernel, run on the CPU by the SIMT emulator, against the float64 reference.

Every case runs for every (dtype, head dim) under the default schedule, and once more under each
other emulator schedule (random with two seeds, warp-serial with eager cp.async, race check), the
(dtype, head dim) rotating over the cases so each schedule sees all four. Shapes are small and
ragged around the kernel's tiles (64 query rows; 64 keys for head dim 64, 32 for head dim 128):
emulation runs at about 1 GFLOP/s.
"""

from __future__ import annotations

import pytest
import torch
from cuda_kernel_cases import (CASES, DTYPES, HEAD_DIMS, Case, assert_matches_reference, make_inputs,
                               max_error)

from swaa_ext import reference

emulated = pytest.importorskip("swaa_ext.emulated", reason="swaa_ext._C_emulated was not built")
# The emulator runs about 1 GFLOP/s: minutes for the emulated suites (docs/testing.md, "Tiers").
pytestmark = pytest.mark.slow

OTHER_SCHEDULES = [("random", 1), ("random", 2), ("warp_serial", 0), ("race_check", 0)]


def check_against_reference(case: Case, dtype: torch.dtype, head_dim: int) -> None:
    q, k, v, full_from = make_inputs(case, dtype, head_dim)
    args = (q, k, v, case.window, case.sinks)
    out, lse = emulated.sliding_attention(*args, full_from=full_from, return_lse=True)
    assert_matches_reference(out, lse, *args, full_from)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(case: Case, dtype: torch.dtype, head_dim: int) -> None:
    with emulated.mode("default"):
        check_against_reference(case, dtype, head_dim)


@pytest.mark.parametrize("schedule", OTHER_SCHEDULES, ids=lambda s: f"{s[0]}{s[1]}")
@pytest.mark.parametrize("index", range(len(CASES)), ids=lambda i: str(CASES[i]))
def test_forward_under_schedule(index: int, schedule: tuple[str, int]) -> None:
    dtype = DTYPES[index % len(DTYPES)]
    head_dim = HEAD_DIMS[(index // len(DTYPES)) % len(HEAD_DIMS)]
    with emulated.mode(*schedule):
        check_against_reference(CASES[index], dtype, head_dim)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_skipped_key_blocks_are_never_read(head_dim: int) -> None:
    """Work skipping: one query at position 299 with window 20 and 4 sinks needs key blocks 0 and
    those holding keys 280-299 only. NaN in keys/values 128-255 (outside them for every tile
    size: 32 and 64 keys in the tile kernel, 64 and 128 in the decode kernel this query takes)
    must not reach the output."""
    q, k, v, _ = make_inputs(Case(1, 300, window=20, sinks=4), torch.float16, head_dim)
    expected = reference.sliding_attention(q, k, v, 20, 4)
    poisoned_k, poisoned_v = k.clone(), v.clone()
    poisoned_k[:, :, 128:256] = float("nan")
    poisoned_v[:, :, 128:256] = float("nan")
    out = emulated.sliding_attention(q, poisoned_k, poisoned_v, 20, 4)
    assert out.isfinite().all()
    torch.testing.assert_close(out, expected, atol=2e-3, rtol=0)


@pytest.mark.parametrize("layout", ["strided", "contiguous"])
def test_misaligned_view_is_copied_not_misread(layout: str) -> None:
    """Views whose rows are not 16-byte aligned (offsets into a wider buffer) still work."""
    if layout == "strided":
        q = k = v = torch.randn(1, 2, 40, 65).half()[..., 1:]  # rows start 2 bytes off
    else:
        q = k = v = torch.randn(1 + 2 * 40 * 64).half()[1:].view(1, 2, 40, 64)  # base 2 bytes off
    assert q.data_ptr() % 16 != 0
    out = emulated.sliding_attention(q, k, v, window=9, sinks=2)
    err, pt_err = max_error(out, q, k, v, 9, 2, None)
    assert err <= 2 * pt_err + 1e-5


def test_mode_context_restores_and_rejects_unknown() -> None:
    with emulated.mode("random", seed=7):
        with emulated.mode("race_check"):
            pass
        assert emulated.current_mode() == ("random", 7)
    assert emulated.current_mode() == ("default", 0)
    assert {name for name, _ in OTHER_SCHEDULES} | {"default"} == set(emulated.MODES)
    with pytest.raises(ValueError, match="mode must be one of"):
        emulated.set_mode("fastest")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: [torch.randn(1, 2, 8, 96).half()] * 3, ValueError, "head_dim must be 64 or 128"),
        (lambda: [torch.randn(1, 2, 8, 64)] * 3, TypeError, "float16 or bfloat16"),
        (lambda: [torch.randn(1, 2, 8, 64).half(), torch.randn(1, 2, 8, 32).half(),
                  torch.randn(1, 2, 8, 32).half()], ValueError, "head_dim"),
        (lambda: [torch.randn(1, 3, 8, 64).half(), torch.randn(1, 2, 8, 64).half(),
                  torch.randn(1, 2, 8, 64).half()], ValueError, "multiple of k's heads"),
    ],
    ids=["head_dim_96", "float32", "k_head_dim", "gqa_ratio"],
)
def test_bad_input_raises(make, error, match) -> None:
    q, k, v = make()
    with pytest.raises(error, match=match):
        emulated.sliding_attention(q, k, v, window=4)


@pytest.mark.parametrize("scale", [0.0, -0.125, float("nan")])
def test_non_positive_scale_raises(scale: float) -> None:
    q = torch.randn(1, 2, 8, 64).half()
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        emulated.sliding_attention(q, q, q, window=4, scale=scale)


def test_opcheck() -> None:
    q, k, v, full_from = make_inputs(Case(20, 30, window=5, sinks=2, batch=2,
                                          full_from=(10, 25)), torch.bfloat16, 64)
    torch.library.opcheck(torch.ops.swaa_emulated.fwd.default,
                          (q, k, v, 5, 2, full_from, 0.125))


@pytest.mark.parametrize(("q_shape", "k_shape"), [((1, 2, 0, 64), (1, 2, 5, 64)),
                                                  ((0, 2, 4, 64), (0, 2, 5, 64))],
                         ids=["no_queries", "no_batch"])
def test_empty_inputs_launch_nothing(q_shape, k_shape) -> None:
    q, k = torch.randn(q_shape).half(), torch.randn(k_shape).half()
    out, lse = emulated.sliding_attention(q, k, k, window=3, return_lse=True)
    assert out.shape == q.shape and lse.shape == q.shape[:3]
