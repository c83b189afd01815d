"""transformers integration: adapt a model to sink + sliding-window attention and back.

    model = swaa_ext.adapt(model, swaa_ext.preset("swa_sinks_fa_decode_half"))
    model.generate(ids, attention_mask=mask)           # prompt slides, generated tokens see all
    model(ids, swaa_full_from=prompt_len)               # the same boundary on a plain forward
    cache = SWAACache(model.config)                     # sinks + window cache for window-only layers
    cache_memory(cache).saved_bytes                     # ... and what it saves
    swaa_ext.restore(model)

Pieces: mask.py (AttentionMaskInterface entry: per-row padding), attention.py (AttentionInterface
entry: per-layer window/sinks/FA decode), cache.py (SinkWindowLayer, SWAACache), adapt.py
(switching, the generate and save wrappers), registration.py (the two registries),
pretrained.py (offline SmolLM2 loader).
"""

from .adapt import adapt, is_adapted, restore
from .attention import ATTN_IMPLEMENTATION, FULL_FROM_KWARG, prompt_boundary
from .cache import CacheMemory, SWAACache, cache_memory
from .registration import register

register()

__all__ = ["ATTN_IMPLEMENTATION", "FULL_FROM_KWARG", "CacheMemory", "SWAACache", "adapt",
           "cache_memory", "is_adapted", "prompt_boundary", "restore"]
