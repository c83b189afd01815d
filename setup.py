"""Builds swaa_ext._C: the CPU kernels always, the CUDA kernels when nvcc and a CUDA build of
torch are present (set SWAA_BUILD_CUDA=0 to skip them). CUDA arches: TORCH_CUDA_ARCH_LIST,
default "8.0;9.0" (sm_80-style kernels that also run on sm_86/sm_89/sm_90).

Also builds swaa_ext._C_emulated when the CUDA headers are present (no nvcc, no GPU needed): the
same CUDA kernel source compiled by g++ against the SIMT emulator, so tests run it on the CPU
(set SWAA_BUILD_EMULATED=0 to skip it)."""

import glob
import os

import scipy_openblas32
import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def sources(*patterns: str) -> list[str]:
    return sorted(f for p in patterns for f in glob.glob(os.path.join("csrc", p), recursive=True))


def want_cuda() -> bool:
    if os.environ.get("SWAA_BUILD_CUDA", "1") == "0":
        return False
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def emulated_extension() -> list:
    """g++ build of the CUDA kernels in SIMT host mode; needs only cuda_fp16.h / cuda_bf16.h."""
    cuda_home = cpp_extension.CUDA_HOME
    if os.environ.get("SWAA_BUILD_EMULATED", "1") == "0" or cuda_home is None:
        return []
    cuda_include = os.path.join(cuda_home, "include")
    if not os.path.exists(os.path.join(cuda_include, "cuda_fp16.h")):
        return []
    return [
        cpp_extension.CppExtension(
            "swaa_ext._C_emulated",
            sources("torch/emulated/*.cpp", "swaa/simt/host/*.cpp", "swaa/simt/host/*.S"),
            include_dirs=[cuda_include],
            extra_compile_args={"cxx": ["-O2", "-std=c++20", "-DSWAA_SIMT_HOST", "-Wall"]},
        )
    ]


def extensions():
    # BLAS for the CPU tiles: torch keeps its own MKL symbols private, so link OpenBLAS from the
    # scipy-openblas32 wheel (prefixed symbols, no clash with numpy's copy) and find it by rpath.
    blas = dict(
        include_dirs=[scipy_openblas32.get_include_dir()],
        library_dirs=[scipy_openblas32.get_lib_dir()],
        libraries=[scipy_openblas32.get_library()],
        runtime_library_dirs=[scipy_openblas32.get_lib_dir()],
    )
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-Wall", "-Wno-unused-function"]
    cpp_sources = sources("torch/*.cpp", "swaa/cpu/*.cpp")
    cuda_sources = sources("torch/cuda/*.cpp", "swaa/cuda/**/*.cu")
    if want_cuda() and cuda_sources:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        nvcc_flags = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo"]
        return emulated_extension() + [
            cpp_extension.CUDAExtension(
                "swaa_ext._C",
                cpp_sources + cuda_sources,
                extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                extra_link_args=["-fopenmp"],
                **blas,
            )
        ]
    return emulated_extension() + [
        cpp_extension.CppExtension(
            "swaa_ext._C",
            cpp_sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
            **blas,
        )
    ]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
