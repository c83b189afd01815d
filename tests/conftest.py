import importlib.util
import os
import sys

# Tests run against the in-place build (make build), not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_VLLM_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm")


def pytest_ignore_collect(collection_path, config):
    """tests/vllm runs in vLLM's own venv (make test-vllm); elsewhere it is not collected."""
    return True if str(collection_path) == _VLLM_TESTS and not _vllm_installed() else None


def _vllm_installed() -> bool:
    # Not just find_spec: with tests/ on sys.path, tests/vllm itself imports as a namespace
    # package named vllm (no origin).
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None
