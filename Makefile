# Two set-up-free entry points: `make demo` and `make test`. Each creates .venv with pinned
# versions (pyproject.toml [dev]) and builds the extension in place before running.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.14.1
# torch's auto-detection guesses wrong here: point it at the toolkit that has cuda_runtime.h.
CUDA_HOME ?= $(shell for d in /usr/local/cuda /usr/local/cuda-*; do \
	[ -f $$d/include/cuda_runtime.h ] && { echo $$d; break; }; done)
export CUDA_HOME
export MAX_JOBS ?= 2
PYTEST_ARGS ?=

.PHONY: venv build ctest test demo bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION) setuptools wheel
	$(PIP) install --quiet $$($(PY) -c "import tomllib; \
		print(' '.join(tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['dev']))")
	touch $@

venv: $(VENV)/.installed

# Incremental (ninja): only changed sources recompile. The lock keeps parallel builds in one
# tree from sharing build/ at the same time.
build: venv
	flock build.lock $(PY) setup.py --quiet build_ext --inplace

# The C++ kernel library and its unit tests, without Python (CMake + ctest).
ctest: venv
	cmake -S . -B build-cmake -G Ninja -DOPENBLAS_ROOT=$$($(PY) -c \
		"import os, scipy_openblas32 as s; print(os.path.dirname(s.get_lib_dir()))") > /dev/null
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cmake --build build-cmake
	ctest --test-dir build-cmake --output-on-failure

test: build ctest
	$(PY) -m pytest $(PYTEST_ARGS)

demo: build
	$(PY) -m swaa_ext.demo

# Kernel benchmark (bench/kernels.py): full sweep, or BENCH_ARGS=--quick for about a minute.
BENCH_ARGS ?=
bench: build
	$(PY) -m bench.kernels $(BENCH_ARGS)

clean:
	rm -rf build build-cmake swaa_ext/*.so
