"""Paged KV caches for the paged op's tests (tests/test_paged.py on the CPU kernels,
tests/test_emulated_paged.py on the emulated CUDA kernels, the GPU suite): sequences scattered
over shuffled pages of a vLLM-style cache, NaN wherever the op may not read."""

from __future__ import annotations

import torch
from backends import assert_close
from varlen_cases import VarlenCase, pack

from swaa_ext import reference

PAGE_SIZES = [16, 32, 64, 128, 48, 5]  # 48 and 5: pages that are not tiles (tiles narrow)

# The CUDA kernels' cases (emulated and on a GPU).
DTYPES = [torch.float16, torch.bfloat16]
HEAD_DIMS = [64, 128]
# Key tiles are 64 keys (forward) and 128 / 64 (decode, D = 64 / 128): pages below a tile, not
# dividing it, equal to it and above it.
KERNEL_PAGE_SIZES = [16, 5, 48, 64, 256]

TILE_CASES = [  # max_seqlen_q > 16: the tile kernel
    VarlenCase(((0, 0), (1, 1), (63, 63), (65, 65), (20, 150)), 2, 1, window=5, sinks=2),
    VarlenCase(((5, 5), (100, 130), (2, 3)), 2, 1, window=8, sinks=20),  # sinks past the window
    VarlenCase(((50, 50), (80, 100), (30, 30)), 2, 1, window=6, sinks=1, full_from=(0, 60, 1000)),
    VarlenCase(((32, 200), (0, 20)), 4, 4, window=17, sinks=3, slack=9),  # a chunk of a prompt
]
DECODE_CASES = [  # max_seqlen_q <= 16: the split-KV decode kernel
    VarlenCase(((1, 300), (1, 129), (2, 77)), 4, 2, window=40, sinks=4),
    VarlenCase(((1, 1000), (16, 700), (0, 0)), 8, 1, window=100, sinks=64,
               full_from=(0, 1000, 5)),  # FA decode on sequence 0: every key, several splits
    VarlenCase(((3, 200), (1, 64)), 2, 2, window=None),
]


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


def poison_unseen_keys(k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                       case: VarlenCase, page_size: int) -> None:
    """NaN into every key and value row that no query of its sequence sees, in the pages the
    table names: the CUDA kernels load whole key tiles, and must not read those rows (a NaN
    times a probability of 0 is NaN)."""
    for s, (lq, lk) in enumerate(case.lens):
        ff = case.full_from[s] if isinstance(case.full_from, tuple) else case.full_from
        window = lk if case.window is None else case.window
        for j in range(lk):
            seen = any(j <= p and (p - j < window or j < case.sinks or (ff is not None
                                                                         and p >= ff))
                       for p in range(lk - lq, lk))
            if not seen:
                page = int(table[s, j // page_size])
                k_cache[page, :, j % page_size] = float("nan")
                v_cache[page, :, j % page_size] = float("nan")


def check_paged(paged_op, case: VarlenCase, head_dim: int, dtype: torch.dtype, page_size: int,
                device: str = "cpu", poison: bool = True, seed: int = 0,
                varlen_op=None) -> None:
    """`paged_op` (swaa_ext's or the emulated sliding_attention_paged) on `case` scattered over
    pages of `page_size`, against the float64 reference on the packed sequences: out and LSE.
    NaN fills every slot past a sequence's keys, every page no query reads and (`poison`) every
    key row no query sees, so reading any of them fails the test. With `varlen_op` (the same
    backend's varlen op), out and LSE must also equal its result on the packed K/V bit for bit:
    the same kernels, only the loads differ."""
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, head_dim, dtype, seed=seed)
    k_cache, v_cache, table = paged(k, v, cu_k, page_size, unread_pages(case, page_size), seed)
    if poison:
        poison_unseen_keys(k_cache, v_cache, table, case, page_size)
    ff = case.full_from_arg(device)
    to = lambda t: t.to(device)  # noqa: E731
    out, lse = paged_op(to(q), to(k_cache), to(v_cache), to(table), to(cu_q), to(seqused(cu_k)),
                        max_q, max_k, case.window, case.sinks, full_from=ff, return_lse=True)
    assert out.shape == q.shape and out.dtype == dtype and out.device.type == device
    assert lse.shape == (case.heads_q, q.shape[0]) and lse.dtype == torch.float32
    expected = reference.sliding_attention_varlen(q.double(), k.double(), v.double(), cu_q, cu_k,
                                                  max_q, max_k, case.window, case.sinks,
                                                  full_from=case.full_from_arg("cpu"),
                                                  return_lse=True)
    assert_close(out, expected[0], dtype, f"out vs reference ({case}, page {page_size})")
    assert_close(lse, expected[1], dtype, f"lse vs reference ({case}, page {page_size})")
    if varlen_op is not None:
        packed_out, packed_lse = varlen_op(to(q), to(k), to(v), to(cu_q), to(cu_k), max_q, max_k,
                                           case.window, case.sinks, full_from=ff,
                                           return_lse=True)
        assert torch.equal(out, packed_out), f"out differs from the varlen op's ({case})"
        assert torch.equal(lse, packed_lse), f"lse differs from the varlen op's ({case})"
