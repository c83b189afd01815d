"""swaa_ext.sliding_attention_paged (CPU): the keys and values read in place from a paged cache
through a block table, as vLLM lays them out (in any of the four dtypes; bf16 / fp16 converted
tile by tile), give the float64 reference's out and LSE for the same sequences packed; pages the
rule never reads may hold anything (NaN here); long decodes split across threads give the same;
the output can go into the caller's buffer; swaa_ext.write_paged_cache stores rows where the op
reads them; bad input names the argument; the ops are real custom ops (opcheck)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from backends import assert_close
from paged_cases import PAGE_SIZES, paged, seqused, unread_pages
from varlen_cases import VarlenCase, pack

import swaa_ext
from swaa_ext import reference

CASES = [
    VarlenCase(((0, 0), (1, 1), (63, 63), (65, 65), (64, 64)), 2, 1, window=5, sinks=2),
    VarlenCase(((1, 300), (1, 129), (2, 77)), 4, 2, window=40, sinks=4),  # decode steps
    VarlenCase(((10, 70), (65, 129), (1, 1)), 4, 1, window=None),
    VarlenCase(((5, 5), (100, 130), (2, 3)), 2, 1, window=8, sinks=20),
    VarlenCase(((50, 50), (80, 100), (30, 30)), 2, 1, window=6, sinks=1, full_from=(0, 60, 1000)),
    VarlenCase(((32, 200), (0, 20)), 4, 4, window=17, sinks=3, slack=9),  # a chunk of a prompt
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def against_reference(case: VarlenCase, packed: tuple, caches: tuple, kv_layout: str = "rows"):
    """The paged op's (out, lse) over the caches (k_cache, v_cache, block_table), and the float64
    reference's over the same sequences packed (`pack`'s tuple)."""
    q, k, v, cu_q, cu_k, max_q, max_k = packed
    ff = case.full_from_arg("cpu")
    got = swaa_ext.sliding_attention_paged(q, *caches, cu_q, seqused(cu_k), max_q, max_k,
                                           case.window, case.sinks, full_from=ff,
                                           return_lse=True, kv_layout=kv_layout)
    expected = reference.sliding_attention_varlen(q.double(), k.double(), v.double(), cu_q, cu_k,
                                                  max_q, max_k, case.window, case.sinks,
                                                  full_from=ff, return_lse=True)
    return got, expected


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("page_size", PAGE_SIZES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_paged_matches_reference(case, page_size, dtype):
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, 16, dtype)
    ff = case.full_from_arg("cpu")
    unread = unread_pages(case, page_size)
    k_cache, v_cache, table = paged(k, v, cu_k, page_size, unread)
    out, lse = swaa_ext.sliding_attention_paged(q, k_cache, v_cache, table, cu_q, seqused(cu_k),
                                                max_q, max_k, case.window, case.sinks,
                                                full_from=ff, return_lse=True)
    assert out.shape == q.shape and out.dtype == dtype
    lse_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert lse.shape == (case.heads_q, q.shape[0]) and lse.dtype == lse_dtype
    expected = reference.sliding_attention_varlen(q.double(), k.double(), v.double(), cu_q, cu_k,
                                                  max_q, max_k, case.window, case.sinks,
                                                  full_from=ff, return_lse=True)
    assert_close(out, expected[0], dtype, "out vs reference")
    assert_close(lse, expected[1], dtype, "lse vs reference")


@pytest.mark.parametrize("head_dim", [32, 64, 128, 256])
@pytest.mark.parametrize("page_size", [16, 64, 48, 5])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_bf16_cache_tile_products_match_reference(case, page_size, head_dim):
    """bf16 caches with head dims the AMX tile products take (a multiple of 32, at most 256):
    on a CPU with AMX every work item of 16 rows or more runs on it (probabilities rounded to
    bf16), elsewhere the float32 path; both within bf16's tolerance of the float64 reference,
    with NaN in every slot and page the rule does not read."""
    packed = pack(case, head_dim, torch.bfloat16)
    caches = paged(packed[1], packed[2], packed[4], page_size, unread_pages(case, page_size))
    (out, lse), expected = against_reference(case, packed, caches)
    assert_close(out, expected[0], torch.bfloat16, "out vs reference")
    assert_close(lse, expected[1], torch.bfloat16, "lse vs reference")


def test_unread_pages_are_really_skipped():
    """The NaN pages of the test above are not a formality: a window that does read them
    gives NaN (so a kernel that read outside sinks + window could not pass)."""
    case = VarlenCase(((1, 300),), 2, 1, window=40, sinks=4)
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, 16, torch.float32)
    unread = unread_pages(case, 16)
    assert unread[0]  # most pages are outside sinks + window
    k_cache, v_cache, table = paged(k, v, cu_k, 16, unread)
    wide = swaa_ext.sliding_attention_paged(q, k_cache, v_cache, table, cu_q, seqused(cu_k),
                                            max_q, max_k, 200, 4)
    assert torch.isnan(wide).all()
    narrow = swaa_ext.sliding_attention_paged(q, k_cache, v_cache, table, cu_q, seqused(cu_k),
                                              max_q, max_k, 40, 4)
    assert torch.isfinite(narrow).all()


def test_matches_the_varlen_op_on_a_vllm_decode_batch():
    """The shape of a vLLM decode step: one query per request over long cached sequences, GQA,
    a window that slides, FA decode for some requests (full_from = their prompt lengths)."""
    case = VarlenCase(((1, 700), (1, 513), (1, 64), (1, 1000)), 9, 3, window=64, sinks=4,
                      full_from=(600, 1000, 10, 2000))
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, 64, torch.float32)
    ff = case.full_from_arg("cpu")
    k_cache, v_cache, table = paged(k, v, cu_k, 16)
    got = swaa_ext.sliding_attention_paged(q, k_cache, v_cache, table, cu_q, seqused(cu_k),
                                           max_q, max_k, 64, 4, full_from=ff)
    expected = swaa_ext.sliding_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, 64, 4,
                                                 full_from=ff)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)


def _arguments(dtype=torch.float32, page_size=16):
    case = VarlenCase(((3, 20), (2, 40)), 2, 1, window=8, sinks=2)
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, 8, dtype)
    k_cache, v_cache, table = paged(k, v, cu_k, page_size)
    return dict(q=q, k_cache=k_cache, v_cache=v_cache, block_table=table, cu_seqlens_q=cu_q,
                seqused_k=seqused(cu_k), max_seqlen_q=max_q, max_seqlen_k=max_k, window=8,
                sinks=2)


@pytest.mark.parametrize("change, error, match", [
    (dict(block_table=lambda a: a.long()), TypeError, "block_table must be an int32 tensor"),
    (dict(seqused_k=lambda a: a[:1]), ValueError, "one row per sequence"),
    (dict(block_table=lambda a: a[:, :1]), ValueError, "block_table has 1 pages per sequence"),
    (dict(block_table=lambda a: a + 100), ValueError, r"is not a page of k_cache"),
    (dict(seqused_k=lambda a: a * 0 + 1), ValueError, "seqused_k must be >= the sequence's"),
    (dict(max_seqlen_k=lambda a: 10), ValueError, r"<= max_seqlen_k \(10\)"),
    (dict(cu_seqlens_q=lambda a: a - 1), ValueError, "cu_seqlens_q must start at 0"),
    (dict(q=lambda a: a[0]), ValueError, "q must have 3 dims"),
    (dict(k_cache=lambda a: a[..., :4]), ValueError, "k_cache and v_cache must have the same"),
    (dict(k_cache=lambda a: a[:, :, :, None]), ValueError, r"k_cache must have 4 dims"),
    (dict(k_cache=lambda a: a.double(), v_cache=lambda a: a.double()), TypeError,
     "q, k_cache and v_cache must share one dtype"),
    (dict(q=lambda a: torch.cat([a, a[:, :1]], 1), k_cache=lambda a: torch.cat([a, a], 1),
          v_cache=lambda a: torch.cat([a, a], 1)), ValueError, "multiple of k_cache's heads"),
    (dict(window=lambda a: 0), ValueError, "window must be None or >= 1"),
    (dict(sinks=lambda a: -1), ValueError, "sinks must be >= 0"),
    (dict(block_table=lambda a: [[0]]), TypeError, "block_table must be an int32 torch.Tensor"),
    (dict(max_seqlen_q=lambda a: 2.0), TypeError, "max_seqlen_q must be an int"),
])
def test_bad_input_names_the_argument(change, error, match):
    args = _arguments()
    for name, edit in change.items():
        args[name] = edit(args[name])
    with pytest.raises(error, match=match):
        swaa_ext.sliding_attention_paged(**args)


@pytest.fixture
def two_threads():
    """Two OpenMP threads (restored after): the split-KV plan only splits when threads share."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("full_from", [None, (0, 3000)], ids=["window", "fa_decode"])
