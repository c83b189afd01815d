"""The SWAA attention backend for vLLM: backend classes, metadata, metadata builder, impl (in the
shape of vLLM's own backends, vllm/v1/attention/backends/cpu_attn.py).

Only models with SWAA settings (`config.swaa`, settings.py) are served by swaa_ext. On the CPU
the plugin registers `SWAACPUBackend` for vLLM's CPU_ATTN entry (the one vLLM's CPU platform
always picks); it is vLLM's own `CPUAttentionBackend` (same answers to every capability question,
same KV-cache layout) whose impl and metadata builder are vLLM's for a model without SWAA
settings and ours for a SWAA model: vLLM builds both while the model's config is current
(`_serves_swaa`). Elsewhere `SWAABackend` is `--attention-backend CUSTOM`, chosen explicitly.

Each layer's rule: sliding layers see their window plus the sinks (the first keys of each
request), full layers see everything, and with FA decode the queries at or past each request's
prompt length see everything. Attention is one call per layer and step, prefill and decode
alike: `sliding_attention_paged` reads the paged cache in place through vLLM's block table and
writes into vLLM's output buffer, on the CPU (any dtype) and on CUDA (float16 / bfloat16, head
sizes 64 and 128: the tile and decode kernels read the pages themselves); no keys are gathered
and nothing in a layer synchronises with the host. The cache write is one C++ op on the CPU
(`write_paged_cache`) and tensor indexing elsewhere (paged.write). Both use the block layout
vLLM's own CPU attention would (paged.py: AMX tiles for bfloat16 on a CPU with AMX, rows
otherwise). CUDA graphs: the builder declares none (vLLM runs attention outside its graphs):
the op is capturable (tests/test_cuda_paged.py), but the backend has not run on a GPU yet.

The prompt boundary: vLLM hands attention builders each request's prompt length
(`CommonAttentionMetadata.rswa_prefix_lens`, from the runner's `num_prompt_tokens`) only when the
model config has an `rswa_window`. The builder sets one for FA decode models (see
`_request_prompt_lengths`); the lengths are exact under chunked prefill, prefix-cache hits and
preemption (a resumed request keeps its prompt length while its generated tokens are re-run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from vllm.config import VllmConfig, get_current_vllm_config, get_current_vllm_config_or_none
from vllm.logger import init_logger
from vllm.platforms import current_platform
from vllm.v1.attention.backend import (AttentionBackend, AttentionCGSupport, AttentionImpl,
                                       AttentionLayer, AttentionMetadataBuilder, AttentionType,
                                       CommonAttentionMetadata, MultipleOf)
from vllm.v1.attention.backends.cpu_attn import (CPUAttentionBackend, CPUAttentionBackendImpl,
                                                 CPUAttentionMetadataBuilder)
from vllm.v1.kv_cache_interface import AttentionSpec, KVCacheLayout

from .. import ops  # (importing ops also registers the custom ops)
from .. import sink_logits as learned_sinks
from . import kv_spec, paged
from .paged import CacheViews
from .settings import LayerRule, layer_index, layer_rule, swaa_config

logger = init_logger(__name__)


# The CPU kernels take any head size up to this (csrc/torch/cpu_ops.cpp).
CPU_MAX_HEAD_SIZE = 256

# The ops each layer calls every step, as overloads (resolved once, not per call).
_FWD_PAGED_OUT = torch.ops.swaa_ext.fwd_paged_out.default
_WRITE_PAGED_CACHE = torch.ops.swaa_ext.write_paged_cache.default


def _serves_swaa() -> bool:
    """Whether the model vLLM is building now has SWAA settings (False when no model config is
    current). Also records them (or None) for customize_spec, which vLLM calls with the spec
    alone (kv_spec.record_model)."""
    vllm_config = get_current_vllm_config_or_none()
    if vllm_config is None or vllm_config.model_config is None:
        return False
    settings = swaa_config(vllm_config.model_config.hf_text_config)
    kv_spec.record_model(settings)
    return settings is not None


class SWAABackend(AttentionBackend):
    """swaa_ext's backend where it is chosen explicitly (`--attention-backend CUSTOM`)."""

    forward_includes_kv_cache_update: bool = False  # vLLM calls do_kv_cache_update first
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float32, torch.bfloat16, torch.float16]
    supported_kv_cache_dtypes: ClassVar[list[str]] = ["auto"]

    @staticmethod
    def get_name() -> str:
        return "CUSTOM"

    @staticmethod
    def get_impl_cls() -> type["SWAAImpl"]:
        return SWAAImpl

    @staticmethod
    def get_builder_cls() -> type["SWAAMetadataBuilder"]:
        return SWAAMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes(kv_cache_spec=None) -> list[int | MultipleOf]:
        return [MultipleOf(16)]

    @classmethod
    def get_supported_head_sizes(cls) -> list[int]:
        return [64, 128]  # the CUDA kernels' (csrc/swaa/cuda)

    @classmethod
    def supported_kv_cache_layouts(cls) -> tuple[KVCacheLayout, ...]:
        return (KVCacheLayout.LBHNC,)  # vLLM's CPU layout, paged.py

    @classmethod
    def customize_spec(cls, spec: AttentionSpec) -> AttentionSpec:
        return kv_spec.for_swaa(spec)

    @classmethod
    def supports_sliding_window(cls) -> bool:
        return True

    @classmethod
    def supports_rswa(cls) -> bool:
        return True  # we read rswa_prefix_lens (the prompt lengths), see the module docstring

    @classmethod
    def supports_attn_type(cls, attn_type: str) -> bool:
        return attn_type == AttentionType.DECODER

    @classmethod
    def supports_sink(cls) -> bool:
        return True  # learned sink logits (gpt-oss), swaa_ext/sink_logits.py


