"""Our name in transformers' two global registries: the attention function and the mask function.
Registered when transformers' modeling code loads (swaa_ext/_transformers_hook.py), so that
`from_pretrained(..., attn_implementation="swaa")` is accepted once swaa_ext is imported."""

from __future__ import annotations

from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from .attention import ATTN_IMPLEMENTATION, swaa_attention_forward
from .mask import swaa_mask


def register() -> None:
    # Both registries are keyed by name; registering again just rebinds the same name.
    AttentionInterface.register(ATTN_IMPLEMENTATION, swaa_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, swaa_mask)
