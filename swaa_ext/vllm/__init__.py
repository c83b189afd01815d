"""swaa_ext's vLLM plugin: serves a model adapted with swaa_ext.adapt (its `config.swaa`, or the
same settings through `hf_overrides=swaa_ext.vllm.hf_overrides(config)`) with per-layer sliding
windows, sinks and FA decode at each request's prompt boundary, computed by swaa_ext's kernels
(docs/vllm.md).

vLLM loads `register` through the `vllm.general_plugins` entry point (pyproject.toml) in every
process. With a supported vLLM it registers, on vLLM's attention registry, backend.SWAACPUBackend
for CPU_ATTN (the backend vLLM's CPU platform always picks; models without SWAA settings keep
vLLM's own CPU attention through it) or elsewhere backend.SWAABackend for CUSTOM
(`--attention-backend CUSTOM`); the KV-cache specs of SWAA layers on vLLM's KV-cache spec
registry (kv_spec.py); and vLLM's "hf" config parser again, with the window-only layers of an
adapted checkpoint marked as sliding layers (config_parser.py). With any other vLLM it logs one
warning and registers nothing, so vLLM keeps working without it."""

from __future__ import annotations

from .version import SUPPORTED

__all__ = ["register", "hf_overrides", "SUPPORTED"]

CPU_BACKEND = "swaa_ext.vllm.backend.SWAACPUBackend"
BACKEND = "swaa_ext.vllm.backend.SWAABackend"


def register() -> None:
    import vllm
    from vllm.logger import init_logger

    from .version import supported

    if not supported(vllm.__version__):
        init_logger(__name__).warning(
            "swaa_ext's vLLM plugin supports vllm %s, but vllm %s is installed: the plugin is "
            "not loaded (SWAA settings are ignored; vLLM serves with its own attention)",
            SUPPORTED, vllm.__version__)
        return
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    from . import config_parser, kv_spec

    kv_spec.register()
    config_parser.register()
    if current_platform.is_cpu():
        register_backend(AttentionBackendEnum.CPU_ATTN, CPU_BACKEND)
    else:
        register_backend(AttentionBackendEnum.CUSTOM, BACKEND)


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
