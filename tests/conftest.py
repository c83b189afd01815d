import importlib.util
import os
import sys

# Tests run against the in-place build (make build), not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_VLLM_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm_plugin")


def pytest_ignore_collect(collection_path, config):
    """tests/vllm_plugin runs in vLLM's own venv (make test-vllm); elsewhere it is not
    collected."""
    if str(collection_path) == _VLLM_TESTS and importlib.util.find_spec("vllm") is None:
        return True
    return None
