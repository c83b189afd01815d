"""Occupancy, bytes per FLOP and upper bounds on tensor-core utilisation from the static counts.

An estimate, not a measurement. Each bound assumes everything else is perfect:
- issue: every SASS instruction takes one issue slot of its warp's scheduler, and the tensor
  core behind that scheduler is busy `clocks_per_hmma` per HMMA (8 on A100, 4 on H100), so a
  loop trip of N instructions and H HMMA can keep it busy at most H * clocks_per_hmma / N
  (unmasked path). No latency, dependency, bank-conflict or barrier stall is modelled.
- shared memory: per warp-trip, the ldmatrix/LDS bytes of the unmasked path (from the SASS) plus
  the warp's share of the block's cp.async writes (the streamed tiles, from the traits), at
  128 B/clk per SM, against the SM's tensor FLOPs per clock.
- L2: the streamed tiles (traits) per block-trip are read from L2 once (no L1 reuse), at the
  chip's L2 bandwidth (machines.py, rough), against its dense peak.
HBM is not bounded: the window's K/V (and Q/dO in dK/dV) stay in L2 across neighbouring blocks.
"""

from __future__ import annotations

from .build import PtxasFunction
from .loops import LoopCounts
from .machines import Machine


def blocks_by_registers(m: Machine, registers: int, warps: int) -> int:
    per_warp = -(-registers * 32 // m.register_unit) * m.register_unit
    per_scheduler = m.registers_per_sm // m.schedulers_per_sm  # each SM quarter's register file
    warps_per_sm = (per_scheduler // per_warp) * m.schedulers_per_sm
    return min(warps_per_sm, m.max_warps_per_sm) // warps


def blocks_by_smem(m: Machine, smem_bytes: int) -> int:
    if smem_bytes > m.smem_per_block_max:
        return 0
    return min(m.smem_per_sm // (smem_bytes + m.smem_reserved_per_block), m.max_blocks_per_sm)


def streamed_bytes(traits: dict) -> int:
    """Bytes one block copies global -> shared per loop trip: two tiles of streamed_rows x D
    (K, V or Q, dO), plus dK/dV's LSE and delta rows (float)."""
    tiles = 2 * traits["streamed_rows"] * traits["head_dim"] * traits["element_bytes"]
    rows = 2 * traits["block_m"] * 4 if traits["kernel"] == "dkdv" else 0
    return tiles + rows


def estimate(m: Machine, counts: LoopCounts, ptxas: PtxasFunction, traits: dict) -> dict:
    warps = traits["warps"]
    smem_block = traits["smem_bytes"] + ptxas.static_smem_bytes
    by_regs = blocks_by_registers(m, ptxas.registers, warps)
    by_smem = blocks_by_smem(m, smem_block)
    blocks = min(by_regs, by_smem, m.max_blocks_per_sm)
    copy_bytes = streamed_bytes(traits)
    smem_bytes_warp = counts.smem_read_bytes_unmasked + counts.smem_write_bytes_unmasked \
        + copy_bytes / warps
    smem_bpf = smem_bytes_warp / counts.flops
    global_bpf = copy_bytes / (counts.flops * warps)
    issue = counts.hmma * m.clocks_per_hmma / counts.instructions_unmasked
    smem = m.smem_bytes_per_clk_sm / (m.tensor_flops_per_clk_sm * smem_bpf)
    l2 = m.l2_bytes_per_s / (m.peak_tflops * 1e12 * global_bpf)
    bounds = {"issue": issue, "shared_memory": smem, "l2": l2}
    limiter = min(bounds, key=bounds.get)
    return {
        "machine": m.name,
        "smem_per_block_bytes": smem_block,
        "blocks_per_sm_by_registers": by_regs,
        "blocks_per_sm_by_smem": by_smem,
        "blocks_per_sm": blocks,
        "warps_per_sm": blocks * warps,
        "smem_bytes_per_flop": round(smem_bpf, 4),
        "global_bytes_per_flop": round(global_bpf, 5),
        "bound": {k: round(min(v, 1.0), 3) for k, v in bounds.items()},
        "tensor_utilisation_bound": round(min(1.0, bounds[limiter]), 3),
        "limited_by": limiter,
    }