class SWAACPUBackend(CPUAttentionBackend):
    """The class registered for CPU_ATTN: vLLM's CPU backend for models without SWAA settings;
    swaa_ext's impl and metadata builder for SWAA models (SWAAImpl refuses what it cannot do,
    e.g. a quantised KV cache, which vLLM's CPU backend allows)."""

    @staticmethod
    def get_impl_cls():
        return SWAAImpl if _serves_swaa() else CPUAttentionBackendImpl

    @staticmethod
    def get_builder_cls():
        return SWAAMetadataBuilder if _serves_swaa() else CPUAttentionMetadataBuilder

    @classmethod
    def customize_spec(cls, spec: AttentionSpec) -> AttentionSpec:
        return kv_spec.for_swaa(super().customize_spec(spec))

    @classmethod
    def supports_rswa(cls) -> bool:
        return True  # SWAA FA decode reads rswa_prefix_lens; only the SWAA builder sets it


@dataclass
class SWAAMetadata:
    num_actual_tokens: int
    query_start_loc: Tensor  # (n + 1,) int32: request r's queries are rows [qsl[r], qsl[r + 1])
    seq_lens: Tensor  # (n,) keys of each request after this step
    max_query_len: int
    max_seq_len: int
    block_table: Tensor  # (n, max_blocks)
    prompt_lens: Tensor | None  # (n,) int64: FA decode boundary; None without FA decode