def test_long_decode_split_across_threads(two_threads, full_from, dtype):
    """One or two requests decoding over thousands of keys: fewer work items than threads
    want, so the kernel cuts each item's key tiles into parts and merges them by LSE
    (csrc/swaa/cpu/split_plan.h; the problem is big enough to run in parallel). Unread pages
    hold NaN, so a part that strayed outside its tiles would show."""
    case = VarlenCase(((1, 6000), (3, 2500)), 8, 2, window=1500, sinks=70, full_from=full_from)
    packed = pack(case, 128, dtype)
    caches = paged(packed[1], packed[2], packed[4], 32, unread_pages(case, 32))
    (out, lse), expected = against_reference(case, packed, caches)
    assert_close(out, expected[0], dtype, "out vs reference")
    assert_close(lse, expected[1], torch.float32, "lse vs reference")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_out_buffer_is_written_in_place(dtype):
    """`out=`: a strided view of the caller's (tokens, heads * D) buffer is filled and
    returned; the rest of the buffer is untouched; no LSE unless asked."""
    args = _arguments(dtype)
    q = args["q"]
    expected = swaa_ext.sliding_attention_paged(**args)
    buffer = torch.full((q.shape[0] + 2, q.shape[1] * q.shape[2] + 4), -7.0, dtype=dtype)
    out = buffer[:q.shape[0], 2:2 + q.shape[1] * q.shape[2]].view(q.shape[0], q.shape[1],
                                                                  q.shape[2])
    got = swaa_ext.sliding_attention_paged(**args, out=out)
    assert got is out
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert (buffer[q.shape[0]:] == -7).all() and (buffer[:, :2] == -7).all()
    got, lse = swaa_ext.sliding_attention_paged(**args, out=out, return_lse=True)
    assert lse.shape == (q.shape[1], q.shape[0]) and torch.isfinite(lse).all()
    with pytest.raises(ValueError, match="out must have q's shape"):
        swaa_ext.sliding_attention_paged(**args, out=out[1:])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_write_paged_cache(dtype):
    """Rows land at slot = page * page_size + row of both halves of a vLLM-style cache, padding
    slots (-1) are skipped, nothing else changes; then the op reads them back."""
    heads, dim, page_size, pages = 2, 8, 4, 6
    cache = torch.full((pages, heads, 2 * page_size, dim), float("nan"), dtype=dtype)
    k_cache, v_cache = cache[:, :, :page_size], cache[:, :, page_size:]  # vLLM's CPU layout
    key = torch.randn(5, heads, dim).to(dtype)
    value = torch.randn(5, heads, dim).to(dtype)
    slots = torch.tensor([9, 0, -1, 23, 10, 99])  # one more slot than tokens, as vLLM pads
    swaa_ext.write_paged_cache(key, value, k_cache, v_cache, slots)
    expected = torch.full_like(cache, float("nan"))
    for t, slot in enumerate(slots[:5].tolist()):
        if slot >= 0:
            expected[slot // page_size, :, slot % page_size] = key[t]
            expected[slot // page_size, :, page_size + slot % page_size] = value[t]
    torch.testing.assert_close(cache, expected, atol=0, rtol=0, equal_nan=True)
    swaa_ext.write_paged_cache(key, value, k_cache, v_cache, slots.to(torch.int32))
    torch.testing.assert_close(cache, expected, atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("change, error, match", [
    (dict(slots=lambda a: a + 100), ValueError, "is past the cache's 24 slots"),
    (dict(slots=lambda a: a.float()), TypeError, "slot_mapping must be an int64 or int32"),
    (dict(slots=lambda a: a[:2]), ValueError, "at least one slot per token"),
    (dict(value=lambda a: a.double()), ValueError, "key and value must have one shape and dtype"),
    (dict(key=lambda a: a.double(), value=lambda a: a.double()), TypeError, "must share one dtype"),
    (dict(key=lambda a: a[:, :1], value=lambda a: a[:, :1]), ValueError, "2 heads"),
])
def test_write_paged_cache_bad_input(change, error, match):
    cache = torch.zeros(6, 2, 8, 8)
    args = dict(key=torch.randn(3, 2, 8), value=torch.randn(3, 2, 8),
                k_cache=cache[:, :, :4], v_cache=cache[:, :, 4:], slots=torch.tensor([0, 5, 7]))
    for name, edit in change.items():
        args[name] = edit(args[name])
    with pytest.raises(error, match=match):
        swaa_ext.write_paged_cache(args["key"], args["value"], args["k_cache"], args["v_cache"],
                                   args["slots"])


def test_meta_tensors_give_the_shapes():
    """On the meta device (torch.compile's tracing) the op gives out and LSE shapes, no kernel."""
    args = {name: t.to("meta") if isinstance(t, torch.Tensor) else t
            for name, t in _arguments().items()}
    out, lse = swaa_ext.sliding_attention_paged(**args, return_lse=True)
    assert out.device.type == "meta" and out.shape == args["q"].shape
    assert lse.shape == (args["q"].shape[1], args["q"].shape[0])



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_opcheck(dtype):
    args = _arguments(dtype)
    op_args = (args["q"], args["k_cache"], args["v_cache"], args["block_table"],
               args["cu_seqlens_q"], args["seqused_k"], args["max_seqlen_q"],
               args["max_seqlen_k"], 8, 2, None, 1 / 8 ** 0.5)
    torch.library.opcheck(torch.ops.swaa_ext.fwd_paged, op_args)
    out = torch.empty_like(args["q"])
    lse = torch.empty(args["q"].shape[1], args["q"].shape[0])
    torch.library.opcheck(torch.ops.swaa_ext.fwd_paged_out, (*op_args, out, lse))
    torch.library.opcheck(torch.ops.swaa_ext.fwd_paged_out, (*op_args, out, None))


def test_opcheck_write_paged_cache():
    k_cache, v_cache = torch.zeros(6, 2, 4, 8), torch.zeros(6, 2, 4, 8)
    torch.library.opcheck(torch.ops.swaa_ext.write_paged_cache,
                          (torch.randn(3, 2, 8), torch.randn(3, 2, 8), k_cache, v_cache,
                           torch.tensor([0, 5, -1])))


# The amx layout (csrc/swaa/cpu/amx_tiles.h): bf16 pages stored as AMX tiles, read in place.
needs_amx = pytest.mark.skipif(not swaa_ext.cpu_has_amx(), reason="needs a CPU with AMX-BF16")


def amx_key_offset(t: int, e: int, dim: int) -> int:
    """Key (t, e) of a page in the amx layout, as the docs define it."""
    return t // 16 * 16 * dim + e // 2 * 32 + t % 16 * 2 + e % 2


def amx_value_offset(t: int, e: int, page_size: int) -> int:
    return e // 16 * 16 * page_size + t // 2 * 32 + e % 16 * 2 + t % 2


def amx_pages(k, v, cu_k, page_size, unread=None):
    """`paged`'s pages and block table, the rows stored by write_paged_cache(kv_layout="amx")
    into contiguous caches of NaN; pages in `unread` point at the NaN page 0."""
    _, _, table = paged(k, v, cu_k, page_size)
    lengths = (cu_k[1:] - cu_k[:-1]).tolist()
    slots = torch.cat([table[s, torch.arange(n) // page_size].long() * page_size
                       + torch.arange(n) % page_size for s, n in enumerate(lengths)])
    num_pages = sum(-(-n // page_size) for n in lengths) + 3
    shape = (num_pages, k.shape[1], page_size, k.shape[2])
    k_cache = torch.full(shape, float("nan"), dtype=k.dtype)
    v_cache = torch.full(shape, float("nan"), dtype=k.dtype)
    swaa_ext.write_paged_cache(k, v, k_cache, v_cache, slots, kv_layout="amx")
    for s, pages in enumerate(unread or []):
        table[s, sorted(pages)] = 0
    return k_cache, v_cache, table


@needs_amx
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("page_size", [32, 64, 128])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_amx_layout_matches_reference(case, page_size, head_dim):
    """Every work item on AMX straight from the pages (decode rows included), keys past a
    sequence's end and whole unread pages NaN: within bf16's tolerance of the reference."""
    packed = pack(case, head_dim, torch.bfloat16)
    caches = amx_pages(packed[1], packed[2], packed[4], page_size, unread_pages(case, page_size))
    (out, lse), expected = against_reference(case, packed, caches, kv_layout="amx")
    assert_close(out, expected[0], torch.bfloat16, "out vs reference")
    assert_close(lse, expected[1], torch.bfloat16, "lse vs reference")


@needs_amx
@pytest.mark.parametrize("full_from", [None, (0, 3000)], ids=["window", "fa_decode"])
def test_amx_layout_long_decode_split_across_threads(two_threads, full_from):
    case = VarlenCase(((1, 6000), (3, 2500)), 8, 2, window=1500, sinks=70, full_from=full_from)
    packed = pack(case, 64, torch.bfloat16)
    caches = amx_pages(packed[1], packed[2], packed[4], 32, unread_pages(case, 32))
    (out, lse), expected = against_reference(case, packed, caches, kv_layout="amx")
    assert_close(out, expected[0], torch.bfloat16, "out vs reference")
    assert_close(lse, expected[1], torch.float32, "lse vs reference")


@pytest.mark.parametrize("layout", ["rows", "amx"])
def test_running_max_climbing_far_between_tiles(layout):
    """Scores that climb along the keys by far more than the AMX softmax's rescale margin
    (kAmxRescaleMargin: the running max moves only past it) and fall back, a sawtooth: each
    row's max, sum and accumulator are rescaled many times, on both bf16 layouts (AMX where the
    CPU has it, else the float32 path)."""
    if layout == "amx" and not swaa_ext.cpu_has_amx():
        pytest.skip("needs a CPU with AMX-BF16")
    case = VarlenCase(((100, 300), (1, 400), (70, 70)), 4, 2, window=150, sinks=5)
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, 64, torch.bfloat16)
    direction = torch.randn(64, generator=torch.Generator().manual_seed(1)) / 2  # |d|^2 ~ 16
    position = torch.cat([torch.arange(lk) for _, lk in case.lens])
    ramp = (position % 97).double() / 2  # a key's score rises by 2 per key, then drops
    k = (k.double() + ramp[:, None, None] * direction).bfloat16()
    q = (q.double() + 2 * direction).bfloat16()
    packed = (q, k, v, cu_q, cu_k, max_q, max_k)
    pages = amx_pages if layout == "amx" else paged
    caches = pages(k, v, cu_k, 32, unread_pages(case, 32))
    (out, lse), expected = against_reference(case, packed, caches, kv_layout=layout)
    assert_close(out, expected[0], torch.bfloat16, "out vs reference")
    assert_close(lse, expected[1], torch.bfloat16, "lse vs reference")


@pytest.mark.parametrize("layout", ["rows", "amx"])
def test_scratch_kept_between_calls_fits_every_call(layout):
    """Each thread keeps the forward's scratch from one call to the next (a decode step calls
    the op per layer): calls that need more room (more rows, a wider head, longer tiles), then
    less, then another dtype, each give the reference's result."""
    if layout == "amx" and not swaa_ext.cpu_has_amx():
        pytest.skip("needs a CPU with AMX-BF16")
    decode = VarlenCase(((1, 300), (1, 40)), 4, 2, window=40, sinks=4)
    prompt = VarlenCase(((130, 130), (70, 90)), 8, 1, window=20, sinks=3)
    dtypes = [torch.bfloat16] if layout == "amx" else [torch.bfloat16, torch.float32]
    steps = [(decode, 32), (prompt, 64), (decode, 128), (prompt, 32), (decode, 32)]
    for dtype in dtypes:
        for case, head_dim in steps:
            packed = pack(case, head_dim, dtype)
            if layout == "amx":
                caches = amx_pages(packed[1], packed[2], packed[4], 32)
            else:
                caches = paged(packed[1], packed[2], packed[4], 32)
            (out, lse), expected = against_reference(case, packed, caches, kv_layout=layout)
            where = f"{case}, head_dim {head_dim}, {dtype}"
            assert_close(out, expected[0], dtype, f"out vs reference: {where}")
            assert_close(lse, expected[1], torch.float32, f"lse vs reference: {where}")


@needs_amx
def test_amx_layout_places_each_element():
    """write_paged_cache(kv_layout="amx") puts key / value (t, e) of a page at the offsets the
    docs give (and nothing else changes); padding slots are skipped."""
    heads, dim, page_size = 2, 64, 32
    k_cache = torch.full((3, heads, page_size, dim), float("nan"), dtype=torch.bfloat16)
    v_cache = torch.full_like(k_cache, float("nan"))
    key = torch.randn(4, heads, dim).bfloat16()
    value = torch.randn(4, heads, dim).bfloat16()
    slots = torch.tensor([33, 0, -1, 63])
    swaa_ext.write_paged_cache(key, value, k_cache, v_cache, slots, kv_layout="amx")
    expected_k = torch.full_like(k_cache, float("nan")).view(3, heads, -1)
    expected_v = torch.full_like(v_cache, float("nan")).view(3, heads, -1)
    for t, slot in enumerate(slots.tolist()):
        if slot < 0:
            continue
        page, row = divmod(slot, page_size)
        for e in range(dim):
            expected_k[page, :, amx_key_offset(row, e, dim)] = key[t, :, e]
            expected_v[page, :, amx_value_offset(row, e, page_size)] = value[t, :, e]
    torch.testing.assert_close(k_cache.view(3, heads, -1), expected_k, atol=0, rtol=0,
                               equal_nan=True)
    torch.testing.assert_close(v_cache.view(3, heads, -1), expected_v, atol=0, rtol=0,
                               equal_nan=True)


@needs_amx
@pytest.mark.parametrize("change, error, match", [
    (dict(dtype=torch.float32), TypeError, "kv_layout='amx' takes bfloat16"),
    (dict(page_size=16), ValueError, "page size that is a multiple of 32"),
    (dict(dim=48), ValueError, "head dim that is a multiple of 32"),
    (dict(halves=True), ValueError, "pages contiguous"),
    (dict(layout="cols"), ValueError, "kv_layout must be 'rows' or 'amx'"),
])
def test_amx_layout_bad_input(change, error, match):
    dtype, page_size, dim = change.get("dtype", torch.bfloat16), change.get("page_size", 32), \
        change.get("dim", 64)
    layout = change.get("layout", "amx")
    case = VarlenCase(((3, 40),), 2, 1, window=8, sinks=2)
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, dim, dtype)
    if change.get("halves"):
        k_cache, v_cache, table = paged(k, v, cu_k, page_size)  # halves of one (.., 2 D) cache
    else:
        k_cache, v_cache, table = (t.contiguous() if t.dim() == 4 else t
                                   for t in paged(k, v, cu_k, page_size))
    with pytest.raises(error, match=match):
        swaa_ext.sliding_attention_paged(q, k_cache, v_cache, table, cu_q, seqused(cu_k), max_q,
                                         max_k, 8, 2, kv_layout=layout)
    with pytest.raises(error, match=match):
        swaa_ext.write_paged_cache(k, v, k_cache, v_cache, torch.arange(k.shape[0]),
                                   kv_layout=layout)


@pytest.mark.slow  # a fresh process
def test_amx_layout_refused_without_amx():
    """With the kernels capped below AMX (SWAA_CPU_ISA=avx512, a fresh process), the amx
    layout is refused by name and bf16 rows-layout caches take the float32 path."""
    script = (
        "import torch, swaa_ext\n"
        "assert not swaa_ext.cpu_has_amx()\n"
        "c = torch.zeros(2, 1, 32, 64, dtype=torch.bfloat16)\n"
        "x = torch.zeros(1, 1, 64, dtype=torch.bfloat16)\n"
        "try:\n"
        "    swaa_ext.write_paged_cache(x, x, c, c.clone(), torch.tensor([0]), kv_layout='amx')\n"
        "except ValueError as e:\n"
        "    assert 'needs a CPU with AMX-BF16' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('not refused')\n"
        "print('ok')\n")
    env = dict(os.environ, SWAA_CPU_ISA="avx512")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@needs_amx
def test_opcheck_amx_layout():
    case = VarlenCase(((3, 40), (1, 70)), 2, 1, window=8, sinks=2)
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, 32, torch.bfloat16)
    k_cache, v_cache, table = amx_pages(k, v, cu_k, 32)
    op_args = (q, k_cache, v_cache, table, cu_q, seqused(cu_k), max_q, max_k, 8, 2, None,
               1 / 32 ** 0.5)
    torch.library.opcheck(torch.ops.swaa_ext.fwd_paged, (*op_args, "amx"))
    out = torch.empty_like(q)
    torch.library.opcheck(torch.ops.swaa_ext.fwd_paged_out, (*op_args, out, None, "amx"))
    torch.library.opcheck(torch.ops.swaa_ext.write_paged_cache,
                          (k, v, k_cache, v_cache, torch.arange(k.shape[0]), "amx"))
