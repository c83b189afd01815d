"""Compiles every CUDA instantiation to a cubin per architecture, with the flags setup.py uses,
and reads ptxas -v (registers, stack, spills, static shared memory) and the traits' tile sizes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # build_config.py lives beside setup.py
    sys.path.insert(0, ROOT)
import build_config  # noqa: E402

CUDA_DIR = os.path.join(ROOT, "csrc", "swaa", "cuda")
INSTANTIATIONS = os.path.join(CUDA_DIR, "instantiations")
# The arches and nvcc flags the extension is built with (build_config.py, setup.py's) plus the
# ones torch.utils.cpp_extension adds to every nvcc command (its COMMON_NVCC_FLAGS, written out:
# importing cpp_extension guesses a CUDA_HOME and warns; tests/test_sass_report.py compares), so
# the SASS read here is the SASS the extension ships.
ARCHS = build_config.sass_archs()
# generate_instantiations.py's
DIRECTIONS = ("forward", "backward", "decode", "forward_paged", "decode_paged")
TORCH_NVCC_FLAGS = ("-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
                    "--expt-relaxed-constexpr")
NVCC_FLAGS = (*build_config.NVCC_FLAGS, *TORCH_NVCC_FLAGS)
_LIST_ENTRY = re.compile(r"SWAA_(FORWARD_PAGED|DECODE_PAGED|FORWARD|BACKWARD|DECODE)_INSTANTIATION"
                         r"\((\w+),\s*([\w:]+),\s*(\d+)\)")


@dataclasses.dataclass(frozen=True)
class Instantiation:
    direction: str  # "forward" | "backward" | "decode" | "forward_paged" | "decode_paged"
    dtype: str  # "fp16" | "bf16"
    element: str  # C++ element type
    head_dim: int

    @property
    def source(self) -> str:
        return os.path.join(INSTANTIATIONS, f"{self.direction}_{self.dtype}_hdim{self.head_dim}.cu")

    @property
    def name(self) -> str:
        return f"{self.direction}_{self.dtype}_hdim{self.head_dim}"


def instantiations() -> list[Instantiation]:
    """Every entry of the generated instantiation lists (generate_instantiations.py)."""
    found = []
    for direction in DIRECTIONS:
        with open(os.path.join(INSTANTIATIONS, f"{direction}_list.inc")) as f:
            for kind, dtype, element, head_dim in _LIST_ENTRY.findall(f.read()):
                found.append(Instantiation(kind.lower(), dtype, element, int(head_dim)))
    return found


def find_nvcc() -> str:
    nvcc = subprocess.run([sys.executable, os.path.join(ROOT, "cuda_toolkit.py"), "--nvcc"],
                          capture_output=True, text=True, check=True).stdout.strip()
    if not nvcc:
        raise SystemExit("sass-report: no nvcc found (cuda_toolkit.py --nvcc)")
    return nvcc


@dataclasses.dataclass(frozen=True)
class PtxasFunction:
    registers: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    static_smem_bytes: int


_PTXAS_ENTRY = re.compile(r"Function properties for (\S+)\n(.*?)Used (\d+) registers([^\n]*)",
                          re.S)


def parse_ptxas(log: str) -> dict[str, PtxasFunction]:
    """ptxas -v output -> per mangled kernel name."""
    out = {}
    for name, props, regs, tail in _PTXAS_ENTRY.findall(log):
        def grab(pattern: str, text: str) -> int:
            m = re.search(pattern, text)
            return int(m.group(1)) if m else 0
        out[name] = PtxasFunction(
            registers=int(regs),
            stack_bytes=grab(r"(\d+) bytes stack frame", props),
            spill_store_bytes=grab(r"(\d+) bytes spill stores", props),
            spill_load_bytes=grab(r"(\d+) bytes spill loads", props),
            static_smem_bytes=grab(r"(\d+) bytes smem", tail),
        )
    return out


def compile_cubin(nvcc: str, inst: Instantiation, arch: str, out_dir: str) -> tuple[str, str]:
    """-> (cubin path, ptxas -v log)."""
    cubin = os.path.join(out_dir, f"{inst.name}.{arch}.cubin")
    number = arch.split("_")[1]
    cmd = [nvcc, *NVCC_FLAGS, f"-gencode=arch=compute_{number},code={arch}", "-cubin",
           "-Xptxas", "-v", "-I", os.path.join(ROOT, "csrc"), inst.source, "-o", cubin]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sass-report: nvcc failed on {inst.name} {arch}:\n{done.stderr}")
    return cubin, done.stdout + done.stderr


# Tile sizes straight from kernel_traits.h (host code: nothing runs on a device).
_TRAITS_PROGRAM = r"""
#include <cstdio>
#include "swaa/cuda/kernel_traits.h"
using namespace swaa::cuda;
template <typename T> void row(const char* kernel, const char* dtype, int streamed_rows) {
  std::printf("{\"kernel\": \"%s\", \"dtype\": \"%s\", \"head_dim\": %d, \"warps\": %d, "
              "\"block_m\": %d, \"block_n\": %d, \"stages\": %d, \"smem_bytes\": %zu, "
              "\"streamed_rows\": %d, \"element_bytes\": %zu},\n", kernel, dtype, T::kHeadDim,
              T::kNWarps, T::kBlockM, T::kBlockN, T::kStages, size_t(T::kSmemBytes),
              streamed_rows, sizeof(typename T::Element));
}
template <typename E> void all(const char* dtype) {
  row<ForwardTraits<E, 64>>("forward", dtype, ForwardTraits<E, 64>::kBlockN);
  row<ForwardTraits<E, 128>>("forward", dtype, ForwardTraits<E, 128>::kBlockN);
  row<BackwardKVTraits<E, 64>>("dkdv", dtype, BackwardKVTraits<E, 64>::kBlockM);
  row<BackwardKVTraits<E, 128>>("dkdv", dtype, BackwardKVTraits<E, 128>::kBlockM);
  row<BackwardQTraits<E, 64>>("dq", dtype, BackwardQTraits<E, 64>::kBlockN);
  row<BackwardQTraits<E, 128>>("dq", dtype, BackwardQTraits<E, 128>::kBlockN);
  row<DecodeTraits<E, 64>>("decode", dtype, DecodeTraits<E, 64>::kBlockN);
  row<DecodeTraits<E, 128>>("decode", dtype, DecodeTraits<E, 128>::kBlockN);
}
int main() {
  std::printf("[");
  all<__half>("fp16");
  all<__nv_bfloat16>("bf16");
  std::printf("{}]\n");
}
"""


def traits(nvcc: str, out_dir: str) -> dict[tuple[str, str, int], dict]:
    """(kernel, dtype, head dim) -> tile sizes; `streamed_rows` is the rows of the two 2-byte
    tiles each key-loop step streams in (K and V for forward/dq, Q and dO for dkdv). Built by
    the host C++ compiler in SIMT host mode, like the emulated extension: an nvcc-linked program
    would need libcudart, which the toolkit wheels do not all ship."""
    rows = run_host_program(nvcc, out_dir, "traits", _TRAITS_PROGRAM)
    return {(r["kernel"], r["dtype"], r["head_dim"]): r for r in rows if r}


def run_host_program(nvcc: str, out_dir: str, name: str, source: str):
    """Builds `source` (C++ including the kernels' headers) with the host compiler in SIMT host
    mode, runs it, and returns the JSON it prints."""
    src = os.path.join(out_dir, f"{name}.cpp")
    exe = os.path.join(out_dir, name)
    with open(src, "w") as f:
        f.write(source)
    cuda_include = os.path.join(os.path.dirname(os.path.dirname(nvcc)), "include")
    subprocess.run([os.environ.get("CXX", "c++"), "-std=c++20", "-DSWAA_SIMT_HOST", "-I",
                    os.path.join(ROOT, "csrc"), "-I", cuda_include, src, "-o", exe],
                   check=True, capture_output=True)
    return json.loads(subprocess.run([exe], capture_output=True, text=True, check=True).stdout)


_RES_USAGE = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def parse_res_usage(text: str) -> dict[str, dict[str, int]]:
    """`cuobjdump -res-usage` -> per mangled kernel: registers, stack, shared, local bytes (what
    the cubin itself records: a cross-check on the ptxas log)."""
    return {name: {"registers": int(r), "stack_bytes": int(s), "static_smem_bytes": int(sh),
                   "local_bytes": int(lo)}
            for name, r, s, sh, lo in _RES_USAGE.findall(text)}


def res_usage(cuobjdump: str, cubin: str) -> dict[str, dict[str, int]]:
    return parse_res_usage(subprocess.run([cuobjdump, "-res-usage", cubin], capture_output=True,
                                          text=True, check=True).stdout)
