"""Sample inputs shared by the CUDA kernels' tests (emulated and real GPU): small shapes that are
ragged around the kernels' tiles (forward: 128 query rows, 32 per warp as two 16-row m-tiles; dQ
and decode: 64 query rows; forward and dQ: 64 keys for head dim 64, 32 for head dim 128; decode:
128 / 64 keys; dK/dV: 128 keys, 64 / 32 query rows), and the same-precision PyTorch attention that
sets each case's error budget, forward and backward. The Case type is tests/cases.py's."""

from __future__ import annotations

import math

import torch

from cases import Case
from swaa_ext import reference

# What the CUDA kernel is instantiated for (csrc/swaa/cuda/generate_instantiations.py).
DTYPES = [torch.float16, torch.bfloat16]
HEAD_DIMS = [64, 128]

CASES = [
    Case(1, 1, window=1),                                   # one row, one key
    Case(7, 7, window=2, sinks=1),                          # smaller than every tile
    Case(63, 63, window=16, sinks=3),                       # window inside one key tile
    Case(65, 65, window=40),                                # one row past the query tile
    Case(130, 130, window=70, sinks=5),                     # window spans 2-3 key tiles
    Case(129, 129, window=48, sinks=2),                     # one row past the 128-row query block
    Case(250, 300, window=20, sinks=4, full_from=270),      # 2 query blocks; full_from inside a
                                                            # warp's second m-tile (row 220)
    Case(70, 70, window=1),                                 # each row sees only itself
    Case(1, 150, window=20, sinks=4),                       # decode: Lq = 1, long Lk
    Case(1, 150, window=None),                              # decode with full attention
    Case(33, 100, window=50, sinks=2),                      # Lq < Lk, bottom-right aligned
    Case(40, 129, window=33, sinks=70),                     # sinks reach past the window start
    Case(97, 97, window=500, sinks=3),                      # window >= Lk: full causal
    Case(97, 97, window=None),                              # no window
    Case(80, 80, window=24, sinks=37, heads_q=4, heads_kv=2),   # GQA 2, sinks not a tile multiple
    Case(66, 90, window=17, sinks=1, heads_q=4, heads_kv=1),    # GQA 4 (MQA)
    Case(100, 100, window=8, sinks=2, batch=3, full_from=(0, 50, 1000)),  # full_from per row
    Case(50, 120, window=12, full_from=100),                # FA decode boundary inside the queries
    Case(70, 95, window=30, sinks=9, heads_q=4, heads_kv=2, batch=2, transposed=True),  # strided
]


# The backward's own edges on top of CASES.
BACKWARD_CASES = [
    Case(1, 300, window=20),                                # keys 0-279 are seen by no query
    Case(1, 700, window=40, sinks=3, heads_q=4, heads_kv=1),  # decode row, long Lk, MQA
    Case(90, 200, window=16, sinks=45),                     # sinks past the window start, ragged
    Case(100, 130, window=2, sinks=1),                      # window 2 across tiles
    Case(80, 150, window=10, batch=2, full_from=(100, 140)),  # full_from mid-sequence per row
    Case(40, 60, window=12, sinks=3, heads_q=8, heads_kv=1),  # GQA 8
    Case(70, 70, window=30, heads_q=8, heads_kv=2),         # GQA 4
]


# The split-KV decode kernel's own edges (len_q <= 16, csrc/swaa/cuda/decode_plan.h): long key
# ranges, the query heads of a KV head packed into one tile (GQA 1/4/8; 4 x 16 = one 64-row
# group, 8 x 16 = two), ragged windows and sinks, full_from before, inside and after the queries.
DECODE_CASES = [
    Case(1, 8192, window=256, sinks=4, heads_q=8, heads_kv=1),       # GQA 8, long Lk
    Case(1, 8192, window=None, heads_q=4, heads_kv=1),               # full attention over 8k keys
    Case(16, 2000, window=100, sinks=16, heads_q=8, heads_kv=2),     # 4 x 16 rows: one group
    Case(16, 1000, window=40, sinks=3, heads_q=8, heads_kv=1),       # 8 x 16 rows: two groups
    Case(5, 777, window=33, sinks=70),                               # sinks past the window start
    Case(3, 3000, window=64, sinks=4, heads_q=4, heads_kv=1, batch=2,
         full_from=(2998, 3500)),                                    # boundary inside / after
    Case(2, 500, window=20, sinks=2, batch=2, full_from=(0, 10**6)),  # before every query / never
    Case(9, 9, window=4, sinks=1),                                   # a whole short prompt
    Case(12, 300, window=None, heads_q=4, heads_kv=4, transposed=True),  # strided, no window
    Case(1, 150, window=20, sinks=4, batch=3),                       # batch rows
]


