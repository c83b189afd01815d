"""The CUDA forward and backward kernels run on the CPU by the SIMT emulator (docs/architecture.md, "Testing CUDA kernels without a GPU").

Same source as the GPU build, compiled by g++ into `swaa_ext._C_emulated`: this is how the kernels
are tested without a GPU. Roughly 1 GFLOP/s, so for tests and debugging on small shapes only.

    with emulated.mode("race_check"):
        out = emulated.sliding_attention(q, k, v, window=16, sinks=4)
        out.sum().backward()  # the CUDA backward kernels, emulated
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from . import _C_emulated  # noqa: F401  (loads the library that registers swaa_emulated ops)
from . import sink_logits as learned_sinks
from .ops import (_bwd_fake, _check_int, _fwd_fake, _fwd_paged_fake, _fwd_paged_out_fake,
                  _fwd_varlen_fake, finish, op_arguments, paged_op_arguments, register_autograd,
                  run_paged_op, varlen_op_arguments)

# Schedules the emulator offers; see csrc/swaa/simt/simt.h.
MODES = ("default", "random", "warp_serial", "race_check")

_current = ["default", 0]  # the emulator's mode is process-wide, read at each launch


def set_mode(name: str, seed: int = 0) -> None:
    """Selects the emulator's schedule (process-wide): one of MODES; `seed` drives "random"."""
    _check_int("seed", seed)
    torch.ops.swaa_emulated.set_mode(name, seed)
    _current[:] = [name, seed]


def current_mode() -> tuple[str, int]:
    """The schedule and seed that the next emulated launch uses."""
    return _current[0], _current[1]


@contextlib.contextmanager
def mode(name: str, seed: int = 0) -> Iterator[None]:
    """Runs the block under schedule `name`, then restores the previous one."""
    previous = current_mode()
    set_mode(name, seed)
    try:
        yield
    finally:
        set_mode(*previous)


def sliding_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None,
    sinks: int = 0,
    *,
    full_from: Tensor | int | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    sink_logits: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """`swaa_ext.sliding_attention` through the emulated CUDA kernel: CPU tensors, float16 or
    bfloat16, head dim 64 or 128. Differentiable through out and LSE: the backward runs the CUDA
    backward kernels, emulated."""
    args = op_arguments(q, k, v, window, sinks, full_from, scale)
    sink_logits = learned_sinks.check(sink_logits, q, q.shape[1] if q.dim() == 4 else 0)
    out, lse = torch.ops.swaa_emulated.fwd(*args)
    return finish(out, lse, sink_logits, False, return_lse)


def sliding_attention_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    window: int | None,
    sinks: int = 0,
    *,
    full_from: Tensor | int | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    sink_logits: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """`swaa_ext.sliding_attention_varlen` through the emulated CUDA kernels (same limits as
    `sliding_attention` here); differentiable through out and LSE."""
    args = varlen_op_arguments(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               window, sinks, full_from, scale)
    sink_logits = learned_sinks.check(sink_logits, q, q.shape[1] if q.dim() == 3 else 0)
    out, lse = torch.ops.swaa_emulated.fwd_varlen(*args)
    return finish(out, lse, sink_logits, True, return_lse)


def sliding_attention_paged(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    block_table: Tensor,
    cu_seqlens_q: Tensor,
    seqused_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    window: int | None,
    sinks: int = 0,
    *,
    full_from: Tensor | int | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    out: Tensor | None = None,
    sink_logits: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """`swaa_ext.sliding_attention_paged` through the emulated CUDA kernels: the tile kernel, or
    the split-KV decode kernel for len_q <= 16 (planned as for an A100), each reading K/V through
    the block table (same limits as `sliding_attention` here; kv_layout "rows")."""
    args = paged_op_arguments(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k,
                              max_seqlen_q, max_seqlen_k, window, sinks, full_from, scale,
                              "rows")
    sink_logits = learned_sinks.check(sink_logits, q, q.shape[1] if q.dim() == 3 else 0)
    return run_paged_op(torch.ops.swaa_emulated, args, "rows", return_lse, out, sink_logits)


def decode_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int | None,
    sinks: int = 0,
    *,
    full_from: Tensor | int | None = None,
    scale: float | None = None,
    num_splits: int,
) -> tuple[Tensor, Tensor]:
    """(out, lse) of the split-KV decode kernel with `num_splits` key splits, whatever the plan
    would pick (any len_q): for testing the kernel. Not differentiable."""
    _check_int("num_splits", num_splits)
    return torch.ops.swaa_emulated.fwd_decode(
        *op_arguments(q, k, v, window, sinks, full_from, scale), num_splits)


class DecodePlan(NamedTuple):
    """csrc/swaa/cuda/decode_plan.h's choice for one problem."""

    use_decode: bool  # the split-KV decode kernel runs (else the tile kernel)
    row_groups: int  # blocks along the packed (query head, query) rows of a KV head
    key_tiles: int  # key tiles a sequence's queries may need (host bound)
    num_splits: int  # key splits per row group
    blocks: int  # decode blocks in the grid


def decode_plan(batch: int, heads_q: int, heads_kv: int, len_q: int, len_k: int, head_dim: int,
                window: int | None, sinks: int, with_full_from: bool,
                num_sms: int) -> DecodePlan:
    """What the CUDA forward launches for these shapes on a GPU with `num_sms` SMs (the same C++
    rule the kernels' boundary applies)."""
    use, *rest = torch.ops.swaa_emulated.decode_plan(batch, heads_q, heads_kv, len_q, len_k,
                                                     head_dim, window, sinks, with_full_from,
                                                     num_sms)
    return DecodePlan(bool(use), *rest)


torch.library.register_fake("swaa_emulated::fwd")(_fwd_fake)
torch.library.register_fake("swaa_emulated::bwd")(_bwd_fake)
torch.library.register_fake("swaa_emulated::fwd_varlen")(_fwd_varlen_fake)
torch.library.register_fake("swaa_emulated::bwd_varlen")(_bwd_fake)
torch.library.register_fake("swaa_emulated::fwd_paged")(_fwd_paged_fake)
torch.library.register_fake("swaa_emulated::fwd_paged_out")(_fwd_paged_out_fake)
register_autograd("swaa_emulated::fwd", torch.ops.swaa_emulated.bwd)
register_autograd("swaa_emulated::fwd_varlen", torch.ops.swaa_emulated.bwd_varlen)
