"""Packed variable-length batches for the varlen op's tests (CPU, emulated and CUDA): the cases,
the packing, and the one check every backend runs: varlen against each sequence alone through the
dense op of the same backend, and against the float64 reference, for out, LSE and dq/dk/dv."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from types import SimpleNamespace

import torch

from backends import assert_close
from cases import TOLERANCE
from swaa_ext import reference


@dataclass(frozen=True)
class VarlenCase:
    lens: tuple[tuple[int, int], ...]  # (len_q, len_k) per sequence
    heads_q: int
    heads_kv: int
    window: int | None
    sinks: int = 0
    full_from: tuple[int, ...] | int | None = None  # tuple = one value per sequence
    strided: bool = False  # q/k/v as (total, H, D) views of (H, total, D) storage
    slack: int = 0         # max_seqlen_q/k this much larger than the longest sequence

    def __str__(self) -> str:
        lens = "_".join(f"{a}x{b}" for a, b in self.lens)
        return (f"L{lens}-H{self.heads_q}/{self.heads_kv}-w{self.window}-s{self.sinks}"
                f"-ff{self.full_from}{'-strided' if self.strided else ''}"
                f"{f'-slack{self.slack}' if self.slack else ''}")

    def full_from_arg(self, device) -> torch.Tensor | int | None:
        if isinstance(self.full_from, tuple):
            return torch.tensor(self.full_from, dtype=torch.int64, device=device)
        return self.full_from


def cu_seqlens(lengths, device="cpu") -> torch.Tensor:
    return torch.tensor([0, *accumulate(lengths)], dtype=torch.int32, device=device)


def pack(case: VarlenCase, head_dim: int, dtype: torch.dtype, device="cpu", seed: int = 0):
    """q (total_q, Hq, D), k, v (total_k, Hkv, D), cu_seqlens_q/k, max_seqlen_q/k."""
    gen = torch.Generator().manual_seed(seed)
    lq = [a for a, _ in case.lens]
    lk = [b for _, b in case.lens]

    def rand(total: int, heads: int) -> torch.Tensor:
        shape = (heads, total, head_dim) if case.strided else (total, heads, head_dim)
        t = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        return t.transpose(0, 1) if case.strided else t

    q = rand(sum(lq), case.heads_q)
    k, v = rand(sum(lk), case.heads_kv), rand(sum(lk), case.heads_kv)
    return (q, k, v, cu_seqlens(lq, device), cu_seqlens(lk, device),
            max(lq, default=0) + case.slack, max(lk, default=0) + case.slack)


def run_with_grads(varlen_fn, q, k, v, cu_q, cu_k, max_q, max_k, case, full_from, seed=1):
    """(out, lse, dq, dk, dv) for a random dO and dLSE (the same for every implementation)."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out, lse = varlen_fn(*leaves, cu_q, cu_k, max_q, max_k, case.window, case.sinks,
                         full_from=full_from, return_lse=True)
    gen = torch.Generator().manual_seed(seed)
    d_o = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype).to(out.device)
    d_lse = torch.randn(lse.shape, generator=gen, dtype=torch.float64).to(lse.dtype)
    grads = torch.autograd.grad([out, lse], leaves, [d_o, d_lse.to(lse.device)],
                                allow_unused=True, materialize_grads=True)
    return (out, lse, *grads), (d_o, d_lse)


def heads_first(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Rows [a, b) of a (total, H, D) tensor as (1, H, b - a, D)."""
    return t[a:b].transpose(0, 1).unsqueeze(0)


def check_varlen(fns: SimpleNamespace, case: VarlenCase, head_dim: int, dtype: torch.dtype,
                 device="cpu", grad_tol: float = 1.0) -> None:
    """`fns.varlen` against each sequence through `fns.dense` (same backend) and against the
    float64 reference: out, LSE (Hq, total_q), dq, dk, dv. Keys of sequences without queries
    get zero gradients. `grad_tol` widens the reference tolerance of the gradients."""
    q, k, v, cu_q, cu_k, max_q, max_k = pack(case, head_dim, dtype, device)
    ff = case.full_from_arg(device)
    (out, lse, dq, dk, dv), (d_o, d_lse) = run_with_grads(fns.varlen, q, k, v, cu_q, cu_k, max_q,
                                                          max_k, case, ff)
    assert out.shape == q.shape and out.dtype == dtype
    lse_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert lse.shape == (case.heads_q, q.shape[0]) and lse.dtype == lse_dtype
    for g, t in zip((dq, dk, dv), (q, k, v)):
        assert g.shape == t.shape and g.dtype == dtype

    # The oracle: float64 from the same (rounded) inputs, the same dO / dLSE.
    ff_cpu = ff.cpu() if isinstance(ff, torch.Tensor) else ff
    ref, _ = run_with_grads(reference.sliding_attention_varlen, q.double().cpu(),
                            k.double().cpu(), v.double().cpu(), cu_q.cpu(), cu_k.cpu(), max_q,
                            max_k, case, ff_cpu)
    for name, a, e in zip(("out", "lse", "dq", "dk", "dv"), (out, lse, dq, dk, dv), ref):
        if name.startswith("d") and grad_tol != 1.0:
            e_scale = max(1.0, e.abs().max().item()) if e.numel() else 1.0
            torch.testing.assert_close(a.detach().double().cpu(), e.double(),
                                       atol=grad_tol * e_scale * TOLERANCE[dtype], rtol=0,
                                       msg=lambda m, n=name: f"{n} vs reference: {m}")
        else:
            assert_close(a, e, dtype, f"{name} vs reference")

    # Each sequence alone through the dense op of the same backend.
    starts_q, starts_k = cu_q.tolist(), cu_k.tolist()
    for s, (lq, lk) in enumerate(case.lens):
        q0, q1, k0, k1 = starts_q[s], starts_q[s + 1], starts_k[s], starts_k[s + 1]
        if lq == 0:  # no queries: its keys get exactly zero gradients
            assert torch.count_nonzero(dk[k0:k1]) == 0 and torch.count_nonzero(dv[k0:k1]) == 0
            continue
        ff_s = ff[s:s + 1] if isinstance(ff, torch.Tensor) else ff  # (1,): one batch row
        leaves = [heads_first(t, a, b).detach().clone().requires_grad_()
                  for t, a, b in ((q, q0, q1), (k, k0, k1), (v, k0, k1))]
        out_s, lse_s = fns.dense(*leaves, case.window, case.sinks, full_from=ff_s,
                                 return_lse=True)
        grads_s = torch.autograd.grad([out_s, lse_s], leaves,
                                      [heads_first(d_o, q0, q1),
                                       d_lse[:, q0:q1].unsqueeze(0).to(lse_s.device)])
        what = f"sequence {s}"
        assert_close(out[q0:q1], out_s[0].transpose(0, 1), dtype, f"{what} out")
        assert_close(lse[:, q0:q1], lse_s[0], dtype, f"{what} lse")
        for name, g, g_s, a, b in (("dq", dq, grads_s[0], q0, q1), ("dk", dk, grads_s[1], k0, k1),
                                   ("dv", dv, grads_s[2], k0, k1)):
            assert_close(g[a:b], g_s[0].transpose(0, 1), dtype, f"{what} {name}")

