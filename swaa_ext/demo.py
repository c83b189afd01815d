"""`make demo`: sliding_attention side by side with SDPA on one long sequence.

Prints the agreement with SDPA (same rule as a dense boolean mask) and the forward times.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import swaa_ext
from swaa_ext import reference


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--sinks", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    L, W, S = args.length, args.window, args.sinks
    q = torch.randn(1, 16, L, 64)
    k, v = torch.randn(1, 4, L, 64), torch.randn(1, 4, L, 64)
    mask = reference.visible(L, L, W, S)

    ours = swaa_ext.sliding_attention(q, k, v, W, S)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    err = (ours - sdpa).abs().max().item()
    t_ours = timed(lambda: swaa_ext.sliding_attention(q, k, v, W, S), args.repeats)
    t_mask = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                          enable_gqa=True), args.repeats)
    t_causal = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                            enable_gqa=True), args.repeats)
    print(f"fp32, B=1, 16 query / 4 KV heads, D=64, L={L}, window={W}, sinks={S}, "
          f"{torch.get_num_threads()} threads")
    print(f"max |swaa_ext - SDPA(mask)| = {err:.2e}")
    print(f"{'swaa_ext.sliding_attention':32s} {t_ours * 1e3:9.1f} ms")
    print(f"{'SDPA, dense boolean mask':32s} {t_mask * 1e3:9.1f} ms  ({t_mask / t_ours:.1f}x slower)")
    print(f"{'SDPA, full causal':32s} {t_causal * 1e3:9.1f} ms  ({t_causal / t_ours:.1f}x slower)")
    if err > 1e-4:
        raise SystemExit(f"mismatch with SDPA: {err:.2e}")


if __name__ == "__main__":
    main()
