"""Python face of the swaa_ext::fwd / bwd, fwd_varlen / bwd_varlen, fwd_paged (/ _out) and
write_paged_cache custom ops:
the public functions, the fake (meta) implementations for torch.compile, and autograd. Argument checks live
in the C++ boundary (csrc/torch/arguments.h); this file only turns Python values into the
schema's types."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loads the library that registers the ops)
from . import sink_logits as learned_sinks


def lse_dtype(q: Tensor) -> torch.dtype:
    """The LSE's dtype for inputs like q: float64 for float64, else float32."""
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def full_from_tensor(full_from: Tensor | int | None, n: int, device: torch.device,
                     what: str = "batch", name: str = "full_from") -> Tensor | None:
    """int -> one value for each of the n batch rows (or sequences); tensors pass through
    (checked in C++). The one place an int boundary becomes the kernels' (n,) int64 tensor
    (the transformers integration's `swaa_full_from` too); `name` is the argument's."""
    if full_from is None or isinstance(full_from, Tensor):
        return full_from
    if isinstance(full_from, bool) or not isinstance(full_from, numbers.Integral):
        raise TypeError(f"{name} must be None, an int or an int64 tensor of shape ({what},), "
                        f"got {type(full_from).__name__}")
    return torch.full((n,), int(full_from), dtype=torch.int64, device=device)


