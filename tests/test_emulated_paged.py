"""The CUDA kernels reading a paged KV cache (swaa_ext.sliding_attention_paged's CUDA path), run on
the CPU by the SIMT emulator: the tile kernel for prompts and chunks, the split-KV decode kernel for
len_q <= 16, both loading K/V rows through the block table. Against the float64 reference, with
NaN in every slot past a sequence's keys, every page the rule does not read and every key row no
query sees; shuffled pages of sizes below, across and above a key tile; every emulator mode."""

from __future__ import annotations

import pytest
import torch
from paged_cases import (DECODE_CASES, DTYPES, HEAD_DIMS, KERNEL_PAGE_SIZES, TILE_CASES,
                         check_paged, paged, seqused)
from varlen_cases import VarlenCase, pack

emulated = pytest.importorskip("swaa_ext.emulated", reason="swaa_ext._C_emulated was not built")
# The emulator runs about 1 GFLOP/s: minutes for the emulated suites (docs/testing.md, "Tiers").
pytestmark = pytest.mark.slow

OTHER_SCHEDULES = [("random", 1), ("warp_serial", 0), ("race_check", 0)]


def paged_op(*args, **kwargs):
    return emulated.sliding_attention_paged(*args, **kwargs)


@pytest.mark.parametrize("page_size", KERNEL_PAGE_SIZES)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", TILE_CASES + DECODE_CASES, ids=str)
def test_paged_matches_reference(case, dtype, head_dim, page_size):
    with emulated.mode("default"):
        check_paged(paged_op, case, head_dim, dtype, page_size,
                    varlen_op=emulated.sliding_attention_varlen)


@pytest.mark.parametrize("schedule", OTHER_SCHEDULES, ids=lambda s: s[0])
@pytest.mark.parametrize("case", [TILE_CASES[0], TILE_CASES[2], DECODE_CASES[1]], ids=str)
def test_every_schedule(case, schedule):
    with emulated.mode(*schedule):
        check_paged(paged_op, case, 64, torch.float16, 16)


def test_decode_cases_take_the_decode_kernel_with_several_splits():
    """The decode cases above run what they claim: the decode kernel, with more than one split
    for the long FA-decode case (the plan of the emulated build, an A100's 108 SMs)."""
    for case in DECODE_CASES:
        max_q, max_k = max(a for a, _ in case.lens), max(b for _, b in case.lens)
        plan = emulated.decode_plan(len(case.lens), case.heads_q, case.heads_kv, max_q, max_k,
                                    64, case.window, case.sinks, case.full_from is not None, 108)
        assert plan.use_decode, case
    long = DECODE_CASES[1]
    plan = emulated.decode_plan(3, long.heads_q, long.heads_kv, 16, 1000, 64, long.window,
                                long.sinks, True, 108)
    assert plan.num_splits > 1, plan
    for case in TILE_CASES:
        max_q = max(a for a, _ in case.lens) + case.slack
        assert not emulated.decode_plan(1, 2, 1, max_q, 200, 64, 8, 0, False, 108).use_decode


def test_poisoned_rows_are_really_read_by_a_wider_window():
    """The NaN rows above are not a formality: a window that does see them gives NaN."""
    case = DECODE_CASES[0]
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, 64, torch.float16)
    k_cache, v_cache, table = paged(k, v, cu_k, 16)
    k_cache[table[0, 2], :, 3] = float("nan")  # key 35 of sequence 0, outside sinks + window
    narrow = paged_op(q, k_cache, v_cache, table, cu_q, seqused(cu_k), max_q, max_k, 40, 4)
    wide = paged_op(q, k_cache, v_cache, table, cu_q, seqused(cu_k), max_q, max_k, 280, 4)
    assert narrow.isfinite().all()
    assert wide[0].isnan().all()


