import importlib.util
import os
import sys

# Tests run against the in-place build (make build), not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# tests/vllm runs in vLLM's own venv (make test-vllm); elsewhere it is not collected.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm"]