def _check_index_tensors(**tensors: object) -> None:
    """The index arguments (cu_seqlens, block tables) are tensors; their dtype, shape and values
    are checked in C++."""
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be an int32 torch.Tensor, got {type(t).__name__}")


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
    sink_logits: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sink + sliding-window attention (docs/architecture.md, "The masking rule").

    q: (B, Hq, Lq, D); k, v: (B, Hkv, Lk, D) with Hq % Hkv == 0 and Lq <= Lk (queries are the
    last Lq positions). Query at position p sees key j when j <= p and (p - j < window, or
    j < sinks, or p >= full_from). `window` counts keys including the query itself; None means
    full causal attention. `full_from` is an int or an int64 tensor (B,). `scale` defaults to
    1/sqrt(D). Returns the output like q, and with `return_lse` also the natural-log LSE
    (B, Hq, Lq) in float32 (float64 for float64 inputs).

    `sink_logits` (Hq,) (float32, float64 or q's dtype): learned sinks as in gpt-oss, one more
    key per query head that every query sees, with that logit (in the scaled-score domain) and a
    zero value; combinable with `sinks`, the window and `full_from`; differentiable; the LSE then
    includes it (swaa_ext/sink_logits.py).
    """
    args = op_arguments(q, k, v, window, sinks, full_from, scale)
    sink_logits = learned_sinks.check(sink_logits, q, q.shape[1] if q.dim() == 4 else 0)
    out, lse = torch.ops.swaa_ext.fwd(*args)
    return finish(out, lse, sink_logits, False, return_lse)


def finish(out: Tensor, lse: Tensor, sink_logits: Tensor | None, packed: bool,
           return_lse: bool) -> Tensor | tuple[Tensor, Tensor]:
    """A kernel's (out, lse) as the public functions return it, with the learned sinks added."""
    if sink_logits is not None:
        out, lse = learned_sinks.apply(out, lse, sink_logits, packed)
    return (out, lse) if return_lse else out


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
    """`sliding_attention` over a packed batch of variable-length sequences, in FlashAttention's
    `flash_attn_varlen_func` layout.

    q: (total_q, Hq, D); k, v: (total_k, Hkv, D); cu_seqlens_q / cu_seqlens_k: int32 (n + 1,)
    prefix sums from 0 on q's device: sequence s owns query rows cu_seqlens_q[s] to
    cu_seqlens_q[s + 1] and key rows likewise, with len_q(s) <= len_k(s). max_seqlen_q/k bound
    every sequence's length. Each sequence has its own rule: its queries are the last len_q(s) of
    its keys, its sinks are its own first keys, and `full_from` (an int, or an int64 tensor (n,))
    is a position in its own keys. Returns the output like q, and with `return_lse` the LSE
    (Hq, total_q) in float32 (float64 for float64 inputs). On a CUDA device the values of
    cu_seqlens are trusted (as in FlashAttention); on the CPU they are checked.
    """
    args = varlen_op_arguments(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               window, sinks, full_from, scale)
    sink_logits = learned_sinks.check(sink_logits, q, q.shape[1] if q.dim() == 3 else 0)
    out, lse = torch.ops.swaa_ext.fwd_varlen(*args)
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
    kv_layout: str = "rows",
    sink_logits: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """`sliding_attention_varlen` with the keys and values read in place from a paged KV cache
    (vLLM's block table; FlashAttention's `flash_attn_varlen_func(..., block_table=...)`).
    Forward only. On the CPU: float32 / float64, or bfloat16 / float16 caches converted to
    float32 tile by tile as they are read (never as a whole); bfloat16 on a CPU with AMX is
    multiplied as it is, on AMX tiles with float32 sums (probabilities rounded to bfloat16).
    On a CUDA device: float16 / bfloat16, head dim 64 or 128, the tile kernel for prompts and
    chunks and the split-KV decode kernel for len_q <= 16, both reading the pages through the
    block table; every page, head and row stride of the caches a whole 16 bytes; the index
    tensors' values are trusted there (checking them would sync), as in FlashAttention.

    q: (total_q, Hq, D) packed by cu_seqlens_q (int32 (n + 1,)); k_cache, v_cache:
    (num_pages, Hkv, page_size, D), last dim contiguous (other strides are free, e.g. the key and
    value halves of vLLM's CPU cache); block_table: int32 (n, max_pages); seqused_k: int32 (n,).
    Key j of sequence s is row j % page_size of page block_table[s, j // page_size], for
    j < seqused_k[s]; its queries are its last len_q(s) keys. Pages the rule never reads
    (outside the sinks and the windows of the queries) may hold anything. The rule, full_from
    and the returns are sliding_attention_varlen's. `out` (q's shape and dtype, any strides with
    a contiguous last dim): written in place and returned; the LSE is computed only when
    return_lse is set.

    kv_layout="amx": the pages hold bfloat16 keys and values as AMX tiles (the layout vLLM's CPU
    attention uses when it runs on AMX; docs/architecture.md), written by
    `write_paged_cache(..., kv_layout="amx")`; contiguous pages, page size and head dim multiples
    of 32 (head dim at most 256), on a CPU where `cpu_has_amx()`. Every work item then runs on
    AMX with no repacking, decode included.
    """
    args = paged_op_arguments(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k,
                              max_seqlen_q, max_seqlen_k, window, sinks, full_from, scale,
                              kv_layout)
    sink_logits = learned_sinks.check(sink_logits, q, q.shape[1] if q.dim() == 3 else 0)
    return run_paged_op(torch.ops.swaa_ext, args, kv_layout, return_lse, out, sink_logits)


def paged_op_arguments(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_table: Tensor,
                       cu_seqlens_q: Tensor, seqused_k: Tensor, max_seqlen_q: int,
                       max_seqlen_k: int, window: int | None, sinks: int,
                       full_from: Tensor | int | None, scale: float | None,
                       kv_layout: str) -> tuple:
    """The fwd_paged op's positional arguments up to kv_layout, checked and normalised."""
    scale = _rule_arguments(q, k_cache, v_cache, window, sinks, scale, names=("q", "k_cache",
                                                                             "v_cache"))
    _check_index_tensors(block_table=block_table, cu_seqlens_q=cu_seqlens_q,
                         seqused_k=seqused_k)
    _check_int("max_seqlen_q", max_seqlen_q)
    _check_int("max_seqlen_k", max_seqlen_k)
    n = max(cu_seqlens_q.shape[0] - 1, 0) if cu_seqlens_q.dim() == 1 else 0
    full_from = full_from_tensor(full_from, n, q.device, what="sequences")
    _check_kv_layout(kv_layout)
    return (q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k, int(max_seqlen_q),
            int(max_seqlen_k), window, sinks, full_from, scale)


def run_paged_op(namespace, args: tuple, kv_layout: str, return_lse: bool,
                 out: Tensor | None, sink_logits: Tensor | None = None,
                 ) -> Tensor | tuple[Tensor, Tensor]:
    """Calls `namespace`.fwd_paged, or fwd_paged_out into `out` (and an LSE only if asked for,
    or needed for the learned sinks)."""
    if out is not None and not isinstance(out, Tensor):
        raise TypeError(f"out must be None or a torch.Tensor, got {type(out).__name__}")
    need_lse = return_lse or sink_logits is not None
    if out is None and need_lse:
        result, lse = namespace.fwd_paged(*args, kv_layout)
    else:
        q = args[0]
        result = torch.empty_like(q, memory_format=torch.contiguous_format) if out is None else out
        lse = q.new_empty((q.shape[1], q.shape[0]), dtype=lse_dtype(q)) if need_lse else None
        namespace.fwd_paged_out(*args, result, lse, kv_layout)
    if sink_logits is not None:
        result, lse = learned_sinks.apply(result, lse, sink_logits, True, into=out)
    return (result, lse) if return_lse else result


def write_paged_cache(key: Tensor, value: Tensor, k_cache: Tensor, v_cache: Tensor,
                      slot_mapping: Tensor, kv_layout: str = "rows") -> None:
    """Stores each token's key and value rows `(T, Hkv, D)` into a paged cache
    `(num_pages, Hkv, page_size, D)` (the layout `sliding_attention_paged` reads) at
    `slot_mapping[t] = page * page_size + row` (int64 or int32, at least T entries; a negative
    slot is padding and is skipped). key, value and the caches share one dtype (any); CPU.
    kv_layout="amx": bfloat16 pages stored as AMX tiles (see sliding_attention_paged)."""
    for name, t in (("key", key), ("value", value), ("k_cache", k_cache),
                    ("v_cache", v_cache), ("slot_mapping", slot_mapping)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if key.device.type != "cpu":
        raise NotImplementedError(f"write_paged_cache runs on the CPU only, got {key.device}")
    _check_kv_layout(kv_layout)
    torch.ops.swaa_ext.write_paged_cache(key, value, k_cache, v_cache, slot_mapping, kv_layout)


def cpu_has_amx() -> bool:
    """Whether this process can run the AMX tile products: a CPU with AMX-BF16 that Linux lets it
    use, and SWAA_CPU_ISA not capping the kernels below "amx". bfloat16 prompts then run on AMX,
    and kv_layout="amx" caches can be read."""
    return bool(torch.ops.swaa_ext.cpu_has_amx())


def amx_kv_layout_fits(dtype: torch.dtype, head_dim: int, page_size: int) -> bool:
    """Whether a paged cache of this dtype, head dim and page size can use kv_layout="amx" here."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    _check_int("head_dim", head_dim)
    _check_int("page_size", page_size)
    return (dtype == torch.bfloat16 and head_dim % 32 == 0 and head_dim <= 256
            and page_size % 32 == 0 and cpu_has_amx())


def _check_kv_layout(kv_layout: object) -> None:
    if kv_layout not in ("rows", "amx"):
        raise ValueError(f"kv_layout must be 'rows' or 'amx', got {kv_layout!r}")


def _rule_arguments(q: Tensor, k: Tensor, v: Tensor, window: int | None, sinks: int,
                    scale: float | None, names: tuple[str, str, str] = ("q", "k", "v")) -> float:
    """Checks the Python values every layout shares; returns the scale (default 1/sqrt(D))."""
    for name, t in zip(names, (q, k, v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    _check_int("window", window, allow_none=True)
    _check_int("sinks", sinks)
    if scale is not None and not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be None or a float, got {type(scale).__name__}")
    head_dim = q.shape[-1] if q.dim() > 0 else 1
    return 1.0 / math.sqrt(max(head_dim, 1)) if scale is None else float(scale)


def op_arguments(q: Tensor, k: Tensor, v: Tensor, window: int | None, sinks: int,
                 full_from: Tensor | int | None, scale: float | None) -> tuple:
    """The public signature's Python values as the op schema's arguments (shared by every
    backend's entry point); tensor checks happen in C++."""
    scale = _rule_arguments(q, k, v, window, sinks, scale)
    batch = q.shape[0] if q.dim() > 0 else 0
    return q, k, v, window, sinks, full_from_tensor(full_from, batch, q.device), scale


def varlen_op_arguments(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor,
                        cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int,
                        window: int | None, sinks: int, full_from: Tensor | int | None,
                        scale: float | None) -> tuple:
    """`op_arguments` for the varlen schema (fwd_varlen)."""
    scale = _rule_arguments(q, k, v, window, sinks, scale)
    _check_index_tensors(cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
    _check_int("max_seqlen_q", max_seqlen_q)
    _check_int("max_seqlen_k", max_seqlen_k)
    n = max(cu_seqlens_q.shape[0] - 1, 0) if cu_seqlens_q.dim() == 1 else 0
    full_from = full_from_tensor(full_from, n, q.device, what="sequences")
    return (q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k), window,
            sinks, full_from, scale)


@torch.library.register_fake("swaa_ext::fwd")
def _fwd_fake(q, k, v, window, sinks, full_from, scale):
    # The real checks run in C++; these are the ones the output's shape and device rest on.
    torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4, lambda: "q, k, v must be 4-D")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}")
    lse = q.new_empty(q.shape[:3], dtype=lse_dtype(q))
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse


@torch.library.register_fake("swaa_ext::bwd")
@torch.library.register_fake("swaa_ext::bwd_varlen")
def _bwd_fake(grad_out, grad_lse, q, k, v, out, lse, *rule_args):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format))


