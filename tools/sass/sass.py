"""Parses `nvdisasm -c -gi` text: kernels, their instructions, labels, and for each instruction the
source lines it came from, inline chain included (nvcc -lineinfo)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess

_SECTION = re.compile(r"^\.text\.(\S+):\s*$")
_LABEL = re.compile(r"^(\.L_x_\d+|\$[\w$.]+):\s*$")
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LINE_INFO = re.compile(
    r'^\s*//## File "([^"]+)", line (\d+)(?: inlined at "([^"]+)", line (\d+))?')
_TARGET = re.compile(r"`\(([^)]+)\)")
_PREDICATE = re.compile(r"^@!?U?P[T0-9]+\s+")


@dataclasses.dataclass(frozen=True)
class Instruction:
    address: int
    text: str  # without the predicate
    predicate: str  # "@!P0", or "" when unpredicated
    frames: frozenset[tuple[str, int]]  # (file basename, line) of every frame of the inline chain

    @property
    def opcode(self) -> str:  # "HMMA.16816.F32.BF16"
        return self.text.split()[0] if self.text else ""

    @property
    def mnemonic(self) -> str:  # "HMMA"
        return self.opcode.split(".")[0]

    @property
    def target(self) -> str | None:  # branch target label
        m = _TARGET.search(self.text)
        return m.group(1) if m and self.mnemonic in ("BRA", "CALL") else None


@dataclasses.dataclass
class Function:
    name: str  # mangled
    instructions: list[Instruction]
    labels: dict[str, int]  # label -> address


def parse(text: str) -> dict[str, Function]:
    """nvdisasm text -> functions by mangled name, instructions in address order."""
    functions: dict[str, Function] = {}
    current: Function | None = None
    frames: frozenset[tuple[str, int]] = frozenset()
    chain: list[tuple[str, int]] = []
    in_info_block = False
    for line in text.splitlines():
        section = _SECTION.match(line)
        if section:
            current = functions.setdefault(section.group(1), Function(section.group(1), [], {}))
            frames, chain, in_info_block = frozenset(), [], False
            continue
        if current is None:
            continue
        info = _LINE_INFO.match(line)
        if info:
            if not in_info_block:
                chain, in_info_block = [], True
            chain.append((os.path.basename(info.group(1)), int(info.group(2))))
            if info.group(3):
                chain.append((os.path.basename(info.group(3)), int(info.group(4))))
            frames = frozenset(chain)
            continue
        in_info_block = False
        label = _LABEL.match(line)
        if label:
            # A label's address is the next instruction's; fixed up below.
            current.labels[label.group(1)] = len(current.instructions)
            continue
        ins = _INSTRUCTION.match(line)
        if ins:
            body = ins.group(2)
            pred = _PREDICATE.match(body)
            current.instructions.append(Instruction(
                address=int(ins.group(1), 16), text=body[pred.end():] if pred else body,
                predicate=pred.group(0).strip() if pred else "", frames=frames))
    for f in functions.values():
        f.labels = {name: (f.instructions[i].address if i < len(f.instructions) else 1 << 62)
                    for name, i in f.labels.items()}
    return functions


def disassemble(nvdisasm: str, cubin: str) -> str:
    return subprocess.run([nvdisasm, "-c", "-gi", cubin], capture_output=True, text=True,
                          check=True).stdout