class SWAAMetadataBuilder(AttentionMetadataBuilder[SWAAMetadata]):
    # Declared, not inherited: no CUDA graphs until the backend has run under them on a GPU.
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER

    def __init__(self, kv_cache_spec: AttentionSpec, layer_names: list[str],
                 vllm_config: VllmConfig, device: torch.device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        config = swaa_config(vllm_config.model_config.hf_text_config)
        kv_spec.check_spec(kv_cache_spec, config)
        self.needs_prompt_lens = config is not None and config.fa_decode
        if self.needs_prompt_lens:
            _request_prompt_lengths(vllm_config)

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> SWAAMetadata:
        cm = common_attn_metadata
        prompt_lens = None
        if self.needs_prompt_lens:
            if cm.rswa_prefix_lens is None:
                raise RuntimeError("swaa_ext's vLLM backend needs each request's prompt length "
                                   "for FA decode, and vLLM did not pass it "
                                   "(CommonAttentionMetadata.rswa_prefix_lens)")
            prompt_lens = cm.rswa_prefix_lens[: cm.num_reqs].to(cm.seq_lens.device, torch.int64)
        return SWAAMetadata(
            num_actual_tokens=cm.num_actual_tokens,
            query_start_loc=cm.query_start_loc.to(torch.int32),
            seq_lens=cm.seq_lens,
            max_query_len=cm.max_query_len,
            max_seq_len=cm.max_seq_len,
            block_table=cm.block_table_tensor,
            prompt_lens=prompt_lens,
        )


def _request_prompt_lengths(vllm_config: VllmConfig) -> None:
    """Makes vLLM's model runner pass each request's prompt length to the builders
    (rswa_prefix_lens): it does so when the model config has an R-SWA window. No other part of a
    Llama-style model reads that field (R-SWA models use their own RSWAAttention layers and KV
    spec), and our backend reads only the lengths. The window given is the model length: past
    the prompt, everything is visible, which is FA decode."""
    model_config = vllm_config.model_config
    if model_config.rswa_window is None:
        model_config.model_arch_config.rswa_window = model_config.max_model_len
    if model_config.rswa_window is None:
        raise RuntimeError("swaa_ext's vLLM backend could not ask vLLM for the prompt lengths "
                           "that FA decode needs (model_config.rswa_window)")


class SWAAImpl(AttentionImpl):
    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int,
                 alibi_slopes: list[float] | None, sliding_window: int | None,
                 kv_cache_dtype: str, logits_soft_cap: float | None = None,
                 attn_type: str = AttentionType.DECODER,
                 kv_sharing_target_layer_name: str | None = None,
                 sinks: Tensor | None = None, **unsupported) -> None:
        refused = {"alibi_slopes": alibi_slopes, "logits_soft_cap": logits_soft_cap or None,
                   "kv_sharing_target_layer_name": kv_sharing_target_layer_name,
                   **{k: v for k, v in unsupported.items() if v is not None}}
        refused = [name for name, value in refused.items() if value is not None]
        if refused:
            raise ValueError(f"swaa_ext's vLLM backend cannot apply {', '.join(refused)}, which "
                             "this model uses")
        if attn_type != AttentionType.DECODER:
            raise ValueError(f"swaa_ext's vLLM backend serves decoder attention only, got "
                             f"{attn_type!r}")
        if kv_cache_dtype != "auto":
            raise ValueError(f"swaa_ext's vLLM backend keeps the KV cache in the model dtype; "
                             f"kv_cache_dtype={kv_cache_dtype!r} is not supported")
        vllm_config = get_current_vllm_config()
        if vllm_config.speculative_config is not None:
            raise ValueError("swaa_ext's vLLM backend does not support speculative decoding: a "
                             "draft model's layers would share the SWAA KV-cache settings of the "
                             "target model (docs/vllm.md)")
        if current_platform.is_cpu() and head_size > CPU_MAX_HEAD_SIZE:
            raise ValueError(f"swaa_ext's CPU kernels take head sizes up to {CPU_MAX_HEAD_SIZE}, "
                             f"got {head_size}")
        self.num_heads, self.head_size, self.num_kv_heads = num_heads, head_size, num_kv_heads
        self.scale = float(scale)
        self.native_window = sliding_window
        text_config = vllm_config.model_config.hf_text_config
        self.config = swaa_config(text_config)
        self.num_layers = text_config.num_hidden_layers
        if self.config is not None:
            self.config.full_layers(self.num_layers)  # bad layer indices fail at load
        # Learned sink logits (gpt-oss), this rank's heads: added to each row's softmax from the
        # op's LSE (swaa_ext/sink_logits.py).
        if sinks is not None and sinks.shape != (num_heads,):
            raise ValueError(f"swaa_ext's vLLM backend needs one sink logit per query head "
                             f"({num_heads}), got shape {tuple(sinks.shape)}")
        self.sinks = sinks
        self.rule: LayerRule | None = None  # known at the first forward (the layer's name)
        self._cache_views: tuple[Tensor, CacheViews] | None = None

    def forward(self, layer: AttentionLayer, query: Tensor, key: Tensor, value: Tensor,
                kv_cache: Tensor, attn_metadata: SWAAMetadata | None, output: Tensor,
                output_scale: Tensor | None = None,
                output_block_scale: Tensor | None = None) -> Tensor:
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("swaa_ext's vLLM backend has no fused output quantization")
        if attn_metadata is None:  # profiling / warm-up run
            return output
        if self.rule is None:
            self.rule = layer_rule(self.config, layer_index(layer.layer_name), self.num_layers,
                                   self.native_window)
            if self.rule.window is not None and not self.rule.fa_decode and \
                    self.native_window is None:
                logger.warning_once(  # e.g. a config changed after vLLM's parser marked it
                    "swaa_ext: the window-only layers keep the full KV cache; serve with "
                    "hf_overrides=swaa_ext.vllm.hf_overrides(config) to keep only sinks + window")
        rule, meta = self.rule, attn_metadata
        tokens = meta.num_actual_tokens
        full_from = meta.prompt_lens if rule.fa_decode else None
        out = output[:tokens].view(tokens, self.num_heads, self.head_size)
        # The op itself (swaa_ext.sliding_attention_paged without its Python argument checks,
        # which vLLM's values pass by construction; the C++ boundary still checks every
        # argument): this runs for every layer and step.
        views = self._views(kv_cache)
        lse = None
        if self.sinks is not None:
            lse = torch.empty(self.num_heads, tokens, dtype=ops.lse_dtype(query),
                              device=query.device)
        _FWD_PAGED_OUT(
            query[:tokens], views.keys, views.values, meta.block_table, meta.query_start_loc,
            meta.seq_lens, meta.max_query_len, meta.max_seq_len, rule.window, rule.sinks,
            full_from, self.scale, out, lse, views.layout)
        if lse is not None:
            learned_sinks.apply(out, lse, self.sinks, True, into=out)
        return output

    def _views(self, kv_cache: Tensor) -> CacheViews:
        """paged.cache_views of this layer's cache, made once per cache tensor (vLLM passes the
        same one every step; the views hold it, so `is` cannot match a new tensor)."""
        if self._cache_views is None or self._cache_views[0] is not kv_cache:
            self._cache_views = (kv_cache, paged.cache_views(kv_cache, self.head_size))
        return self._cache_views[1]

    def do_kv_cache_update(self, layer: torch.nn.Module, key: Tensor, value: Tensor,
                           kv_cache: Tensor, slot_mapping: Tensor) -> None:
        views = self._views(kv_cache)
        if paged.uses_cpu_ops(kv_cache):
            _WRITE_PAGED_CACHE(key, value, views.keys, views.values, slot_mapping, views.layout)
        else:
            paged.write(views.keys, views.values, key, value, slot_mapping)
