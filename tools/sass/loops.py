"""The hot key loop of a kernel and what one trip of it costs, counted statically.

Loops are found from back-edges: a BRA whose target lies at or before it closes the loop
[target, branch]. The key loop is the one that holds the most HMMA (ties: the innermost), one trip
of it being one key tile (query tile for dK/dV) per warp. Static count = every instruction in the
loop's address range once, so a copy loop with a runtime trip count inside it counts its unrolled
body and its remainder once each (reported as `inner_loops`).

Masked path = the whole body. Unmasked path = the body minus the instructions that only the edge
tiles run. Those are found from the control flow where the kernel branches around its mask: the
instructions a forward conditional branch inside the body skips, when most of them come from a
mask function (their inline chain, nvcc -lineinfo / nvdisasm -gi, passes through the body of one
of MASK_FUNCTIONS, found by name in the kernel sources). That is exact either way the compiler
moves code: an instruction it merged into the masked block from elsewhere (line info names the
other source line) runs only on edge tiles, and mask set-up it hoisted before the branch runs on
every tile. A loop with no such branch falls back to the line-info attribution alone. No markers
are emitted into the kernel: the kernels keep all PTX inside the SIMT layer
(docs/architecture.md, "Testing CUDA kernels without a GPU").
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re

from .sass import Function, Instruction

MASK_FUNCTIONS = ("apply_mask", "apply_mask_transposed", "apply_mask_packed")
FLOPS_PER_HMMA = 2 * 16 * 8 * 16  # mma.sync m16n8k16: 4096
# Integer / address / predicate work (uniform-datapath U* forms included); the rest is grouped
# as float, memory, hmma or other (branches, barriers, conversions, shuffles).
INTEGER = {"IMAD", "IADD3", "ISETP", "LOP3", "LEA", "SHF", "SEL", "IABS", "IMNMX", "MOV", "PRMT",
           "ULDC", "UMOV", "UIADD3", "ULOP3", "UISETP", "USHF", "ULEA", "UIMAD", "USEL", "P2R",
           "R2P", "PLOP3", "S2R", "S2UR", "CS2R", "BMSK", "FLO", "POPC", "VIADD", "VIMNMX"}
FLOAT = {"FFMA", "FMUL", "FADD", "FMNMX", "FSETP", "FSEL", "F2FP", "FCHK", "FSET", "FMNMX3"}


@dataclasses.dataclass(frozen=True)
class Loop:
    start: int  # address of the first instruction
    end: int  # address of the back-edge branch


def function_lines(source: str, name: str) -> tuple[int, int] | None:
    """1-based line range of the definition of function `name` in `source` text (signature line
    to the closing brace in column 0)."""
    lines = source.splitlines()
    signature = re.compile(rf"\b(void|float|int)\s+{re.escape(name)}\s*\(")
    for i, line in enumerate(lines):
        if signature.search(line):
            for j in range(i, len(lines)):
                if lines[j].startswith("}"):
                    return i + 1, j + 1
    return None


def mask_ranges(sources: dict[str, str]) -> dict[str, list[tuple[int, int]]]:
    """{file basename: [(first, last) line of each mask function defined there]}."""
    out: dict[str, list[tuple[int, int]]] = {}
    for path, text in sources.items():
        for name in MASK_FUNCTIONS:
            found = function_lines(text, name)
            if found:
                out.setdefault(os.path.basename(path), []).append(found)
    return out


def is_mask_only(ins: Instruction, ranges: dict[str, list[tuple[int, int]]]) -> bool:
    return any(lo <= line <= hi for file, line in ins.frames for lo, hi in ranges.get(file, ()))


def loops(fn: Function) -> list[Loop]:
    found = []
    for ins in fn.instructions:
        if ins.mnemonic == "BRA" and ins.target in fn.labels:
            start = fn.labels[ins.target]
            if start <= ins.address:
                found.append(Loop(start, ins.address))
    return found


def body(fn: Function, loop: Loop) -> list[Instruction]:
    return [i for i in fn.instructions if loop.start <= i.address <= loop.end]


def key_loop(fn: Function) -> Loop | None:
    """The loop holding the most HMMA; None when the kernel has none."""
    best, best_key = None, None
    for loop in loops(fn):
        hmma = sum(i.mnemonic == "HMMA" for i in body(fn, loop))
        key = (hmma, -(loop.end - loop.start))
        if hmma and (best_key is None or key > best_key):
            best, best_key = loop, key
    return best


def ldsm_bytes(opcode: str) -> int:
    """Bytes one warp reads with an ldmatrix: 128 per 8x8 16-bit matrix (.1/.2/.4)."""
    parts = opcode.split(".")
    count = int(parts[-1]) if parts[-1] in ("1", "2", "4") else 1
    return 128 * count


def lane_bytes(opcode: str) -> int:
    """Bytes per lane of an LDS/STS/LDG/STG: the width suffix in bits, 32 when none."""
    for part in opcode.split(".")[1:]:
        if part in ("64", "128"):
            return int(part) // 8
        if part in ("U8", "S8"):
            return 1
        if part in ("U16", "S16"):
            return 2
    return 4


@dataclasses.dataclass
class LoopCounts:
    start: int
    end: int
    instructions_masked: int  # whole body: an edge tile runs everything
    instructions_unmasked: int  # body minus the mask-only instructions
    hmma: int
    inner_loops: int  # back-edges inside the body (runtime-trip-count copy loops)
    inner_loop_body: int  # instructions of the largest inner loop (0: none), counted once above
    calls: int  # CALLs inside the body (e.g. 64-bit division subroutines)
    smem_read_bytes_unmasked: int  # per warp per trip: LDSM + LDS
    smem_write_bytes_unmasked: int  # per warp per trip: STS (cp.async writes are not counted here)
    by_mnemonic: dict[str, int]  # unmasked path

    @property
    def per_hmma_unmasked(self) -> float:
        return self.instructions_unmasked / self.hmma

    @property
    def per_hmma_masked(self) -> float:
        return self.instructions_masked / self.hmma

    @property
    def flops(self) -> int:  # per warp per trip
        return self.hmma * FLOPS_PER_HMMA


def mask_blocks(fn: Function, loop: Loop,
                ranges: dict[str, list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """Address ranges [first, end) inside `loop` that a forward conditional branch skips and that
    hold mostly mask-function instructions: the code only edge tiles run."""
    ins = body(fn, loop)
    found = []
    for branch in ins:
        if branch.mnemonic != "BRA" or not branch.predicate or branch.target not in fn.labels:
            continue
        target = fn.labels[branch.target]
        if not branch.address < target <= loop.end:
            continue
        skipped = [i for i in ins if branch.address < i.address < target]
        if 2 * sum(is_mask_only(i, ranges) for i in skipped) > len(skipped):
            found.append((skipped[0].address, target))
    return found


def unmasked_path(fn: Function, loop: Loop,
                  ranges: dict[str, list[tuple[int, int]]]) -> list[Instruction]:
    """The loop body as a tile no mask touches runs it (module docstring)."""
    blocks = mask_blocks(fn, loop, ranges)
    if not blocks:
        return [i for i in body(fn, loop) if not is_mask_only(i, ranges)]
    return [i for i in body(fn, loop) if not any(lo <= i.address < hi for lo, hi in blocks)]


def count(fn: Function, ranges: dict[str, list[tuple[int, int]]]) -> LoopCounts | None:
    loop = key_loop(fn)
    if loop is None:
        return None
    ins = body(fn, loop)
    unmasked = unmasked_path(fn, loop, ranges)
    # ptxas pads cp.async sequences with never-executed `@!PT LDS RZ, [RZ]`: counted as
    # instructions (they take issue slots), not as bytes.
    moving = [i for i in unmasked if i.predicate != "@!PT"]
    inner = [lp for lp in loops(fn) if loop.start <= lp.start and lp.end < loop.end]
    return LoopCounts(
        start=loop.start,
        end=loop.end,
        instructions_masked=len(ins),
        instructions_unmasked=len(unmasked),
        hmma=sum(i.mnemonic == "HMMA" for i in ins),
        inner_loops=len(inner),
        inner_loop_body=max((len(body(fn, lp)) for lp in inner), default=0),
        calls=sum(i.mnemonic == "CALL" and i.target is not None and i.target.startswith("$")
                  for i in ins),
        smem_read_bytes_unmasked=sum(
            ldsm_bytes(i.opcode) if i.mnemonic == "LDSM" else 32 * lane_bytes(i.opcode)
            for i in moving if i.mnemonic in ("LDSM", "LDS")),
        smem_write_bytes_unmasked=sum(32 * lane_bytes(i.opcode) for i in moving
                                      if i.mnemonic == "STS"),
        by_mnemonic=dict(collections.Counter(i.mnemonic for i in unmasked).most_common()),
    )


def group_counts(by_mnemonic: dict[str, int]) -> dict[str, int]:
    """Unmasked-path instructions in a few groups (integer, float, memory, tensor, other)."""
    groups = collections.Counter()
    for m, n in by_mnemonic.items():
        if m == "HMMA":
            groups["hmma"] += n
        elif m in INTEGER:
            groups["integer"] += n
        elif m in FLOAT or m == "MUFU":
            groups["float"] += n
        elif m in ("LDSM", "LDS", "STS", "LDGSTS", "LDG", "STG", "LDGDEPBAR", "DEPBAR"):
            groups["memory"] += n
        else:
            groups["other"] += n
    return dict(groups)
