"""The contenders, each a builder `case -> callable` (or a reason to skip it).

All compute the same sink + window attention except `sdpa_causal`, which is what a model that was
not adapted pays: full causal attention (for decode: over the whole cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from transformers.models.llama.modeling_llama import eager_attention_forward

import swaa_ext
from swaa_ext import reference

from .problem import Case

Attention = Callable[[Tensor, Tensor, Tensor], Tensor]  # (q, k, v) -> out (B, Hq, Lq, D)
GIB = 1 << 30


class Skip(Exception):
    """A baseline that is not run for a case; the message says why."""


def _swaa(case: Case) -> Attention:
    return lambda q, k, v: swaa_ext.sliding_attention(q, k, v, case.window, case.sinks)


def _dense_mask(case: Case) -> Tensor:
    return reference.visible(case.len_q, case.len_k, case.window, case.sinks)  # (1, 1, Lq, Lk)


def _sdpa_dense_mask(case: Case) -> Attention:
    mask = _dense_mask(case)
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                          enable_gqa=True)


def _sdpa_causal(case: Case) -> Attention:
    # Decode: the one query is the last position, so "causal" is the whole cache, no mask.
    causal = case.mode != "decode"
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                          enable_gqa=True)


_compiled_flex = torch.compile(flex_attention, dynamic=False)


def _flex(case: Case) -> Attention:
    offset, window, sinks = case.len_k - case.len_q, case.window, case.sinks

    def rule(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        p = q_idx + offset  # the same rule as mask.h / reference.visible
        return (kv_idx <= p) & ((p - kv_idx < window) | (kv_idx < sinks))

    block_mask = create_block_mask(rule, None, None, case.len_q, case.len_k, device="cpu",
                                   _compile=True)
    return lambda q, k, v: _compiled_flex(q, k, v, block_mask=block_mask, enable_gqa=True)


class _EagerModule(nn.Module):
    """The two attributes transformers' eager attention reads from its attention module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.training = False


def _hf_eager(case: Case) -> Attention:
    module = _EagerModule(case.heads_q // case.heads_kv)
    additive = torch.zeros(case.len_q, case.len_k, dtype=case.dtype)
    additive.masked_fill_(~_dense_mask(case)[0, 0], torch.finfo(case.dtype).min)
    additive = additive[None, None]  # (1, 1, Lq, Lk), as transformers builds it
    scale = 1 / math.sqrt(case.head_dim)

    def run(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out, _ = eager_attention_forward(module, q, k, v, additive, scale)
        return out.transpose(1, 2)  # eager returns (B, Lq, Hq, D)

    return run


def _dense_bytes(case: Case, per_element: int) -> int:
    return per_element * case.len_q * case.len_k


def _memory_checks(case: Case) -> dict[str, int]:
    """Peak extra bytes of each dense baseline: masks (as float inside SDPA) and score tensors."""
    grad = 2 if case.mode == "fwd+bwd" else 1
    return {
        "sdpa_dense_mask": _dense_bytes(case, 4 + 1),
        "hf_eager": _dense_bytes(case, 4 + 3 * 4 * case.batch * case.heads_q * grad),
    }


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    build: Callable[[Case], Attention]
    modes: tuple[str, ...] = ("fwd", "fwd+bwd", "decode")


METHODS = (
    Method("swaa_ext", "swaa_ext", _swaa),
    Method("sdpa_dense_mask", "SDPA + dense mask", _sdpa_dense_mask),
    Method("sdpa_causal", "SDPA full causal", _sdpa_causal),
    Method("flex_compiled", "FlexAttention (compiled)", _flex, ("fwd", "decode")),
    Method("hf_eager", "HF eager (masked matmul)", _hf_eager),
)


def prepare(method: Method, case: Case, memory_budget_gib: float) -> Attention:
    """The method's attention function for `case`, or Skip with the reason."""
    if case.mode not in method.modes:
        raise Skip("no CPU backward" if case.mode == "fwd+bwd" else f"no {case.mode}")
    needed = _memory_checks(case).get(method.name, 0)
    if needed > memory_budget_gib * GIB:
        raise Skip(f"needs {needed / GIB:.0f} GiB of L x L mask/scores")
    return method.build(case)
