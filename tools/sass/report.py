"""Builds the report (table, JSON, Markdown) and checks a fresh one against the committed JSON."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import subprocess

from . import build, decode, loops, model, sass
from .machines import MACHINES

KERNELS = ("forward_kernel", "dkdv_kernel", "dq_kernel", "decode_kernel")
REGRESSION = 0.10  # hot-loop instruction count growth that fails sass-check
# SASS instructions per HMMA in the unmasked hot loop on sm_80 that sass-check holds each kernel
# to, per head dim: the forward where it stands, the others at their targets (docs/sass-report.md,
# "Targets").
TARGET_ARCH = "sm_80"
TARGETS = {("forward", 64): 5.2, ("forward", 128): 5.0, ("dkdv", 64): 5.0, ("dkdv", 128): 5.0,
           ("dq", 64): 4.0, ("dq", 128): 4.0, ("decode", 64): 6.0, ("decode", 128): 6.0}
GOALS: dict[tuple[str, int], float] = {}  # targets not met yet, shown beside TARGETS
# The A100 tensor-core bound (the model's estimate) that sass-check holds every kernel to on
# TARGET_ARCH.
MIN_TENSOR_BOUND = 0.80
NOTE = ("Static analysis of nvcc output; nothing here ran on a GPU. Instruction counts are exact "
        "for the SASS read; the utilisation bounds are estimates from a stated machine model "
        "(tools/sass/model.py, machines.py), upper bounds that ignore latency and stalls.")


def kernel_kind(mangled: str) -> str | None:
    return next((k.removesuffix("_kernel") for k in KERNELS if k in mangled), None)


def row_kernel(kind: str, direction: str) -> str:
    """The report's name of a kernel: its kind, "_paged" for the variants reading K/V through a
    block table (the forward_paged / decode_paged instantiations)."""
    return kind + "_paged" if direction.endswith("_paged") else kind


def tool_version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"\bV(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


def analyse(nvcc: str, nvdisasm: str, cuobjdump: str, out_dir: str, log=print) -> dict:
    sources = {p: open(p).read() for p in glob.glob(os.path.join(build.CUDA_DIR, "*.cuh"))}
    ranges = loops.mask_ranges(sources)
    tile_traits = build.traits(nvcc, out_dir)
    rows = []
    for inst in build.instantiations():
        for arch in build.ARCHS:
            cubin, log_text = build.compile_cubin(nvcc, inst, arch, out_dir)
            ptxas = build.parse_ptxas(log_text)
            usage = build.res_usage(cuobjdump, cubin)
            functions = sass.parse(sass.disassemble(nvdisasm, cubin))
            for name, fn in sorted(functions.items()):
                kind = kernel_kind(name)
                if kind is None or name not in ptxas:
                    continue
                counts = loops.count(fn, ranges)
                t = tile_traits[(kind, inst.dtype, inst.head_dim)]
                p = ptxas[name]
                if usage.get(name, {}).get("registers") != p.registers:
                    raise SystemExit(f"sass-report: {name}: ptxas says {p.registers} registers, "
                                     f"cuobjdump -res-usage {usage.get(name)}")
                row = {
                    "kernel": row_kernel(kind, inst.direction), "dtype": inst.dtype, "head_dim": inst.head_dim, "arch": arch,
                    "source": os.path.relpath(inst.source, build.ROOT),
                    "registers": p.registers, "stack_bytes": p.stack_bytes,
                    "spill_store_bytes": p.spill_store_bytes,
                    "spill_load_bytes": p.spill_load_bytes,
                    "local_bytes": usage[name]["local_bytes"],
                    "tile": {k: t[k] for k in ("warps", "block_m", "block_n", "stages",
                                                "smem_bytes")},
                    "sass_instructions": len(fn.instructions),
                }
                if counts:
                    loop = dataclasses.asdict(counts)
                    if inst.direction.endswith("_paged"):
                        loop.update(paged_row_loop(counts, t))
                    loop.update(start=hex(counts.start), end=hex(counts.end),
                                per_hmma_unmasked=round(counts.per_hmma_unmasked, 2),
                                per_hmma_masked=round(counts.per_hmma_masked, 2),
                                flops_per_warp=counts.flops,
                                groups=loops.group_counts(counts.by_mnemonic))
                    row["hot_loop"] = loop
                    row["estimate"] = model.estimate(MACHINES[arch], counts, p, t)
                rows.append(row)
                log(table_row(row))
    return {"note": NOTE, "nvcc": tool_version(nvcc), "nvdisasm": tool_version(nvdisasm),
            "cuobjdump": tool_version(cuobjdump),
            "nvcc_flags": list(build.NVCC_FLAGS),
            "machines": {a: dataclasses.asdict(m) for a, m in MACHINES.items()},
            "kernels": rows, "decode_launch": decode.launch_shapes(
                nvcc, out_dir, tile_traits[("forward", "fp16", decode.HEAD_DIM)]["block_m"])}


def paged_row_loop(counts: loops.LoopCounts, traits: dict) -> dict:
    """The paged variants load each thread's K/V rows of a tile in a rolled loop (one page lookup
    per row: tile_load.cuh, PagedKVSource), which the static count holds once. Its body runs once
    per row a thread copies: the count per tile the key loop really issues is the static one plus
    (rows - 1) bodies."""
    rows = (traits["block_n"] * traits["head_dim"] * traits["element_bytes"] // 16
            // (traits["warps"] * 32))
    extra = (rows - 1) * counts.inner_loop_body
    return {"rows_per_thread": rows,
            "instructions_unmasked_issued": counts.instructions_unmasked + extra,
            "per_hmma_unmasked_issued": round((counts.instructions_unmasked + extra)
                                              / counts.hmma, 2)}


HEADER = (f"{'kernel':<14}{'dtype':<6}{'D':>4} {'arch':<6}{'regs':>5}{'spill':>6}{'smem KiB':>9}"
          f"{'blk/SM r,s':>11}{'loop ins u/m':>13}{'HMMA':>5}{'ins/HMMA u/m':>14}"
          f"{'smem B/F':>9}{'gl B/F':>8}{'bound':>7} limiter")


def table_row(r: dict) -> str:
    loop, est = r.get("hot_loop"), r.get("estimate")
    spill = r["spill_store_bytes"] + r["spill_load_bytes"]
    head = (f"{r['kernel']:<14}{r['dtype']:<6}{r['head_dim']:>4} {r['arch']:<6}{r['registers']:>5}"
            f"{spill:>6}")
    if not loop:
        return head + "  (no HMMA loop)"
    return head + (
        f"{est['smem_per_block_bytes'] / 1024:>9.1f}"
        f"{est['blocks_per_sm_by_registers']:>6},{est['blocks_per_sm_by_smem']:<4}"
        f"{loop['instructions_unmasked']:>7}/{loop['instructions_masked']:<5}{loop['hmma']:>5}"
        f"{loop['per_hmma_unmasked']:>8.1f}/{loop['per_hmma_masked']:<5.1f}"
        f"{est['smem_bytes_per_flop']:>9.3f}{est['global_bytes_per_flop']:>8.4f}"
        f"{est['tensor_utilisation_bound']:>7.0%} {est['limited_by']}")


def markdown(report: dict) -> str:
    lines = [
        "# Static performance report of the CUDA kernels (`make sass-report`)", "",
        "Generated by `tools/sass` (do not edit by hand). " + report["note"],
        "", f"nvcc {report['nvcc']}, nvdisasm {report['nvdisasm']}, flags "
        f"`{' '.join(report['nvcc_flags'])}` (setup.py's plus torch's), one cubin per arch.", "",
        "| kernel | dtype | D | arch | regs | spill B | smem/block KiB | blocks/SM (regs, smem) | "
        "warps/SM | loop instr. unmasked / masked | HMMA | instr./HMMA unmasked / masked | "
        "smem B/FLOP | global B/FLOP | tensor-core bound (issue, smem, L2) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["kernels"]:
        loop, est = r.get("hot_loop"), r.get("estimate")
        if not loop:
            continue
        b = est["bound"]
        lines.append(
            f"| {r['kernel']} | {r['dtype']} | {r['head_dim']} | {r['arch']} | {r['registers']} | "
            f"{r['spill_store_bytes'] + r['spill_load_bytes']} | "
            f"{est['smem_per_block_bytes'] / 1024:.1f} | {est['blocks_per_sm']} "
            f"({est['blocks_per_sm_by_registers']}, {est['blocks_per_sm_by_smem']}) | "
            f"{est['warps_per_sm']} | {loop['instructions_unmasked']} / "
            f"{loop['instructions_masked']} | {loop['hmma']} | {loop['per_hmma_unmasked']:.1f} / "
            f"{loop['per_hmma_masked']:.1f} | {est['smem_bytes_per_flop']:.3f} | "
            f"{est['global_bytes_per_flop']:.4f} | **{est['tensor_utilisation_bound']:.0%}** "
            f"({b['issue']:.0%}, {b['shared_memory']:.0%}, {b['l2']:.0%}) |")
    lines += ["", "## Targets", "",
              f"SASS instructions per HMMA in the unmasked hot loop on {TARGET_ARCH} (fp16 = bf16) "
              "that `make sass-check` holds each kernel to (tools/sass/report.py, TARGETS); it "
              f"also holds every kernel's tensor-core bound there to at least "
              f"{MIN_TENSOR_BOUND:.0%} (MIN_TENSOR_BOUND).", "",
              "| kernel | D | now | held to | goal |", "|---|---|---|---|---|"]
    for (kernel, head_dim), target in TARGETS.items():
        now = next((r["hot_loop"]["per_hmma_unmasked"] for r in report["kernels"]
                    if (r["kernel"], r["head_dim"], r["arch"]) == (kernel, head_dim, TARGET_ARCH)
                    and r.get("hot_loop")), None)
        goal = GOALS.get((kernel, head_dim), target)
        lines.append(f"| {kernel} | {head_dim} | {now} | {target} | {goal}"
                     f"{'' if now is not None and now <= goal else ' (not met)'} |")
    lines += paged_markdown(report)
    lines += [""] + decode.markdown(report.get("decode_launch", []))
    lines += ["## How to read it", "", HOW_TO_READ, "## Machine model (assumed, not measured)",
              "", "| | " + " | ".join(m["name"] for m in report["machines"].values()) + " |",
              "|---|" + "---|" * len(report["machines"])]
    for field in MACHINE_FIELDS:
        lines.append(f"| {field} | " + " | ".join(
            f"{m[field]:g}" if isinstance(m[field], float) else str(m[field])
            for m in report["machines"].values()) + " |")
    return "\n".join(lines) + "\n"


def paged_markdown(report: dict) -> list[str]:
    """What reading K/V through the block table adds per key tile, on TARGET_ARCH (fp16)."""
    rows = {(r["kernel"], r["head_dim"]): r["hot_loop"] for r in report["kernels"]
            if r["arch"] == TARGET_ARCH and r["dtype"] == "fp16" and r.get("hot_loop")}
    lines = ["", "## Paged variants", "",
             "The `*_paged` kernels read K/V through the block table (`PagedKVSource`, "
             "tile_load.cuh): per row a thread copies, one block-table load and the page's "
             "address, in a loop kept rolled (unrolled, it spills the forward). The table above "
             f"counts that loop's body once; per key tile it runs once per row. On {TARGET_ARCH}, "
             "unmasked path, against the packed kernel:", "",
             "| kernel | D | packed | paged, static | rows per thread | row-loop body | "
             "paged, issued per tile | instr./HMMA issued |", "|---|---|---|---|---|---|---|---|"]
    for (kernel, head_dim), loop in sorted(rows.items()):
        if not kernel.endswith("_paged") or "instructions_unmasked_issued" not in loop:
            continue
        packed = rows.get((kernel.removesuffix("_paged"), head_dim), {})
        lines.append(f"| {kernel} | {head_dim} | {packed.get('instructions_unmasked')} | "
                     f"{loop['instructions_unmasked']} | {loop['rows_per_thread']} | "
                     f"{loop['inner_loop_body']} | {loop['instructions_unmasked_issued']} | "
                     f"{loop['per_hmma_unmasked_issued']} |")
    return lines


MACHINE_FIELDS = ("arch", "sms", "clock_ghz", "tensor_flops_per_clk_sm", "schedulers_per_sm",
                  "smem_bytes_per_clk_sm", "l2_bytes_per_s", "registers_per_sm", "register_unit",
                  "max_warps_per_sm", "smem_per_sm", "smem_per_block_max",
                  "smem_reserved_per_block")
HOW_TO_READ = """\
- **Hot loop**: the loop (a backward branch, found in the SASS) that holds the most HMMA; one trip
  is one key tile (dK/dV: one query tile) per warp. Counts are static: each instruction in the
  loop's address range once. The copy loops inside it have a runtime trip count; their unrolled
  body and remainder are each counted once (`inner_loops` in the JSON).