@torch.library.register_fake("swaa_ext::fwd_varlen")
def _fwd_varlen_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, window,
                     sinks, full_from, scale):
    torch._check(q.dim() == 3 and k.dim() == 3 and v.dim() == 3, lambda: "q, k, v must be 3-D")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}")
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    lse = q.new_empty((q.shape[1], q.shape[0]), dtype=lse_dtype(q))
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse


@torch.library.register_fake("swaa_ext::fwd_paged")
def _fwd_paged_fake(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k, max_seqlen_q,
                    max_seqlen_k, window, sinks, full_from, scale, kv_layout="rows"):
    torch._check(q.dim() == 3 and k_cache.dim() == 4 and v_cache.dim() == 4,
                 lambda: "q must be 3-D, k_cache and v_cache 4-D")
    lse = q.new_empty((q.shape[1], q.shape[0]), dtype=lse_dtype(q))
    return torch.empty_like(q, memory_format=torch.contiguous_format), lse


@torch.library.register_fake("swaa_ext::fwd_paged_out")
def _fwd_paged_out_fake(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k, max_seqlen_q,
                        max_seqlen_k, window, sinks, full_from, scale, out, lse,
                        kv_layout="rows"):
    torch._check(out.shape == q.shape, lambda: "out must have q's shape")


