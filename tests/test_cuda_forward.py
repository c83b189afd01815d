"""The CUDA forward kernel on a real GPU: against the float64 reference, SDPA and FlexAttention,
and against its own emulated run. Skipped without a GPU (or a build without the CUDA kernels)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cuda_kernel_cases import (CASES, DECODE_CASES, DTYPES, HEAD_DIMS, Case,
                               check_decode_on_varlen, check_rows_far_apart, make_inputs,
                               max_error)

import swaa_ext
from swaa_ext import reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        not torch._C._dispatch_has_kernel_for_dispatch_key("swaa_ext::fwd", "CUDA"),
        reason="swaa_ext._C was built without the CUDA kernels",
    ),
]

# Larger than the emulated cases: many key tiles per query block, on both sides of every edge; the
# decode kernel's cases, and its launch shape of the report (B=1, 32 / 8 heads) at 32k keys.
GPU_CASES = CASES + DECODE_CASES + [
    Case(1, 32768, window=4096, sinks=64, heads_q=32, heads_kv=8),
    Case(1, 32768, window=None, heads_q=32, heads_kv=8),
    Case(16, 32768, window=2048, sinks=4, heads_q=32, heads_kv=8, full_from=32760),
    Case(1025, 1025, window=256, sinks=64, heads_q=8, heads_kv=2),
    Case(97, 4099, window=1000, sinks=33, heads_q=4, heads_kv=4, batch=2),
    Case(2048, 2048, window=None, heads_q=4, heads_kv=1),
    Case(777, 1500, window=129, sinks=5, batch=2, full_from=(1200, 900)),
    # Large-batch serving: 40 x 8 KV heads fill the GPU, so the plan gives one split per row
    # group, each walking every key tile alone.
    Case(1, 4096, window=None, heads_q=8, heads_kv=8, batch=40),
    Case(4, 4096, window=512, sinks=4, heads_q=8, heads_kv=8, batch=40),
]


def to_cuda(q, k, v, full_from):
    if isinstance(full_from, torch.Tensor):
        full_from = full_from.cuda()
    return q.cuda(), k.cuda(), v.cuda(), full_from


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_forward_matches_reference(case: Case, dtype: torch.dtype, head_dim: int) -> None:
    q, k, v, full_from = to_cuda(*make_inputs(case, dtype, head_dim))
    args = (q, k, v, case.window, case.sinks)
    out, lse = swaa_ext.sliding_attention(*args, full_from=full_from, return_lse=True)
    assert out.device == q.device and out.dtype == dtype and lse.dtype == torch.float32
    err, pt_err = max_error(out, *args, full_from)
    assert err <= 2 * pt_err + 1e-5, f"max error {err:.3g} vs same-precision PyTorch {pt_err:.3g}"
    _, ref_lse = reference.sliding_attention(*args, full_from=full_from, return_lse=True)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_on_varlen_batches_with_empty_sequences(dtype: torch.dtype) -> None:
    """The path vLLM generation takes: the varlen op with 1-16 queries per sequence, some with
    none, ragged key lengths, per-sequence full_from, through the decode kernel."""
    check_decode_on_varlen(swaa_ext.sliding_attention_varlen, "cuda", [1, 4, 0, 16, 7, 0, 1],
                           [900, 37, 12, 400, 3000, 5, 4096], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_sdpa_and_flex_attention(dtype: torch.dtype) -> None:
    """Peers as oracles: SDPA with the dense mask, FlexAttention with the same rule as mask_mod."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    case = Case(1000, 1300, window=200, sinks=16, heads_q=8, heads_kv=2, batch=2)
    q, k, v, _ = to_cuda(*make_inputs(case, dtype, 128))
    out = swaa_ext.sliding_attention(q, k, v, case.window, case.sinks)
    mask = reference.visible(case.len_q, case.len_k, case.window, case.sinks, device="cuda")
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    offset = case.len_k - case.len_q

    def mask_mod(b, h, i, j):
        p = i + offset
        return (j <= p) & ((p - j < case.window) | (j < case.sinks))

    block_mask = create_block_mask(mask_mod, None, None, case.len_q, case.len_k, device="cuda")
    flex = torch.compile(flex_attention)(q, k, v, block_mask=block_mask, enable_gqa=True)
    ref = reference.sliding_attention(q, k, v, case.window, case.sinks).double()
    for name, peer in (("sdpa", sdpa), ("flex_attention", flex)):
        peer_err = (peer.double() - ref).abs().max().item()
        err = (out.double() - ref).abs().max().item()
        assert err <= 2 * peer_err + 1e-5, f"{name}: ours {err:.3g}, peer {peer_err:.3g}"


@pytest.mark.parametrize("case", [Case(130, 200, window=70, sinks=5, heads_q=4, heads_kv=2),
                                  Case(4, 3000, window=300, sinks=5, heads_q=8, heads_kv=2)],
                         ids=["tiles", "decode"])
def test_agrees_with_its_emulated_run(case: Case) -> None:
    """Same source, two machines: the GPU and the SIMT emulator differ only by exp2 rounding (and,
    for the decode kernel, by the split count: the emulator plans for 108 SMs)."""
    emulated = pytest.importorskip("swaa_ext.emulated")
    q, k, v, _ = make_inputs(case, torch.bfloat16, 64)
    args = (case.window, case.sinks)
    expected, expected_lse = emulated.sliding_attention(q, k, v, *args, return_lse=True)
    out, lse = swaa_ext.sliding_attention(q.cuda(), k.cuda(), v.cuda(), *args, return_lse=True)
    torch.testing.assert_close(out.cpu(), expected, atol=1e-2, rtol=0)
    torch.testing.assert_close(lse.cpu(), expected_lse, atol=1e-4, rtol=1e-5)


def test_rows_more_than_2_gib_apart() -> None:
    check_rows_far_apart(swaa_ext.sliding_attention, "cuda")


@pytest.mark.parametrize(
    ("shape", "dtype", "error", "match"),
    [((1, 2, 8, 96), torch.float16, ValueError, "head_dim must be 64 or 128"),
     ((1, 2, 8, 64), torch.float32, TypeError, "float16 or bfloat16")],
    ids=["head_dim_96", "float32"],
)
def test_bad_input_raises(shape, dtype, error, match) -> None:
    q = torch.randn(shape, device="cuda", dtype=dtype)
    with pytest.raises(error, match=match):
        swaa_ext.sliding_attention(q, q, q, window=4)


def test_opcheck() -> None:
    q, k, v, full_from = to_cuda(*make_inputs(Case(70, 90, window=9, sinks=3, batch=2,
                                                   full_from=(80, 30)), torch.float16, 64))
    torch.library.opcheck(torch.ops.swaa_ext.fwd.default, (q, k, v, 9, 3, full_from, 0.125))
