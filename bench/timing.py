"""Wall-clock timing (median of repeats) and the machine facts recorded with every result."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def time_calls(fn: Callable[[], object], repeats: int, slow_s: float = 5.0,
               warmup: bool = True) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of up to `repeats` calls of `fn` after one untimed
    warm-up (which also pays any compilation). Stops after a call slower than `slow_s`: long runs
    vary little. CPU time (all threads) stays meaningful when other jobs share the cores."""
    if warmup:
        fn()
    wall: list[float] = []
    cpu: list[float] = []
    while len(wall) < repeats and (not wall or wall[-1] <= slow_s):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def median(times: list[float]) -> float:
    return statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """The machine's practical fp32 ceiling: an (n x n) . (n x n) matmul on all torch threads.
    Returns (by wall time, by CPU time times the thread count), best of `repeats`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    wall, cpu = time_calls(lambda: torch.mm(a, b), repeats)
    flops = 2 * n**3
    return flops / min(wall) / 1e9, flops / (min(cpu) / torch.get_num_threads()) / 1e9


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
