"""swaa_ext's vLLM plugin: serves a model adapted with swaa_ext.adapt (its `config.swaa`, or the
same settings through `hf_overrides=swaa_ext.vllm.hf_overrides(config)`) with per-layer sliding
windows, sinks and FA decode at each request's prompt boundary, computed by swaa_ext's kernels
(docs/vllm.md).

vLLM loads `register` through the `vllm.general_plugins` entry point (pyproject.toml) in every
process. It checks the vLLM version and registers backend.SWAABackend on vLLM's attention
registry: for CPU_ATTN (the backend vLLM's CPU platform always picks), else for CUSTOM
(`--attention-backend CUSTOM`), the sink + window KV-cache spec on vLLM's KV-cache spec
registry (kv_spec.py), and vLLM's "hf" config parser again, with the window-only layers of an
adapted checkpoint marked as sliding layers (config_parser.py)."""

from __future__ import annotations

from .version import SUPPORTED

__all__ = ["register", "hf_overrides", "SUPPORTED"]

BACKEND = "swaa_ext.vllm.backend.SWAABackend"


def register() -> None:
    import vllm
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    from . import config_parser, kv_spec
    from .version import check

    check(vllm.__version__)
    kv_spec.register()
    config_parser.register()
    slot = AttentionBackendEnum.CPU_ATTN if current_platform.is_cpu() else AttentionBackendEnum.CUSTOM
    register_backend(slot, BACKEND)


def hf_overrides(config=None):
    """`hf_overrides` for vLLM: `LLM(model, hf_overrides=swaa_ext.vllm.hf_overrides(config))`
    serves any checkpoint with these SWAA settings (a swaa_ext.SWAAConfig); without `config`, a
    checkpoint saved after swaa_ext.adapt is served with its own (as it is without any
    hf_overrides). Either way the window-only layers become vLLM sliding-window layers, which
    keep only sinks + window in the KV cache (overrides.py)."""
    from ..config import SWAAConfig
    from .overrides import SWAAOverrides

    if config is not None and not isinstance(config, SWAAConfig):
        raise TypeError(f"config must be a swaa_ext.SWAAConfig or None, got "
                        f"{type(config).__name__}")
    return SWAAOverrides(None if config is None else config.to_dict())
