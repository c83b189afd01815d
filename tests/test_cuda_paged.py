"""swaa_ext.sliding_attention_paged on a real GPU: the tile and split-KV decode kernels reading K/V
through the block table, against the float64 reference and bit for bit against the varlen op on
the packed K/V; vLLM-sized pages and contexts; a decode step captured in a CUDA graph. Skipped
without a GPU (or a build without the CUDA kernels)."""

from __future__ import annotations

import pytest
import torch
from paged_cases import (DECODE_CASES, DTYPES, HEAD_DIMS, TILE_CASES, check_paged, paged,
                         seqused)
from varlen_cases import VarlenCase, pack

import swaa_ext

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        not torch._C._dispatch_has_kernel_for_dispatch_key("swaa_ext::fwd_paged", "CUDA"),
        reason="swaa_ext._C was built without the CUDA kernels",
    ),
]

# vLLM-sized: long contexts in 16- and 32-key blocks, prompts and decode steps in one batch.
GPU_CASES = TILE_CASES + DECODE_CASES + [
    VarlenCase(((1, 8000), (1, 3000), (1, 17), (0, 0)), 32, 8, window=1000, sinks=64,
               full_from=(0, 8000, 5, 0)),
    VarlenCase(((2000, 2000), (300, 5000)), 8, 2, window=256, sinks=64),
    VarlenCase(((16, 4096),) * 12, 8, 8, window=None),
]


@pytest.mark.parametrize("page_size", [16, 32, 48])  # vLLM's usual, and one off the tiles
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_paged_matches_reference_and_varlen(case, dtype, head_dim, page_size):
    check_paged(swaa_ext.sliding_attention_paged, case, head_dim, dtype, page_size,
                device="cuda", poison=sum(b for _, b in case.lens) <= 2000,
                varlen_op=swaa_ext.sliding_attention_varlen)


def test_agrees_with_its_emulated_run():
    emulated = pytest.importorskip("swaa_ext.emulated")
    case = DECODE_CASES[1]
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, 64, torch.bfloat16)
    k_cache, v_cache, table = paged(k, v, cu_k, 16)
    args = (q, k_cache, v_cache, table, cu_q, seqused(cu_k), max_q, max_k, case.window,
            case.sinks)
    ff = case.full_from_arg("cpu")
    expected = emulated.sliding_attention_paged(*args, full_from=ff)
    got = swaa_ext.sliding_attention_paged(*(t.cuda() if isinstance(t, torch.Tensor) else t
                                             for t in args), full_from=ff.cuda())
    torch.testing.assert_close(got.cpu(), expected, atol=2e-2, rtol=0)


def test_decode_step_replays_in_a_cuda_graph():
    """No host sync and no allocation outside the caching allocator: a decode step captures into
    a CUDA graph and its replay gives the eager result, also after the cache changed."""
    case = VarlenCase(((1, 3000), (1, 700), (1, 64)), 16, 4, window=512, sinks=64)
    q, k, v, cu_q, cu_k, max_q, max_k = (t.cuda() if isinstance(t, torch.Tensor) else t
                                         for t in pack(case, 128, torch.bfloat16))
    k_cache, v_cache, table = (t.cuda() for t in paged(k.cpu(), v.cpu(), cu_k.cpu(), 16))
    used = seqused(cu_k)
    out = torch.empty_like(q)

    def step():
        swaa_ext.sliding_attention_paged(q, k_cache, v_cache, table, cu_q, used, max_q, max_k,
                                         case.window, case.sinks, out=out)

    step()  # warm the allocator and the SM count
    eager = out.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    out.zero_()
    graph.replay()
    torch.testing.assert_close(out, eager, atol=0, rtol=0)
    q.normal_()
    step()
    eager = out.clone()
    out.zero_()
    graph.replay()
    torch.testing.assert_close(out, eager, atol=0, rtol=0)
