"""transformers integration: adapt a model to sink + sliding-window attention and back."""

from .adapt import ATTN_IMPLEMENTATION, adapt, restore
from .attention import FULL_FROM_KWARG, prompt_boundary
from .cache import CacheMemory, SWAACache, cache_memory

__all__ = ["ATTN_IMPLEMENTATION", "FULL_FROM_KWARG", "CacheMemory", "SWAACache", "adapt",
           "cache_memory", "prompt_boundary", "restore"]
