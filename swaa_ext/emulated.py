"""The CUDA forward kernel run on the CPU by the SIMT emulator (DESIGN.md §6).

Same source as the GPU build, compiled by g++ into `swaa_ext._C_emulated`: this is how the kernel
is tested without a GPU. Roughly 1 GFLOP/s, so for tests and debugging on small shapes only.

    with emulated.mode("race_check"):
        out = emulated.sliding_attention(q, k, v, window=16, sinks=4)
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import torch
from torch import Tensor

from . import _C_emulated  # noqa: F401  (loads the library that registers swaa_emulated ops)
from .ops import _check_int, _fwd_fake, _full_from_tensor

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
) -> Tensor | tuple[Tensor, Tensor]:
    """`swaa_ext.sliding_attention` through the emulated CUDA kernel: CPU tensors, float16 or
    bfloat16, head dim 64 or 128. Forward only (no autograd)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    _check_int("window", window, allow_none=True)
    _check_int("sinks", sinks)
    if scale is not None and not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be None or a float, got {type(scale).__name__}")
    head_dim = q.shape[-1] if q.dim() > 0 else 1
    scale = 1.0 / math.sqrt(max(head_dim, 1)) if scale is None else float(scale)
    out, lse = torch.ops.swaa_emulated.fwd(q, k, v, window, sinks,
                                           _full_from_tensor(full_from, q), scale)
    return (out, lse) if return_lse else out


torch.library.register_fake("swaa_emulated::fwd")(_fwd_fake)
