"""transformers integration: adapt a model to sink + sliding-window attention and back."""

from .adapt import ATTN_IMPLEMENTATION, adapt, restore
from .attention import FULL_FROM_KWARG, prompt_boundary

__all__ = ["ATTN_IMPLEMENTATION", "FULL_FROM_KWARG", "adapt", "prompt_boundary", "restore"]