def make_inputs(case: Case, dtype: torch.dtype, head_dim: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def rand(heads: int, length: int) -> torch.Tensor:
        if case.transposed:  # (B, L, H, D) storage, viewed as (B, H, L, D)
            x = torch.randn(case.batch, length, heads, head_dim, generator=gen)
            return x.to(dtype).transpose(1, 2)
        return torch.randn(case.batch, heads, length, head_dim, generator=gen).to(dtype)

    q, k, v = rand(case.heads_q, case.len_q), rand(case.heads_kv, case.len_k), rand(case.heads_kv, case.len_k)
    return q, k, v, case.full_from_arg()


def same_precision_attention(q, k, v, window, sinks, full_from, return_lse=False):
    """Dense masked attention in the inputs' own precision: the error budget a same-precision
    PyTorch implementation needs, against which the kernel's error is judged."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    mask = reference.visible(q.shape[2], k.shape[2], window, sinks, full_from, device=q.device)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(dim=-1) @ v
    return (out, scores.float().logsumexp(dim=-1)) if return_lse else out


def max_error(out: torch.Tensor, q, k, v, window, sinks, full_from) -> tuple[float, float]:
    """(kernel error, same-precision PyTorch error), both against the float64 reference."""
    ref64 = reference.sliding_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(),
                                        window, sinks, full_from=full_from)
    pt = same_precision_attention(q, k, v, window, sinks, full_from)
    err = (out.double().cpu() - ref64).abs().max().item()
    pt_err = (pt.double().cpu() - ref64).abs().max().item()
    return err, pt_err


def assert_matches_reference(out: torch.Tensor, lse: torch.Tensor, q, k, v, window, sinks,
                             full_from) -> None:
    """A forward's (out, lse) against the float64 reference: out within FlashAttention's criterion
    (at most twice the same-precision computation's error), the LSE to float32 rounding (it
    accumulates in float32 from exact products), and the same rows finite."""
    args = (q, k, v, window, sinks)
    ref_out, ref_lse = reference.sliding_attention(*args, full_from=full_from, return_lse=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    err, pt_err = max_error(out, *args, full_from)
    assert err <= 2 * pt_err + 1e-5, f"max error {err:.3g} vs same-precision PyTorch {pt_err:.3g}"
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-4)
    assert torch.equal(out.isfinite(), ref_out.isfinite())


def gradients(attention, q, k, v, window, sinks, full_from, *, with_lse: bool, seed: int = 1):
    """(dq, dk, dv) of `attention(q, k, v, window, sinks, full_from=..., return_lse=True)` for a
    random dO (and a random dLSE when `with_lse`), the same for every implementation and dtype."""
    gen = torch.Generator().manual_seed(seed)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out, lse = attention(*leaves, window, sinks, full_from=full_from, return_lse=True)
    d_o = torch.randn(out.shape, generator=gen).to(out.dtype).to(out.device)
    outputs, grads = [out], [d_o]
    if with_lse:
        outputs.append(lse)
        grads.append(torch.randn(lse.shape, generator=gen).to(lse.dtype).to(lse.device))
    return torch.autograd.grad(outputs, leaves, grads)


def _same_precision(q, k, v, window, sinks, *, full_from, return_lse):
    return same_precision_attention(q, k, v, window, sinks, full_from, return_lse=True)


def assert_gradients_match(grads, q, k, v, window, sinks, full_from, *, with_lse: bool):
    """FlashAttention's criterion, per gradient (dq, dk, dv) against float64: at most twice the
    error of the same-precision PyTorch computation, plus one unit in the last place at the
    gradient's largest magnitude (at least 1e-4). Without that unit, a case where PyTorch's
    rounding lands within a fraction of an ulp of the truth fails a kernel whose result is one
    ulp off: the kernel rounds dS to 16 bits before its dS^T Q product."""
    args = (window, sinks, full_from)
    ref = gradients(reference.sliding_attention, q.double().cpu(), k.double().cpu(),
                    v.double().cpu(), *args, with_lse=with_lse)
    pt = gradients(_same_precision, q, k, v, *args, with_lse=with_lse)
    for name, g, p, r in zip(("dq", "dk", "dv"), grads, pt, ref):
        err = (g.double().cpu() - r).abs().max().item()
        pt_err = (p.double().cpu() - r).abs().max().item()
        ulp = torch.finfo(g.dtype).eps * r.abs().max().item()
        assert err <= 2 * pt_err + max(1e-4, ulp), (
            f"{name}: max error {err:.3g} vs PyTorch {pt_err:.3g} (one ulp: {ulp:.3g})")


def check_decode_on_varlen(varlen_op, device: str, lens_q: list[int], lens_k: list[int],
                           dtype: torch.dtype = torch.float16) -> None:
    """vLLM-style decode batches: a few queries per sequence (0 for some: skipped), ragged key
    lengths, window, sinks and a per-sequence full_from, through `varlen_op` (the varlen op of a
    backend) on `device`, each sequence against the float64 reference alone."""
    gen = torch.Generator().manual_seed(3)
    heads_q, heads_kv, head_dim = 8, 2, 64
    q = torch.randn(sum(lens_q), heads_q, head_dim, generator=gen).to(dtype)
    k = torch.randn(sum(lens_k), heads_kv, head_dim, generator=gen).to(dtype)
    v = torch.randn(sum(lens_k), heads_kv, head_dim, generator=gen).to(dtype)
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0)], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0)], dtype=torch.int32)
    # Per sequence: never, inside the prompt, before everything, just before the queries, ...
    full_from = torch.tensor([(10**6, 30, 0, lk - 10)[b % 4] for b, lk in enumerate(lens_k)])
    out, lse = varlen_op(q.to(device), k.to(device), v.to(device), cu_q.to(device),
                         cu_k.to(device), max(lens_q), max(lens_k), window=50, sinks=3,
                         full_from=full_from.to(device), return_lse=True)
    out, lse = out.cpu(), lse.cpu()
    for b, (lq, lk) in enumerate(zip(lens_q, lens_k)):
        if lq == 0:
            continue
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        qb, kb, vb = (t[None].transpose(1, 2) for t in (q[rows], k[keys], v[keys]))
        ref, ref_lse = reference.sliding_attention(qb.double(), kb.double(), vb.double(), 50, 3,
                                                   full_from=int(full_from[b]), return_lse=True)
        got = out[rows][None].transpose(1, 2)
        atol = 2e-3 if dtype == torch.float16 else 1.6e-2  # bf16 keeps 3 fewer mantissa bits
        torch.testing.assert_close(got.double(), ref, atol=atol, rtol=0)
        torch.testing.assert_close(lse[:, rows][None].double(), ref_lse, atol=1e-3, rtol=1e-4)


def check_rows_far_apart(attention, device: str) -> None:
    """The tile loader addresses a row in 32 bits (row index x stride in bytes): K and V views
    whose two rows lie 2^30 fp16 elements (2 GiB) apart must be copied by the boundary, not read
    at a wrapped address. Forward and backward equal the same inputs made contiguous, exactly.
    The buffers are torch.empty: only the pages the rows touch are ever written."""
    d, stride = 64, 1 << 30
    q = torch.randn(1, 1, 2, d, device=device, dtype=torch.float16, requires_grad=True)
    rows = torch.randn(2, 2, d, device=device, dtype=torch.float16)
    k, v = [torch.empty(stride + d, device=device, dtype=torch.float16)
            .as_strided((1, 1, 2, d), (0, 0, stride, 1)) for _ in range(2)]
    with torch.no_grad():
        k.copy_(rows[0].view(1, 1, 2, d))
        v.copy_(rows[1].view(1, 1, 2, d))
    assert k.stride(2) * k.element_size() >= 1 << 31
    k.requires_grad_(), v.requires_grad_()
    out = attention(q, k, v, window=2, sinks=0)
    dense = [t.detach().contiguous().requires_grad_() for t in (q, k, v)]
    expected = attention(*dense, window=2, sinks=0)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    for got, want in zip((q, k, v), dense):
        torch.testing.assert_close(got.grad, want.grad, atol=0, rtol=0)
