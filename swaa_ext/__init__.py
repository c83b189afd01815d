"""swaa_ext: sink + sliding-window attention kernels and SWAA model adaptation."""

from . import _transformers_hook, reference
from .config import PRESETS, SWAAConfig, preset
from .ops import sliding_attention

__all__ = ["sliding_attention", "reference", "SWAAConfig", "PRESETS", "preset", "adapt",
           "restore"]
__version__ = "0.1.0"

_transformers_hook.install()  # `attn_implementation="swaa"` works once swaa_ext is imported


def __getattr__(name: str):
    # adapt/restore import transformers; load it only when they are used.
    if name in ("adapt", "restore"):
        from . import hf
        return getattr(hf, name)
    raise AttributeError(f"module 'swaa_ext' has no attribute {name!r}")
