"""Builds swaa_ext._C: the CPU kernels always, the CUDA kernels when torch is a CUDA build and
nvcc is found (set SWAA_BUILD_CUDA=0 to skip them). CUDA arches: TORCH_CUDA_ARCH_LIST, default
build_config.py's "8.0;9.0+PTX" (sm_80-style kernels that also run on sm_86/sm_89/sm_90); its
compiler flags are build_config.py's too.

Also builds swaa_ext._C_emulated when the CUDA headers are found (no nvcc, no GPU needed): the
same CUDA kernel source compiled by g++ against the SIMT emulator, so tests run it on the CPU
(set SWAA_BUILD_EMULATED=0 to skip it).

The toolkit root comes from cuda_toolkit.py (CUDA_HOME, else the real nvcc on PATH, else the
nvidia-* wheels in site-packages); one printed line says which root and what gets built."""

import glob
import os
import sys

import scipy_openblas32
import torch
from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)
import build_config  # noqa: E402  (beside this file)
import cuda_toolkit  # noqa: E402

TOOLKIT = cuda_toolkit.find(cuda_major=(torch.version.cuda or "").split(".")[0])
PLAN = cuda_toolkit.plan(TOOLKIT, os.environ, torch.version.cuda)
# torch.utils.cpp_extension reads CUDA_HOME once, at import: set it first (and its copy after,
# in case something imported it already), or it guesses dirname(dirname(nvcc on PATH)).
if TOOLKIT.root:
    os.environ["CUDA_HOME"] = TOOLKIT.root
from torch.utils import cpp_extension  # noqa: E402

if TOOLKIT.root:
    cpp_extension.CUDA_HOME = TOOLKIT.root
print(PLAN.line, file=sys.stderr)

def sources(*patterns: str) -> list[str]:
    return sorted(f for p in patterns for f in glob.glob(os.path.join("csrc", p), recursive=True))


def emulated_extension() -> list:
    """g++ build of the CUDA kernels in SIMT host mode; needs only cuda_fp16.h / cuda_bf16.h."""
    if not PLAN.emulated:
        return []
    cuda_include = os.path.join(TOOLKIT.root, "include")
    return [
        cpp_extension.CppExtension(
            "swaa_ext._C_emulated",
            sources("torch/emulated/*.cpp", "swaa/simt/host/*.cpp", "swaa/simt/host/*.S"),
            include_dirs=[cuda_include],
            extra_compile_args={"cxx": build_config.EMULATED_CXX_FLAGS},
        )
    ]


def cudart_library_dirs() -> list[str]:
    """torch links CUDA extensions with -lcudart, which needs lib/libcudart.so; the nvidia wheels
    ship only lib/libcudart.so.13, so link to that from build/ (the soname stays libcudart.so.13:
    at run time it is the copy torch has loaded)."""
    lib = os.path.join(TOOLKIT.root, "lib")
    versioned = sorted(glob.glob(os.path.join(lib, "libcudart.so.*")), key=len)
    if glob.glob(os.path.join(TOOLKIT.root, "lib*", "libcudart.so")) or not versioned:
        return []
    link_dir = os.path.join(ROOT, "build", "cudart")
    link = os.path.join(link_dir, "libcudart.so")
    os.makedirs(link_dir, exist_ok=True)
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(versioned[0], link)
    return [link_dir]


def extensions():
    # BLAS for the CPU tiles: torch keeps its own MKL symbols private, so link OpenBLAS from the
    # scipy-openblas32 wheel (prefixed symbols, no clash with numpy's copy) and find it by rpath:
    # relative for an installed swaa_ext (site-packages/swaa_ext -> site-packages/scipy_openblas32),
    # absolute for the in-place build in a checkout.
    blas = dict(
        include_dirs=[scipy_openblas32.get_include_dir()],
        library_dirs=[scipy_openblas32.get_lib_dir()],
        libraries=[scipy_openblas32.get_library()],
        runtime_library_dirs=["$ORIGIN/../scipy_openblas32/lib", scipy_openblas32.get_lib_dir()],
    )
    cxx_flags = build_config.CXX_FLAGS
    cpp_sources = sources("torch/*.cpp", "swaa/cpu/*.cpp")
    cuda_sources = sources("torch/cuda/*.cpp", "swaa/cuda/**/*.cu")
    if PLAN.cuda and cuda_sources:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", build_config.DEFAULT_CUDA_ARCHS)
        nvcc_flags = build_config.NVCC_FLAGS
        return emulated_extension() + [
            cpp_extension.CUDAExtension(
                "swaa_ext._C",
                cpp_sources + cuda_sources,
                extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                extra_link_args=["-fopenmp"],
                **dict(blas, library_dirs=blas["library_dirs"] + cudart_library_dirs()),
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


def requirements() -> list[str]:
    # The built library is tied to the torch (C++ ABI) and OpenBLAS it was compiled against.
    torch_version = torch.__version__.split("+")[0]
    return [f"torch=={torch_version}", f"scipy-openblas32=={scipy_openblas32.__version__}"]


setup(
    install_requires=requirements(),
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
