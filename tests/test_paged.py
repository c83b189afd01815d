"""swaa_ext.sliding_attention_paged (CPU): the keys and values read in place from a paged cache
through a block table, as vLLM lays them out, give the float64 reference's out and LSE for the
same sequences packed; pages the rule never reads may hold anything (NaN here); bad input names
the argument; the op is a real custom op (opcheck)."""

from __future__ import annotations

import pytest
import torch
from backends import assert_close
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
PAGE_SIZES = [16, 32, 64, 128, 48, 5]  # 48 and 5: pages that are not tiles (tiles narrow)


def paged(k: torch.Tensor, v: torch.Tensor, cu_k: torch.Tensor, page_size: int,
          unread: list[set[int]] | None = None, seed: int = 0):
    """k, v (total_k, Hkv, D) scattered over shuffled pages of one vLLM-style
    (num_pages, Hkv, page_size, 2 * D) cache whose other slots hold NaN. Pages listed in
    `unread[s]` point at a page of NaN instead (vLLM's null block after freeing). Returns the
    key and value halves and the block table (int32)."""
    lengths = (cu_k[1:] - cu_k[:-1]).tolist()
    needed = [-(-n // page_size) for n in lengths]
    heads, dim = k.shape[1], k.shape[2]
    num_pages = sum(needed) + 3  # page 0: the NaN page; two spare
    cache = torch.full((num_pages, heads, page_size, 2 * dim), float("nan"), dtype=k.dtype)
    order = torch.randperm(num_pages - 1, generator=torch.Generator().manual_seed(seed)) + 1
    table = torch.zeros(len(lengths), max(needed, default=0) + 1, dtype=torch.int32)
    next_page = 0
    for s, n in enumerate(lengths):
        for i in range(needed[s]):
            page = int(order[next_page])
            next_page += 1
            rows = slice(i * page_size, min((i + 1) * page_size, n))
            start = int(cu_k[s])
            chunk = slice(start + rows.start, start + rows.stop)
            cache[page, :, : rows.stop - rows.start, :dim] = k[chunk].transpose(0, 1)
            cache[page, :, : rows.stop - rows.start, dim:] = v[chunk].transpose(0, 1)
            table[s, i] = 0 if unread and i in unread[s] else page
    return cache[..., :dim], cache[..., dim:], table


def unread_pages(case: VarlenCase, page_size: int) -> list[set[int]]:
    """Per sequence, the pages holding no key that any of its queries may see (reference rule)."""
    out = []
    for s, (lq, lk) in enumerate(case.lens):
        ff = case.full_from[s] if isinstance(case.full_from, tuple) else case.full_from
        window = lk if case.window is None else case.window
        seen = set()
        for i in range(lq):
            p = lk - lq + i
            for j in range(p + 1):
                if p - j < window or j < case.sinks or (ff is not None and p >= ff):
                    seen.add(j // page_size)
        out.append({page for page in range(-(-lk // page_size)) if page not in seen})
    return out


def seqused(cu_k: torch.Tensor) -> torch.Tensor:
    return (cu_k[1:] - cu_k[:-1]).to(torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
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
    assert lse.shape == (case.heads_q, q.shape[0]) and lse.dtype == dtype
    expected = reference.sliding_attention_varlen(q.double(), k.double(), v.double(), cu_q, cu_k,
                                                  max_q, max_k, case.window, case.sinks,
                                                  full_from=ff, return_lse=True)
    assert_close(out, expected[0], dtype, "out vs reference")
    assert_close(lse, expected[1], dtype, "lse vs reference")


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


def test_half_precision_cache_is_refused():
    args = _arguments()
    for name in ("q", "k_cache", "v_cache"):
        args[name] = args[name].to(torch.bfloat16)
    with pytest.raises(TypeError, match="float32 or float64.*sliding_attention_varlen"):
        swaa_ext.sliding_attention_paged(**args)


def test_other_devices_are_refused():
    args = _arguments()
    args["q"] = args["q"].to("meta")
    with pytest.raises(NotImplementedError, match="CPU only"):
        swaa_ext.sliding_attention_paged(**args)


def test_opcheck():
    args = _arguments()
    torch.library.opcheck(torch.ops.swaa_ext.fwd_paged, (
        args["q"], args["k_cache"], args["v_cache"], args["block_table"], args["cu_seqlens_q"],
        args["seqused_k"], args["max_seqlen_q"], args["max_seqlen_k"], 8, 2, None,
        1 / 8 ** 0.5))