@torch.library.register_fake("swaa_ext::write_paged_cache")
def _write_paged_cache_fake(key, value, k_cache, v_cache, slot_mapping, kv_layout="rows"):
    torch._check(key.shape == value.shape, lambda: "key and value must have one shape")


def _setup_context(ctx, inputs, output):
    # inputs = (q, k, v, *rest): rest is everything after v in the fwd schema, handed back to
    # the bwd schema in the same order (tensors saved, the rest kept on ctx).
    q, k, v, *rest = inputs
    out, lse = output
    tensors = [a for a in rest if isinstance(a, Tensor)]
    ctx.save_for_backward(q, k, v, out, lse, *tensors)
    ctx.rest = [None if isinstance(a, Tensor) else a for a in rest]
    ctx.is_tensor = [isinstance(a, Tensor) for a in rest]


def make_backward(bwd_op):
    """The autograd formula of a fwd op whose gradients `bwd_op` (the matching bwd schema:
    grad_out, grad_lse, q, k, v, out, lse, then the fwd's arguments after v) computes; shared by
    swaa_ext::fwd / fwd_varlen and the emulated swaa_emulated ones."""

    def backward(ctx, grad_out, grad_lse):
        q, k, v, out, lse, *tensors = ctx.saved_tensors
        tensors = iter(tensors)
        rest = [next(tensors) if t else a for a, t in zip(ctx.rest, ctx.is_tensor)]
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        dq, dk, dv = bwd_op(grad_out, grad_lse, q, k, v, out, lse, *rest)
        return (dq, dk, dv) + (None,) * len(rest)

    return backward


def register_autograd(fwd_name: str, bwd_op) -> None:
    torch.library.register_autograd(fwd_name, make_backward(bwd_op),
                                    setup_context=_setup_context)


register_autograd("swaa_ext::fwd", torch.ops.swaa_ext.bwd)
register_autograd("swaa_ext::fwd_varlen", torch.ops.swaa_ext.bwd_varlen)
