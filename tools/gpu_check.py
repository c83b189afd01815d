"""`make gpu-check`: everything worth knowing on the first (brief) loan of a GPU, in one command.

Builds the extension for this GPU (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability),
then, within a budget of 8 minutes: the SIMT intrinsic tests built by nvcc and run on the device
(the inline PTX of csrc/swaa/simt/device.h against the PTX ISA layouts the emulator is tested
against), a spill check of every CUDA instantiation compiled by this machine's nvcc for this GPU,
the CUDA forward suite (tile kernel, decode kernel with one and several splits, decode through
the varlen op with empty sequences), the paged suite (the tile and decode kernels reading K/V
through a block table, a decode step in a CUDA graph), the backward suite and the varlen suite
against the float64 reference (the emulated-vs-GPU cases reported as a row of their own), and a
short benchmark writing JSON.
Prints one summary table; exit status 0 if everything passed, 1 if anything failed or ran out
of time, 2 without a GPU (one line, nothing built). Logs and JSON: build-gpu-check/.
docs/gpu-check.md says what each step runs and how long it takes.

    python tools/gpu_check.py            # what `make gpu-check` runs
    python tools/gpu_check.py --why-not  # prints why there is no usable GPU (nothing if there is)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build-gpu-check"
BUDGET_S = 8 * 60  # everything after the build
# Per step: the most it may take of what is left (compile + run, or pytest with its CUDA start-up).
CAPS_S = {"device": 90, "spills": 60, "forward": 150, "backward": 120, "varlen": 60,
          "paged": 90, "bench": 120}


@dataclass
class Row:
    step: str
    status: str  # "pass", "FAIL", "TIMEOUT", or "absent" (not written yet: not a failure)
    seconds: float
    detail: str


def why_no_gpu(need_torch: bool = True) -> str | None:
    """Why this machine cannot run the check, or None. need_torch=False: a Python without torch
    (make runs this before creating the venv) answers from the device nodes alone."""
    # Cheap first (importing torch takes seconds): the driver's device nodes (Linux; WSL: dxg).
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not Path("/dev/dxg").exists():
        return "no NVIDIA GPU device (/dev/nvidia*)"
    try:
        import torch
    except ImportError:
        return "torch is not installed in this Python" if need_torch else None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


def run(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[str, float]:
    """Runs cmd with output to `log`; returns ("pass" | "FAIL" | "TIMEOUT", seconds)."""
    start = time.monotonic()
    with log.open("w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                timeout=max(timeout, 1), env=env).returncode
        except subprocess.TimeoutExpired:
            return "TIMEOUT", time.monotonic() - start
    return ("pass" if rc == 0 else "FAIL"), time.monotonic() - start


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:100] if lines else ""


def build(arch: str) -> Row:
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=arch, MAX_JOBS=str(os.cpu_count() or 1))
    status, seconds = run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
                          OUT / "build.log", timeout=30 * 60, env=env)
    return Row("build (TORCH_CUDA_ARCH_LIST=" + arch + ")", status, seconds,
               "build-gpu-check/build.log" if status != "pass" else f"{os.cpu_count()} jobs")


def device_intrinsics(sm: str, timeout: float) -> Row:
    """tests/cpp/simt/test_simt_intrinsics.cpp, compiled by nvcc and run on this GPU."""
    binary = OUT / "test_simt_intrinsics_device"
    nvcc = str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    start = time.monotonic()
    status, _ = run([nvcc, "-std=c++20", f"-arch=sm_{sm}", "-x", "cu", "-Icsrc",
                     "tests/cpp/simt/test_simt_intrinsics.cpp", "-o", str(binary)],
                    OUT / "device_build.log", timeout)
    if status == "pass":
        status, _ = run([str(binary)], OUT / "device_run.log", timeout - (time.monotonic() - start))
        detail = last_line(OUT / "device_run.log")
    else:
        detail = "nvcc: see build-gpu-check/device_build.log"
    return Row(f"SIMT intrinsics on sm_{sm}", status, time.monotonic() - start, detail)


def spill_check(sm: str, timeout: float) -> Row:
    """Every CUDA instantiation compiled for this GPU by this machine's nvcc with the extension's
    flags and ptxas -v (tools/sass/build.py, what `make sass-check` runs for sm_80 / sm_90 on
    the development machine): any spill store or load fails the row."""
    if str(ROOT) not in sys.path:  # (run as a script: the checkout is not on the path)
        sys.path.insert(0, str(ROOT))
    from tools.sass import build as sass_build

    start = time.monotonic()
    spilled, kernels = [], 0
    try:
        nvcc = sass_build.find_nvcc()
        for inst in sass_build.instantiations():
            if time.monotonic() - start > timeout:
                return Row(f"spills (ptxas, sm_{sm})", "TIMEOUT", time.monotonic() - start,
                           f"{kernels} kernels checked")
            _, log = sass_build.compile_cubin(nvcc, inst, f"sm_{sm}", str(OUT))
            for function in sass_build.parse_ptxas(log).values():
                kernels += 1
                if function.spill_store_bytes or function.spill_load_bytes:
                    spilled.append(f"{inst.name} {function.spill_store_bytes}+"
                                   f"{function.spill_load_bytes} B")
    except SystemExit as e:  # no nvcc, or nvcc failed on an instantiation
        return Row(f"spills (ptxas, sm_{sm})", "FAIL", time.monotonic() - start, str(e)[:100])
    detail = ("spill stores+loads: " + ", ".join(spilled)) if spilled else \
        f"{kernels} kernels, none spills"
    return Row(f"spills (ptxas, sm_{sm})", "FAIL" if spilled or kernels == 0 else "pass",
               time.monotonic() - start, detail)


def pytest_rows(name: str, suite: str, timeout: float, select: str | None = None) -> list[Row]:
    """One row for the suite (only its tests matching `select`, pytest -k, when given), one for
    its emulated-vs-GPU cases (tests named *emulated*)."""
    if not (ROOT / suite).exists():
        return [Row(name, "absent", 0.0, f"{suite} does not exist yet")]
    xml = OUT / f"{name}.xml"
    xml.unlink(missing_ok=True)
    status, seconds = run([sys.executable, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider",
                           f"--junitxml={xml}", *(["-k", select] if select else [])],
                          OUT / f"{name}.log", timeout)
    counts = {"suite": [0, 0, 0], "emulated": [0, 0, 0]}  # passed, failed, skipped
    if xml.exists():
        for case in ET.parse(xml).iter("testcase"):
            kind = "emulated" if "emulated" in case.get("name", "") else "suite"
            outcome = 1 if case.find("failure") is not None or case.find("error") is not None \
                else 2 if case.find("skipped") is not None else 0
            counts[kind][outcome] += 1

    def row(step: str, c: list[int]) -> Row:
        detail = f"{c[0]} passed, {c[1]} failed, {c[2]} skipped"
        if status == "pass" and sum(c) == 0:
            return Row(step, "absent", seconds, "no such tests in " + suite)
        # A fully skipped suite tested nothing: on a GPU that is a failure to report.
        ok = status == "pass" and c[1] == 0 and c[0] > 0
        return Row(step, "pass" if ok else ("TIMEOUT" if status == "TIMEOUT" else "FAIL"),
                   seconds, detail)

    return [row(name, counts["suite"]), row(f"{name}: emulated vs GPU", counts["emulated"])]


def benchmark(timeout: float) -> Row:
    out = OUT / "bench.json"
    out.unlink(missing_ok=True)
    status, seconds = run([sys.executable, "-m", "bench.gpu_kernels", "--quick", "--out", str(out)],
                          OUT / "bench.log", timeout)
    if status != "pass" or not out.exists():
        return Row("benchmark (fwd, fwd+bwd)", "FAIL" if status == "pass" else status, seconds,
                   "see build-gpu-check/bench.log")
    rows = json.loads(out.read_text())["results"]
    # swaa_ext failing in a row (e.g. no backward) is a failure; a peer that cannot run is not.
    broken = [f"{r['mode']} L={r['shape']['length']}" for r in rows
              if not isinstance(r["ms"]["swaa_ext"], float)]
    ratios = [r["ms"]["flex_attention"] / r["ms"]["swaa_ext"] for r in rows
              if all(isinstance(r["ms"][m], float) for m in ("swaa_ext", "flex_attention"))]
    detail = (f"swaa_ext failed: {', '.join(broken)}" if broken else
              "flex/swaa " + " ".join(f"{x:.2f}x" for x in ratios) + "; build-gpu-check/bench.json")
    return Row("benchmark (fwd, fwd+bwd)", "FAIL" if broken else "pass", seconds, detail)


def print_summary(rows: list[Row], device: str) -> None:
    width = max(len(r.step) for r in rows)
    print(f"\ngpu-check on {device}")
    print(f"{'step':<{width}}  {'result':<7}  {'seconds':>7}  detail")
    for r in rows:
        print(f"{r.step:<{width}}  {r.status:<7}  {r.seconds:7.1f}  {r.detail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--why-not", action="store_true",
                        help="print why there is no usable GPU (nothing if there is one), exit 0")
    args = parser.parse_args()
    reason = why_no_gpu(need_torch=not args.why_not)
    if args.why_not:
        if reason:
            print(reason)
        return 0
    if reason:
        print(f"gpu-check: skipped, {reason}; nothing was built or run")
        return 2

    import torch

    major, minor = torch.cuda.get_device_capability()
    device = f"{torch.cuda.get_device_name()} (sm_{major}{minor})"
    OUT.mkdir(exist_ok=True)
    rows = [build(f"{major}.{minor}")]
    if rows[0].status == "pass":
        deadline = time.monotonic() + BUDGET_S
        left = lambda step: min(CAPS_S[step], deadline - time.monotonic())  # noqa: E731
        rows.append(device_intrinsics(f"{major}{minor}", left("device")))
        rows.append(spill_check(f"{major}{minor}", left("spills")))
        rows += pytest_rows("forward", "tests/test_cuda_forward.py", left("forward"))
        rows += pytest_rows("paged", "tests/test_cuda_paged.py", left("paged"))
        rows += pytest_rows("backward", "tests/test_cuda_backward.py", left("backward"))
        rows += pytest_rows("varlen", "tests/test_varlen.py", left("varlen"), select="cuda")
        rows.append(benchmark(left("bench")))
    print_summary(rows, device)
    (OUT / "summary.json").write_text(json.dumps(
        {"device": device, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0 if all(r.status in ("pass", "absent") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
