"""swaa_ext's vLLM plugin: serves a model adapted with swaa_ext.adapt (its `config.swaa`, or the
same settings as `hf_overrides={"swaa": {...}}`) with per-layer sliding windows, sinks and FA
decode at each request's prompt boundary, computed by swaa_ext's kernels (docs/vllm.md).

vLLM loads `register` through the `vllm.general_plugins` entry point (pyproject.toml) in every
process. It checks the vLLM version and registers backend.SWAABackend on vLLM's attention
registry: for CPU_ATTN (the backend vLLM's CPU platform always picks), else for CUSTOM
(`--attention-backend CUSTOM`)."""

from __future__ import annotations

from .version import SUPPORTED

__all__ = ["register", "hf_overrides", "SUPPORTED"]

BACKEND = "swaa_ext.vllm.backend.SWAABackend"


def register() -> None:
    import vllm
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    from .version import check

    check(vllm.__version__)
    slot = AttentionBackendEnum.CPU_ATTN if current_platform.is_cpu() else AttentionBackendEnum.CUSTOM
    register_backend(slot, BACKEND)


def hf_overrides(config) -> dict:
    """`hf_overrides` for vLLM that serve a plain checkpoint with these SWAA settings
    (a swaa_ext.SWAAConfig): `LLM(model, hf_overrides=swaa_ext.vllm.hf_overrides(config))`."""
    from ..config import SWAAConfig

    if not isinstance(config, SWAAConfig):
        raise TypeError(f"config must be a swaa_ext.SWAAConfig, got {type(config).__name__}")
    return {"swaa": config.to_dict()}
