"""swaa_ext: sink + sliding-window attention kernels and SWAA model adaptation."""

from . import reference
from .ops import sliding_attention

__all__ = ["sliding_attention", "reference"]
__version__ = "0.1.0"
