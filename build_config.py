"""How the extension is compiled, in one place: setup.py builds with it, and tools/sass (the
static SASS report and `make sass-check`) compiles the same kernels with it, so the SASS it reads
is the SASS the extension ships. Beside setup.py, like cuda_toolkit.py, and in the sdist."""

CXX_FLAGS = ["-O3", "-std=c++20", "-fopenmp", "-Wall", "-Wno-unused-function"]
# The emulated extension: the CUDA kernels' source on the CPU, through the SIMT layer's host mode.
EMULATED_CXX_FLAGS = ["-O2", "-std=c++20", "-DSWAA_SIMT_HOST", "-Wall"]
# Ours; torch.utils.cpp_extension appends its COMMON_NVCC_FLAGS to every nvcc command.
NVCC_FLAGS = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo"]
# TORCH_CUDA_ARCH_LIST when the environment sets none: SASS for sm_80 and sm_90, PTX for newer.
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def sass_archs(arch_list: str = DEFAULT_CUDA_ARCHS) -> tuple[str, ...]:
    """The sm_XY targets an arch list compiles SASS for ("8.0;9.0+PTX" -> sm_80, sm_90)."""
    return tuple("sm_" + entry.split("+")[0].replace(".", "") for entry in arch_list.split(";"))