def _arguments(dtype=torch.float16, page_size=16, head_dim=64):
    case = DECODE_CASES[0]
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, head_dim, dtype)
    k_cache, v_cache, table = paged(k, v, cu_k, page_size)
    return dict(q=q, k_cache=k_cache, v_cache=v_cache, block_table=table, cu_seqlens_q=cu_q,
                seqused_k=seqused(cu_k), max_seqlen_q=max_q, max_seqlen_k=max_k, window=40,
                sinks=4)


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "odd_offset"])
def test_out_buffer_is_written_in_place(strided):
    """out= takes the caller's buffer, also a view whose rows the kernels cannot store pairs
    into directly (an odd element offset: written through a scratch tensor and copied)."""
    args = _arguments()
    expected = paged_op(**args)
    q = args["q"]
    storage = torch.full((q.numel() + 1,), float("nan"), dtype=q.dtype)
    out = storage[1:].view(q.shape) if strided else storage[:-1].view(q.shape)
    got = paged_op(**args, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(out, expected)
    got, lse = paged_op(**args, out=out, return_lse=True)
    assert torch.equal(got, expected) and lse.isfinite().all()


@pytest.mark.parametrize("change, error, match", [
    (dict(k_cache="misaligned"), ValueError, "k_cache must start at a 16-byte aligned"),
    (dict(v_cache="own_strides"), ValueError, "k_cache and v_cache must have the same strides"),
    (dict(dtype=torch.float32), TypeError, "float16 or bfloat16"),
    (dict(head_dim=96), ValueError, "head_dim must be 64 or 128"),
    (dict(block_table="int64"), TypeError, "block_table must be an int32"),
    (dict(seqused_k="too_long"), ValueError, "seqused_k must be >= the sequence's queries"),
    (dict(block_table="page_out_of_range"), ValueError, "is not a page of k_cache"),
])
def test_bad_input_names_the_argument(change, error, match):
    args = _arguments(dtype=change.pop("dtype", torch.float16),
                      head_dim=change.pop("head_dim", 64))
    if change.get("k_cache") == "misaligned":
        kc = args["k_cache"]
        wide = torch.zeros(kc.shape[:-1] + (kc.shape[-1] + 1,), dtype=kc.dtype)
        wide[..., 1:] = kc
        args["k_cache"] = wide[..., 1:]
    if change.get("v_cache") == "own_strides":
        args["v_cache"] = args["v_cache"].contiguous()
    if change.get("block_table") == "int64":
        args["block_table"] = args["block_table"].long()
    if change.get("block_table") == "page_out_of_range":
        args["block_table"] = args["block_table"].clone()
        args["block_table"][0, 0] = args["k_cache"].shape[0]
    if change.get("seqused_k") == "too_long":
        args["seqused_k"] = args["seqused_k"] + 10_000
    with pytest.raises(error, match=match):
        paged_op(**args)


def test_amx_layout_is_refused():
    args = _arguments()
    with pytest.raises(ValueError, match='kv_layout must be "rows"'):
        torch.ops.swaa_emulated.fwd_paged(
            args["q"], args["k_cache"], args["v_cache"], args["block_table"],
            args["cu_seqlens_q"], args["seqused_k"], args["max_seqlen_q"], args["max_seqlen_k"],
            40, 4, None, 0.125, "amx")


def test_opcheck():
    args = _arguments()
    op_args = (args["q"], args["k_cache"], args["v_cache"], args["block_table"],
               args["cu_seqlens_q"], args["seqused_k"], args["max_seqlen_q"],
               args["max_seqlen_k"], 40, 4, None, 0.125)
    torch.library.opcheck(torch.ops.swaa_emulated.fwd_paged, op_args)
    out = torch.empty_like(args["q"])
    lse = torch.empty(args["q"].shape[1], args["q"].shape[0])
    torch.library.opcheck(torch.ops.swaa_emulated.fwd_paged_out, (*op_args, out, lse))
    torch.library.opcheck(torch.ops.swaa_emulated.fwd_paged_out, (*op_args, out, None))
