"""Wall-clock timing (median of repeats) and the machine facts recorded with every result."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def time_calls(fn: Callable[[], object], repeats: int, slow_s: float = 5.0) -> list[float]:
    """Wall-clock seconds of up to `repeats` calls of `fn` after one untimed warm-up (which also
    pays any compilation). Stops after a call slower than `slow_s`: long runs vary little."""
    fn()
    times: list[float] = []
    while len(times) < repeats and (not times or times[-1] <= slow_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The machine's practical fp32 ceiling: an (n x n) . (n x n) matmul on all torch threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = time_calls(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / min(times) / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1_5_15": list(os.getloadavg()),
    }
