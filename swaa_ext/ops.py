"""Python face of the swaa_ext::fwd / swaa_ext::bwd custom ops: the public function, the fake
(meta) implementations for torch.compile, and autograd. Argument checks live in the C++ boundary
(csrc/torch/arguments.h); this file only turns Python values into the schema's types."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loads the library that registers the ops)


def _lse_dtype(q: Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _full_from_tensor(full_from: Tensor | int | None, q: Tensor) -> Tensor | None:
    """int -> one value for every batch row; tensors pass through (checked in C++)."""
    if full_from is None or isinstance(full_from, Tensor):
        return full_from
    if isinstance(full_from, bool) or not isinstance(full_from, numbers.Integral):
        raise TypeError(f"full_from must be None, an int or an int64 tensor of shape (batch,), "
                        f"got {type(full_from).__name__}")
    return torch.full((q.shape[0],), int(full_from), dtype=torch.int64, device=q.device)


def _check_int(name: str, value: object, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        expected = "None or an int" if allow_none else "an int"
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")


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
) -> Tensor | tuple[Tensor, Tensor]:
    """Sink + sliding-window attention (DESIGN.md §2).

    q: (B, Hq, Lq, D); k, v: (B, Hkv, Lk, D) with Hq % Hkv == 0 and Lq <= Lk (queries are the
    last Lq positions). Query at position p sees key j when j <= p and (p - j < window, or
    j < sinks, or p >= full_from). `window` counts keys including the query itself; None means
    full causal attention. `full_from` is an int or an int64 tensor (B,). `scale` defaults to
    1/sqrt(D). Returns the output like q, and with `return_lse` also the natural-log LSE
    (B, Hq, Lq) in float32 (float64 for float64 inputs).
    """
    args = op_arguments(q, k, v, window, sinks, full_from, scale)
    out, lse = torch.ops.swaa_ext.fwd(*args)
    return (out, lse) if return_lse else out


def op_arguments(q: Tensor, k: Tensor, v: Tensor, window: int | None, sinks: int,
                 full_from: Tensor | int | None, scale: float | None) -> tuple:
    """The public signature's Python values as the op schema's arguments (shared by every
    backend's entry point); tensor checks happen in C++."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    _check_int("window", window, allow_none=True)
    _check_int("sinks", sinks)
    if scale is not None and not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be None or a float, got {type(scale).__name__}")
    head_dim = q.shape[-1] if q.dim() > 0 else 1
    scale = 1.0 / math.sqrt(max(head_dim, 1)) if scale is None else float(scale)
    return q, k, v, window, sinks, _full_from_tensor(full_from, q), scale


@torch.library.register_fake("swaa_ext::fwd")
def _fwd_fake(q, k, v, window, sinks, full_from, scale):
    # The real checks run in C++; these are the ones the output's shape and device rest on.
    torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4, lambda: "q, k, v must be 4-D")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}")
    lse = q.new_empty(q.shape[:3], dtype=_lse_dtype(q))
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse


@torch.library.register_fake("swaa_ext::bwd")
def _bwd_fake(grad_out, grad_lse, q, k, v, out, lse, window, sinks, full_from, scale):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    q, k, v, window, sinks, full_from, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, full_from)
    ctx.window, ctx.sinks, ctx.scale = window, sinks, scale


def make_backward(bwd_op):
    """The autograd formula of a fwd op whose gradients `bwd_op` (the matching bwd schema)
    computes; shared by swaa_ext::fwd and the emulated swaa_emulated::fwd."""

    def backward(ctx, grad_out, grad_lse):
        q, k, v, out, lse, full_from = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        dq, dk, dv = bwd_op(grad_out, grad_lse, q, k, v, out, lse, ctx.window, ctx.sinks,
                            full_from, ctx.scale)
        return dq, dk, dv, None, None, None, None

    return backward


def register_autograd(fwd_name: str, bwd_op) -> None:
    torch.library.register_autograd(fwd_name, make_backward(bwd_op),
                                    setup_context=_setup_context)


register_autograd("swaa_ext::fwd", torch.ops.swaa_ext.bwd)