- **Masked** = the whole loop body (an edge tile runs it all). **Unmasked** = the body minus the
  block the kernel's mask branch skips: the forward conditional branch inside the loop whose
  skipped instructions mostly come from `apply_mask` / `apply_mask_transposed` /
  `apply_mask_packed` (their inlined source lines, `nvcc -lineinfo`, `nvdisasm -gi`), including
  the 32-bit tile rule each computes on entry. Exact: an instruction the compiler merged into that
  block from another source line runs only on edge tiles, and mask set-up hoisted above the
  branch runs on every tile (a loop without such a branch would fall back to the line info).
- **Blocks per SM**: by registers (4 SM quarters of 16K registers, warps allocated in units of
  256 registers), by shared memory (dynamic `kSmemBytes` from the traits + static + 1 KiB
  reserved per block; A100 164 KiB per SM, H100 228 KiB), and the smaller of the two.
- **Bytes per FLOP**: shared memory = ldmatrix/LDS/STS bytes of one unmasked trip (SASS) plus the
  warp's share of the block's cp.async writes (traits), per tensor FLOP of the trip (HMMA × 4096);
  global = the tiles the block streams per trip over the block's FLOPs (read from L2).
- **Tensor-core bound**: the smallest of three ceilings, each assuming everything else perfect:
  issue (HMMA × clocks per HMMA / instructions, 8 clocks on A100, 4 on H100 at its dense peak),
  shared memory (128 B/clk per SM), L2 (~5 TB/s A100, ~10 TB/s H100: rough); each capped at
  100 %. fp16 and bf16 compile to the same counts. No latency, stall
  or bank-conflict model; on H100 the peak is wgmma's, which mma.sync does not reach. **An
  estimate, not a measurement.**
