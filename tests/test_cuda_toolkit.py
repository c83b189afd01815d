"""cuda_toolkit.py, the toolkit discovery setup.py builds with, on fake toolkits in tmp_path: the
order CUDA_HOME > real nvcc on PATH > nvidia wheels, wrappers and symlinks followed, roots
without a complete set of headers rejected, and what setup.py then builds and prints."""

from __future__ import annotations

import os
import stat

import pytest

import cuda_toolkit


def make_root(path, headers=cuda_toolkit.HEADERS, nvcc=True):
    for header in headers:
        (path / "include" / header).parent.mkdir(parents=True, exist_ok=True)
        (path / "include" / header).write_text("")
    if nvcc:
        executable(path / "bin" / "nvcc", b"\x7fELF not a script")
    return str(path)


def executable(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def env(**values):
    return {"PATH": "", **{k: str(v) for k, v in values.items()}}


def test_cuda_home_wins(tmp_path):
    home = make_root(tmp_path / "home")
    make_root(tmp_path / "other")
    toolkit = cuda_toolkit.find(env(CUDA_HOME=home, PATH=tmp_path / "other" / "bin"),
                                wheel_folders=[])
    assert toolkit.root == home and toolkit.nvcc == os.path.join(home, "bin", "nvcc")
    assert toolkit.reason == "CUDA_HOME"


def test_invalid_cuda_home_is_reported_and_skipped(tmp_path):
    real = make_root(tmp_path / "cuda-13.0")
    toolkit = cuda_toolkit.find(env(CUDA_HOME=tmp_path / "nothing", PATH=f"{real}/bin"),
                                wheel_folders=[])
    assert toolkit.root == real
    assert f"CUDA_HOME: {tmp_path / 'nothing'} lacks include/cuda_runtime.h" in toolkit.reason


def test_wrapper_script_on_path_is_followed(tmp_path):
    # /usr/local/bin/nvcc here: `exec /usr/local/cuda-13.0/bin/nvcc "$@"`. torch would guess the
    # wrapper's grandparent, which has no include/.
    real = make_root(tmp_path / "cuda-13.0")
    wrapper = executable(tmp_path / "local" / "bin" / "nvcc",
                         f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n'.encode())
    toolkit = cuda_toolkit.find(env(PATH=wrapper.parent), wheel_folders=[])
    assert toolkit.root == real
    assert toolkit.reason.startswith(f"nvcc on PATH: {wrapper} -> {real}/bin/nvcc")


def test_symlink_chain_on_path_is_followed(tmp_path):
    real = make_root(tmp_path / "cuda-13.0")
    (tmp_path / "cuda").symlink_to(real)  # /usr/local/cuda -> cuda-13.0
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").symlink_to(tmp_path / "cuda" / "bin" / "nvcc")
    toolkit = cuda_toolkit.find(env(PATH=tmp_path / "bin"), wheel_folders=[])
    assert toolkit.root == real


def test_root_without_crt_headers_is_rejected(tmp_path):
    # torch's nvidia-cuda-runtime wheel alone: cuda_runtime.h without the crt/ it includes.
    runtime_only = [h for h in cuda_toolkit.HEADERS if not h.startswith("crt/")]
    make_root(tmp_path / "nvidia" / "cu13", headers=runtime_only, nvcc=False)
    toolkit = cuda_toolkit.find(env(), wheel_folders=[str(tmp_path / "nvidia")])
    assert toolkit.root is None
    assert "lacks include/crt/host_config.h" in toolkit.reason


def test_wheels_are_the_last_resort_matching_torch_first(tmp_path):
    folder = tmp_path / "nvidia"
    other_major = make_root(folder / "cu12")
    same_major = make_root(folder / "cu13", nvcc=False)
    toolkit = cuda_toolkit.find(env(), cuda_major="13", wheel_folders=[str(folder)])
    assert toolkit.root == same_major and toolkit.reason == "nvidia wheels in site-packages"
    assert cuda_toolkit.find(env(), wheel_folders=[str(folder)]).root == other_major  # has nvcc
    system = make_root(tmp_path / "cuda-13.0")
    assert cuda_toolkit.find(env(PATH=f"{system}/bin"),
                             wheel_folders=[str(folder)]).root == system


def test_nothing_found(tmp_path):
    toolkit = cuda_toolkit.find(env(PATH=tmp_path), wheel_folders=[])
    assert toolkit == cuda_toolkit.Toolkit(None, None, "CUDA_HOME unset, no nvcc on PATH, no "
                                                       "nvidia-* wheel headers")


@pytest.mark.parametrize("nvcc, environ, torch_cuda, cuda, skipped", [
    (True, {}, "13.0", True, None),
    (False, {}, "13.0", False, "no CUDA kernels (no nvcc: pip install "
                               "'cuda-toolkit[nvcc,cccl]==13.0.*', or set CUDA_HOME)"),
    (True, {}, None, False, "no CUDA kernels (torch is a CPU build)"),
    (True, {"SWAA_BUILD_CUDA": "0"}, "13.0", False, "no CUDA kernels (SWAA_BUILD_CUDA=0)"),
], ids=["nvcc", "no-nvcc", "cpu-torch", "switched-off"])
def test_plan_cuda(tmp_path, nvcc, environ, torch_cuda, cuda, skipped):
    toolkit = cuda_toolkit.find(env(CUDA_HOME=make_root(tmp_path, nvcc=nvcc)), wheel_folders=[])
    plan = cuda_toolkit.plan(toolkit, environ, torch_cuda)
    assert (plan.cuda, plan.emulated) == (cuda, True)
    built = "CPU + emulated + CUDA" if cuda else "CPU + emulated"
    assert plan.line.startswith(f"swaa_ext build: {built} kernels; CUDA toolkit root {tmp_path}")
    assert plan.line.endswith(f"; {skipped}" if skipped else "; nvcc " + toolkit.nvcc + ")")


def test_plan_without_headers_builds_the_cpu_kernels_alone(tmp_path):
    toolkit = cuda_toolkit.find(env(), wheel_folders=[])
    plan = cuda_toolkit.plan(toolkit, {}, "13.0")
    assert not plan.cuda and not plan.emulated
    assert "\n" not in plan.line
    assert plan.line.startswith("swaa_ext build: CPU kernels; no CUDA headers found")
    assert "no emulated kernels (they need the CUDA headers" in plan.line


def test_plan_emulated_switch(tmp_path):
    toolkit = cuda_toolkit.find(env(CUDA_HOME=make_root(tmp_path)), wheel_folders=[])
    plan = cuda_toolkit.plan(toolkit, {"SWAA_BUILD_EMULATED": "0"}, "13.0")
    assert (plan.cuda, plan.emulated) == (True, False)
    assert plan.line.endswith("; no emulated kernels (SWAA_BUILD_EMULATED=0)")
