"""Timing and memory measurement around one generate call: prefill time (until the first token's
logits exist), decode time (the rest), peak memory, and the KV-cache size at the end."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import LogitsProcessor

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_libc = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


class StepClock(LogitsProcessor):
    """generate calls its logits processors once per new token, right after that token's forward
    pass: the first call marks the end of prefill. Scores pass through unchanged."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.stamps.append(time.perf_counter())
        return scores


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


class PeakMemory:
    """Peak memory above the starting level while the block runs. On CUDA: the allocator's peak.
    On CPU: resident set size sampled every `interval` s, after handing freed heap pages back to
    the OS (malloc_trim) so that one run's leftovers do not hide the next run's growth."""

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.peak_bytes: int | None = None

    @contextmanager
    def track(self) -> Iterator["PeakMemory"]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - base
            return
        if _libc is not None and hasattr(_libc, "malloc_trim"):
            _libc.malloc_trim(0)
        base = _rss_bytes()
        if base is None:
            yield self
            return
        peak, stop = [base], threading.Event()

        def sample() -> None:
            while not stop.wait(self.interval):
                peak[0] = max(peak[0], _rss_bytes() or 0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            stop.set()
            sampler.join()
            self.peak_bytes = max(peak[0], _rss_bytes() or 0) - base


def cache_bytes(cache: Any) -> int:
    """Bytes held by the key/value tensors of a transformers cache (any layer type)."""
    total, seen = 0, set()
    for layer in getattr(cache, "layers", ()):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total