- **\*_paged** rows: the same kernels reading K/V through a block table; their counts and
  bounds are static (the rolled row loop once): the "Paged variants" section gives what a tile
  issues.
- **decode** rows: the split-KV decode kernel (len_q <= 16) has twice the forward's key tiles
  (128 keys at D=64, 64 at D=128) and one 16-row m-tile per warp (64 packed rows per block), so
  one trip is one key tile of twice the keys; its tensor-core bound is moot: with
  1-16 queries most of its MMA rows are padding and a decode step is bound by reading K/V from
  memory. What matters there is the launch shape (the section above) and the instruction count
  per key tile.
"""


def check(fresh: dict, committed: dict) -> list[str]:
    """Failures: any spill, a hot loop over REGRESSION above the committed count, or on
    TARGET_ARCH a kernel above its TARGETS or below MIN_TENSOR_BOUND."""
    key = lambda r: (r["kernel"], r["dtype"], r["head_dim"], r["arch"])  # noqa: E731
    old = {key(r): r for r in committed["kernels"]}
    failures = []
    for r in fresh["kernels"]:
        name = "{} {} D={} {}".format(*key(r))
        if r["spill_store_bytes"] or r["spill_load_bytes"]:
            failures.append(f"{name}: spills {r['spill_store_bytes']} B stores, "
                            f"{r['spill_load_bytes']} B loads")
        before = old.get(key(r), {}).get("hot_loop")
        now = r.get("hot_loop")
        target = TARGETS.get((r["kernel"], r["head_dim"]))
        if now and target and r["arch"] == TARGET_ARCH and now["per_hmma_unmasked"] > target:
            failures.append(f"{name}: {now['per_hmma_unmasked']} instructions per HMMA, "
                            f"target {target}")
        bound = (r.get("estimate") or {}).get("tensor_utilisation_bound")
        if bound is not None and r["arch"] == TARGET_ARCH and bound < MIN_TENSOR_BOUND:
            failures.append(f"{name}: tensor-core bound {bound:.1%}, at least "
                            f"{MIN_TENSOR_BOUND:.0%} wanted")
        if not (before and now):
            continue
        for path in ("instructions_unmasked", "instructions_masked"):
            if now[path] > before[path] * (1 + REGRESSION):
                failures.append(f"{name}: hot loop {path} {before[path]} -> {now[path]} "
                                f"(> {REGRESSION:.0%} up)")
    return failures
