"""The pieces of `make gpu-check` that run without a GPU: it refuses to start without one, its
spill check reads ptxas's report of every instantiation (real compiles for one architecture,
then a planted spill), and a suite whose tests all skip is a failure, never a pass."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # (its dataclasses look their module up)
spec.loader.exec_module(gpu_check)
sys.path.insert(0, str(ROOT))
from tools.sass import build as sass_build  # noqa: E402


def test_without_a_gpu_it_says_why_and_builds_nothing(capsys, monkeypatch):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_check.why_no_gpu()
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    assert gpu_check.main() == 2
    assert "nothing was built or run" in capsys.readouterr().out


def test_spill_check_reads_every_instantiation_and_fails_on_a_spill(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "OUT", tmp_path)
    try:
        sass_build.find_nvcc()
    except SystemExit:
        pytest.skip("no nvcc here")
    # Real compiles would take a minute: the first instantiation compiled for sm_80, the others
    # answered with its ptxas report, then with a spill planted in one of them.
    first = sass_build.instantiations()[0]
    _, real_log = sass_build.compile_cubin(sass_build.find_nvcc(), first, "sm_80", str(tmp_path))
    assert sass_build.parse_ptxas(real_log)  # ptxas -v did report the kernels
    monkeypatch.setattr(sass_build, "compile_cubin", lambda nvcc, inst, arch, out: ("", real_log))
    row = gpu_check.spill_check("80", timeout=60)
    kernels = len(sass_build.instantiations()) * len(sass_build.parse_ptxas(real_log))
    assert row.status == "pass" and row.detail == f"{kernels} kernels, none spills", row
    spilling = real_log.replace("0 bytes spill stores", "12 bytes spill stores", 1)
    assert spilling != real_log
    monkeypatch.setattr(sass_build, "compile_cubin",
                        lambda nvcc, inst, arch, out: ("", spilling if inst == first else real_log))
    row = gpu_check.spill_check("80", timeout=60)
    assert row.status == "FAIL" and f"{first.name} 12+0 B" in row.detail, row


@pytest.mark.slow  # runs a test suite in a fresh pytest process
def test_a_suite_whose_tests_all_skip_fails(tmp_path, monkeypatch):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CUDA tests run")
    monkeypatch.setattr(gpu_check, "OUT", tmp_path)
    rows = gpu_check.pytest_rows("varlen", "tests/test_varlen.py", timeout=300, select="cuda")
    assert rows[0].status == "FAIL" and "0 passed" in rows[0].detail and "skipped" in rows[0].detail
    assert rows[1].status == "absent"  # no emulated-vs-GPU tests in that suite
    assert gpu_check.pytest_rows("x", "tests/none.py", 1)[0].status == "absent"
