"""Training examples from distilled records, and the packing collator.

An example is prompt + response; the loss covers the response only (prompt labels are -100). The
mask is the inference mask: prompt tokens slide, and with FA decode the response tokens attend
to everything, so each example's `full_from` is its prompt length. The collator packs examples
into one row with transformers' `DataCollatorWithFlattening` (its flash-attention kwargs tell the
SWAA attention where each example starts: one varlen call per layer, no padding) and adds
`swaa_full_from`, one boundary per packed example, relative to its start (hf/ragged.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DataCollatorWithFlattening

from ...hf.attention import FULL_FROM_KWARG

IGNORE = -100


def to_features(record: dict, max_context: int) -> dict:
    """{prompt_ids, response_ids} -> {input_ids, labels, prompt_len}."""
    prompt, response = list(record["prompt_ids"]), list(record["response_ids"])
    if not response:
        raise ValueError(f"example {record.get('id', '?')} has an empty response")
    if len(prompt) + len(response) > max_context:
        raise ValueError(f"example {record.get('id', '?')} has {len(prompt) + len(response)} "
                         f"tokens, more than the model's context of {max_context}")
    return {"input_ids": prompt + response, "labels": [IGNORE] * len(prompt) + response,
            "prompt_len": len(prompt)}


class PackedCollator:
    """Packs a list of examples into one row (no padding) with per-example FA decode
    boundaries when `fa_decode` is on (else every token slides, as in inference)."""

    def __init__(self, fa_decode: bool) -> None:
        self.fa_decode = fa_decode
        self.flatten = DataCollatorWithFlattening(return_flash_attn_kwargs=True)

    def __call__(self, features: Sequence[dict]) -> dict:
        batch = self.flatten([{"input_ids": f["input_ids"], "labels": f["labels"]}
                              for f in features], return_tensors="pt")
        if self.fa_decode:
            batch[FULL_FROM_KWARG] = torch.tensor([f["prompt_len"] for f in features],
                                                  dtype=torch.int64)
        return batch
