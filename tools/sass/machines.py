"""The machine model: per-SM limits and rates of the two GPUs the report bounds. Assumptions, not
measurements; the sources are NVIDIA's A100/H100 whitepapers and the CUDA occupancy calculator,
except the L2 bandwidths, which are rough public microbenchmark figures (they vary by 30 %+)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Machine:
    name: str
    arch: str  # the cubin it runs
    sms: int
    clock_ghz: float  # the clock NVIDIA quotes its dense tensor peak at
    tensor_flops_per_clk_sm: int  # dense fp16/bf16, fp32 accumulate
    schedulers_per_sm: int  # one instruction issued per scheduler per clock
    smem_bytes_per_clk_sm: int
    l2_bytes_per_s: float  # L2 -> SMs, whole chip (rough)
    registers_per_sm: int
    max_registers_per_thread: int
    register_unit: int  # per-warp allocation granularity (registers)
    max_warps_per_sm: int
    max_blocks_per_sm: int
    smem_per_sm: int  # bytes available to blocks
    smem_per_block_max: int
    smem_reserved_per_block: int

    @property
    def peak_tflops(self) -> float:
        return self.sms * self.tensor_flops_per_clk_sm * self.clock_ghz / 1e3

    @property
    def clocks_per_hmma(self) -> float:
        """Tensor-core clocks one m16n8k16 (4096 FLOPs) occupies on one scheduler's quarter."""
        return 4096 / (self.tensor_flops_per_clk_sm / self.schedulers_per_sm)


A100 = Machine(
    name="A100 (SXM4)", arch="sm_80", sms=108, clock_ghz=1.41, tensor_flops_per_clk_sm=2048,
    schedulers_per_sm=4, smem_bytes_per_clk_sm=128, l2_bytes_per_s=5.0e12,
    registers_per_sm=65536, max_registers_per_thread=255, register_unit=256,
    max_warps_per_sm=64, max_blocks_per_sm=32, smem_per_sm=164 * 1024,
    smem_per_block_max=163 * 1024, smem_reserved_per_block=1024)
# H100 SXM5. Its dense peak is wgmma's; mma.sync (what these sm_80-style kernels issue) is
# reported to reach well under it, so the H100 bounds are against a peak these kernels cannot hit.
H100 = Machine(
    name="H100 (SXM5)", arch="sm_90", sms=132, clock_ghz=1.83, tensor_flops_per_clk_sm=4096,
    schedulers_per_sm=4, smem_bytes_per_clk_sm=128, l2_bytes_per_s=10.0e12,
    registers_per_sm=65536, max_registers_per_thread=255, register_unit=256,
    max_warps_per_sm=64, max_blocks_per_sm=32, smem_per_sm=228 * 1024,
    smem_per_block_max=227 * 1024, smem_reserved_per_block=1024)
MACHINES = {m.arch: m for m in (A100, H100)}
