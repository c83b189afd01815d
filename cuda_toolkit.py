"""Finds the CUDA toolkit root that setup.py builds against (and the Makefile hands to CMake).

torch's own guess is dirname(dirname(nvcc on PATH)), which is wrong when nvcc is a symlink or a
wrapper script (here /usr/local/bin/nvcc execs /usr/local/cuda-13.0/bin/nvcc: torch guesses
/usr/local). Looked at in order, the first root that has the headers wins:

1. CUDA_HOME, when set;
2. the real nvcc on PATH: symlinks resolved and wrapper scripts followed to the nvcc they exec;
3. the nvidia-* wheels in this Python's site-packages (CUDA 13 wheels share one root,
   site-packages/nvidia/cu13): with nvidia-cuda-crt and -cccl they hold every header the
   emulated kernels need, and nvidia-cuda-nvcc (+ nvvm) adds nvcc for the real CUDA kernels.

A root counts only if its headers compile: cuda_runtime.h needs crt/ and cuda_fp16.h needs nv/,
which torch's own nvidia-cuda-runtime wheel does not ship (nvidia-cuda-crt and -cccl do).
No torch import here, so setup.py can set CUDA_HOME before torch.utils.cpp_extension reads it.

`python cuda_toolkit.py` prints the root (empty line if none), `--nvcc` the compiler,
`--explain` where the root came from."""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re
import shutil
import sys

# What the builds include: the runtime types, crt/ (pulled in by cuda_runtime.h), the half
# types, and cccl's nv/target (pulled in by cuda_fp16.h).
HEADERS = ("cuda_runtime.h", "crt/host_config.h", "cuda_fp16.h", "cuda_bf16.h", "nv/target")
# Wrapper scripts larger than this are not followed (a real nvcc is an ELF binary of megabytes).
_MAX_WRAPPER_BYTES = 64 * 1024
_EXEC_NVCC = re.compile(rb"(/[^\s'\"`;|&<>$]*/nvcc)\b")


@dataclasses.dataclass(frozen=True)
class Toolkit:
    root: str | None  # has include/ with HEADERS; None: no CUDA headers anywhere
    nvcc: str | None  # root/bin/nvcc when it exists: the real CUDA kernels can be built
    reason: str  # where the root came from, for the one line setup.py prints

    def explain(self) -> str:
        if self.root is None:
            return f"no CUDA headers found ({self.reason})"
        compiler = f"nvcc {self.nvcc}" if self.nvcc else "no nvcc"
        return f"CUDA toolkit root {self.root} ({self.reason}; {compiler})"


def missing_headers(root: str) -> list[str]:
    return [h for h in HEADERS if not os.path.isfile(os.path.join(root, "include", h))]


def _nvcc_in(root: str) -> str | None:
    nvcc = os.path.join(root, "bin", "nvcc")
    return nvcc if os.access(nvcc, os.X_OK) and os.path.isfile(nvcc) else None


def real_nvcc(nvcc: str, hops: int = 4) -> str:
    """The nvcc binary behind `nvcc`: symlinks resolved, and a small shell script followed to the
    absolute .../nvcc path it names (e.g. `exec /usr/local/cuda-13.0/bin/nvcc "$@"`)."""
    for _ in range(hops):
        nvcc = os.path.realpath(nvcc)
        if os.path.getsize(nvcc) > _MAX_WRAPPER_BYTES:
            break
        with open(nvcc, "rb") as f:
            text = f.read()
        if not text.startswith(b"#!"):
            break
        targets = [t.decode() for t in _EXEC_NVCC.findall(text)]
        targets = [t for t in targets if os.path.isfile(t) and os.path.realpath(t) != nvcc]
        if not targets:
            break
        nvcc = targets[0]
    return nvcc


