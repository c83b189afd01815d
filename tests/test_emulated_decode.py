"""The CUDA split-KV decode kernel (len_q <= 16), run on the CPU by the SIMT emulator, against the
float64 reference; and the rule that picks it (csrc/swaa/cuda/decode_plan.h).

Each case runs through `sliding_attention` (the plan's split count for the emulator's 108 SMs)
for every (dtype, head dim), and with forced split counts (one split: no combine step; three; more
splits than key tiles: empty splits) under the default schedule and the other schedules, the
(dtype, head dim) rotating over the cases.
"""

from __future__ import annotations

import math

import pytest
import torch
from cuda_kernel_cases import (DECODE_CASES, DTYPES, HEAD_DIMS, Case, assert_matches_reference,
                               check_decode_on_varlen, make_inputs)

emulated = pytest.importorskip("swaa_ext.emulated", reason="swaa_ext._C_emulated was not built")
# The emulator runs about 1 GFLOP/s: minutes for the emulated suites (docs/testing.md, "Tiers").
pytestmark = pytest.mark.slow

EMULATED_SMS = 108  # what the emulated ops plan for (emulated_ops.cpp)
SCHEDULES = [("default", 0), ("random", 1), ("warp_serial", 0), ("race_check", 0)]
FORCED_SPLITS = [1, 3, 200]


def rotated(index: int) -> tuple[torch.dtype, int]:
    return DTYPES[index % len(DTYPES)], HEAD_DIMS[(index // len(DTYPES)) % len(HEAD_DIMS)]


def plan(case: Case, head_dim: int, num_sms: int = EMULATED_SMS):
    return emulated.decode_plan(case.batch, case.heads_q, case.heads_kv, case.len_q, case.len_k,
                                head_dim, case.window, case.sinks,
                                with_full_from=case.full_from is not None, num_sms=num_sms)


def check(case: Case, dtype: torch.dtype, head_dim: int, num_splits: int | None) -> None:
    q, k, v, full_from = make_inputs(case, dtype, head_dim)
    args = (q, k, v, case.window, case.sinks)
    if num_splits is None:
        out, lse = emulated.sliding_attention(*args, full_from=full_from, return_lse=True)
    else:
        out, lse = emulated.decode_forward(*args, full_from=full_from, num_splits=num_splits)
    assert_matches_reference(out, lse, *args, full_from)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", DECODE_CASES, ids=str)
def test_decode_matches_reference(case: Case, dtype: torch.dtype, head_dim: int) -> None:
    assert plan(case, head_dim).use_decode
    with emulated.mode("default"):
        check(case, dtype, head_dim, None)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"{s[0]}{s[1]}")
@pytest.mark.parametrize("num_splits", FORCED_SPLITS)
@pytest.mark.parametrize("index", range(len(DECODE_CASES)), ids=lambda i: str(DECODE_CASES[i]))
def test_decode_splits_under_schedule(index: int, num_splits: int,
                                      schedule: tuple[str, int]) -> None:
    with emulated.mode(*schedule):
        check(DECODE_CASES[index], *rotated(index), num_splits)


def test_sliding_attention_runs_the_planned_decode_kernel() -> None:
    """For len_q <= 16 the op's output is bit for bit the decode kernel's with the plan's split
    count, and a different split count gives different bits (so the comparison can fail)."""
    case = Case(1, 2000, window=300, sinks=4, heads_q=8, heads_kv=2)
    q, k, v, _ = make_inputs(case, torch.float16, 64)
    chosen = plan(case, 64)
    assert chosen.use_decode and chosen.num_splits > 1
    out, lse = emulated.sliding_attention(q, k, v, case.window, case.sinks, return_lse=True)
    same, same_lse = emulated.decode_forward(q, k, v, case.window, case.sinks,
                                             num_splits=chosen.num_splits)
    assert torch.equal(out, same) and torch.equal(lse, same_lse)
    other, other_lse = emulated.decode_forward(q, k, v, case.window, case.sinks, num_splits=1)
    assert not torch.equal(lse, other_lse)


def test_plan_rule() -> None:
    """decode_plan.h: decode for 1-16 queries only; splits fill 2 blocks per SM, each at least 2
    key tiles, at most 128; the query heads of a KV head share row groups of 64."""
    # The report's problem: B=1, 32 query / 8 KV heads, D=128 (64-key decode tiles), A100.
    full = emulated.decode_plan(1, 32, 8, 1, 32768, 128, None, 0, True, 108)
    assert full.use_decode and full.row_groups == 1 and full.key_tiles == 32768 // 64
    assert full.num_splits == math.ceil(2 * 108 / 8) and full.blocks == 8 * full.num_splits
    window = emulated.decode_plan(1, 32, 8, 1, 32768, 128, 4096, 64, False, 108)
    assert window.key_tiles == 1 + 4096 // 64  # the sink tile and the window's
    assert window.num_splits == full.num_splits
    short = emulated.decode_plan(1, 32, 8, 1, 100, 128, None, 0, False, 108)
    assert short.num_splits == math.ceil(short.key_tiles / 2)
    assert emulated.decode_plan(1, 32, 8, 1, 10**6, 128, None, 0, True, 1000).num_splits == 128
    busy = emulated.decode_plan(64, 32, 8, 1, 32768, 128, None, 0, True, 108)
    assert busy.num_splits == 1 and busy.blocks == 64 * 8
    packed = emulated.decode_plan(1, 64, 8, 16, 4096, 64, 512, 4, False, 108)
    assert packed.row_groups == 2  # 8 heads x 16 queries = 128 packed rows
    assert emulated.decode_plan(1, 8, 8, 16, 4096, 64, None, 0, False, 108).use_decode
    assert not emulated.decode_plan(1, 8, 8, 17, 4096, 64, None, 0, False, 108).use_decode


def test_decode_on_varlen_batches() -> None:
    """vLLM-style decode batches: one (or a few) queries per sequence, ragged key lengths, through
    the varlen op, where a sequence without queries is skipped."""
    check_decode_on_varlen(emulated.sliding_attention_varlen, "cpu", [1, 4, 0, 16], [900, 37, 12, 400])


def test_bad_split_count_raises() -> None:
    q = torch.randn(1, 2, 1, 64).half()
    with pytest.raises(ValueError, match="num_splits must be >= 1"):
        emulated.decode_forward(q, q, q, 4, 0, num_splits=0)
