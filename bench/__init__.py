"""Benchmarks for swaa_ext: `python -m bench.kernels` (kernel-level, side by side with baselines)."""