def nvidia_folders() -> list[str]:
    """The folders of the `nvidia` namespace package (site-packages/nvidia) that the wheels fill."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def wheel_roots(folders: list[str], cuda_major: str | None = None) -> list[str]:
    """Roots laid out by the nvidia-* wheels (nvidia/cuXX): first those matching `cuda_major`
    (torch.version.cuda's major; torch refuses an nvcc of another major), then those with nvcc."""
    roots = sorted({os.path.dirname(os.path.dirname(h)) for f in folders
                    for h in glob.glob(os.path.join(f, "cu*", "include", "cuda_runtime.h"))})
    return sorted(roots, key=lambda r: (os.path.basename(r) != f"cu{cuda_major}",
                                        _nvcc_in(r) is None))


def find(environ: os._Environ | dict = os.environ, cuda_major: str | None = None,
         wheel_folders: list[str] | None = None) -> Toolkit:
    """The first usable root (see the module's docstring); `wheel_folders` defaults to this
    Python's site-packages/nvidia."""
    rejected = []

    def accept(root: str, reason: str) -> Toolkit | None:
        missing = missing_headers(root)
        if missing:
            rejected.append(f"{reason}: {root} lacks include/{missing[0]}")
            return None
        tried = f"; not used: {'; '.join(rejected)}" if rejected else ""
        return Toolkit(root, _nvcc_in(root), reason + tried)

    if environ.get("CUDA_HOME"):
        if found := accept(environ["CUDA_HOME"], "CUDA_HOME"):
            return found
    on_path = shutil.which("nvcc", path=environ.get("PATH", os.defpath))
    if on_path:
        nvcc = real_nvcc(on_path)
        via = "" if nvcc == on_path else f" -> {nvcc}"
        if found := accept(os.path.dirname(os.path.dirname(nvcc)), f"nvcc on PATH: {on_path}{via}"):
            return found
    folders = nvidia_folders() if wheel_folders is None else wheel_folders
    for root in wheel_roots(folders, cuda_major):
        if found := accept(root, "nvidia wheels in site-packages"):
            return found
    if not rejected:
        rejected.append("CUDA_HOME unset, no nvcc on PATH, no nvidia-* wheel headers")
    return Toolkit(None, None, "; ".join(rejected))


@dataclasses.dataclass(frozen=True)
class Plan:
    cuda: bool  # the real CUDA kernels (nvcc) go into swaa_ext._C
    emulated: bool  # swaa_ext._C_emulated (g++ and the CUDA headers) is built
    line: str  # the one line setup.py prints


def plan(toolkit: Toolkit, environ: os._Environ | dict, torch_cuda: str | None) -> Plan:
    """What gets built, given the toolkit found, the SWAA_BUILD_* switches and torch's CUDA
    version (None for a CPU build of torch)."""
    skipped = []
    emulated = toolkit.root is not None and environ.get("SWAA_BUILD_EMULATED", "1") != "0"
    if toolkit.root is None:
        skipped.append("no emulated kernels (they need the CUDA headers: pip install "
                       f"'cuda-toolkit[crt,cccl]=={torch_cuda or '13.0'}.*', or set CUDA_HOME)")
    elif not emulated:
        skipped.append("no emulated kernels (SWAA_BUILD_EMULATED=0)")
    cuda = False
    if environ.get("SWAA_BUILD_CUDA", "1") == "0":
        skipped.append("no CUDA kernels (SWAA_BUILD_CUDA=0)")
    elif torch_cuda is None:
        skipped.append("no CUDA kernels (torch is a CPU build)")
    elif toolkit.nvcc is None:
        skipped.append("no CUDA kernels (no nvcc: pip install "
                       f"'cuda-toolkit[nvcc,cccl]=={torch_cuda}.*', or set CUDA_HOME)")
    else:
        cuda = True
    built = " + ".join(["CPU"] + ["emulated"] * emulated + ["CUDA"] * cuda)
    line = f"swaa_ext build: {built} kernels; {toolkit.explain()}"
    return Plan(cuda, emulated, line + "".join(f"; {s}" for s in skipped))


if __name__ == "__main__":
    toolkit = find()
    if sys.argv[1:] == ["--nvcc"]:
        print(toolkit.nvcc or "")
    elif sys.argv[1:] == ["--explain"]:
        print(toolkit.explain())
    else:
        print(toolkit.root or "")
