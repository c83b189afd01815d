"""swaa_ext: sink + sliding-window attention kernels and SWAA model adaptation."""

import importlib

from . import _transformers_hook, reference
from .config import PRESETS, SWAAConfig, preset
from .ops import (amx_kv_layout_fits, cpu_has_amx, sliding_attention, sliding_attention_paged,
                  sliding_attention_varlen, write_paged_cache)

__all__ = ["sliding_attention", "sliding_attention_varlen", "sliding_attention_paged", "write_paged_cache",
           "cpu_has_amx", "amx_kv_layout_fits",
           "reference", "SWAAConfig", "PRESETS", "preset", "adapt", "restore"]
__version__ = "0.1.0"

_transformers_hook.install()  # `attn_implementation="swaa"` works once swaa_ext is imported


def __getattr__(name: str):
    # adapt/restore import transformers; load it only when they are used.
    if name in ("adapt", "restore"):
        from . import hf
        return getattr(hf, name)
    # emulated loads _C_emulated, built only where the CUDA headers were found (setup.py).
    if name == "emulated":
        try:  # import_module, not `from . import`: that would call this __getattr__ again
            return importlib.import_module(".emulated", __name__)
        except ImportError as e:
            raise AttributeError(f"swaa_ext.emulated is unavailable: {e} (swaa_ext was built "
                                 "without the CUDA headers; see setup.py's build line)") from e
    raise AttributeError(f"module 'swaa_ext' has no attribute {name!r}")
