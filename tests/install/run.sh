#!/usr/bin/env bash
# `make test-install`: proves the package installs and works outside the checkout.
#  1. builds the wheel (pip wheel, in-tree: build/'s objects from `make build` are reused);
#  2. installs it with the [hf] extra into a fresh venv under /tmp, versions held to the
#     pinned dev list (a constraints file adds nothing that the package does not declare);
#  3. runs smoke.py from outside the checkout; then adds the [eval] extra and runs the CLIs.
# PYTHON: the interpreter that builds (default .venv/bin/python). Exits non-zero on failure.
set -euo pipefail
checkout=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$checkout/.venv/bin/python}
work=$(mktemp -d /tmp/swaa_ext-install.XXXXXX)
trap 'rm -rf "$work"' EXIT

step() { echo "test-install: $1 ($SECONDS s)"; }

cd "$checkout"
step "building the wheel"
flock build.lock "$python" -m pip wheel --quiet --no-build-isolation --no-deps \
    --wheel-dir "$work/dist" .
wheel=$(echo "$work"/dist/swaa_ext-*.whl)

# Constraints cannot carry extras: cuda-toolkit[nvcc,cccl]==13.0.3 -> cuda-toolkit==13.0.3.
"$python" -c "import re, tomllib; print('\n'.join(re.sub(r'\[.*\]', '', r) for r in
    tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['dev']))" \
    > "$work/constraints.txt"

step "installing $(basename "$wheel")[hf] into a fresh venv"
"$python" -m venv "$work/venv"
venv_python=$work/venv/bin/python
"$venv_python" -m pip install --quiet -c "$work/constraints.txt" "$wheel[hf]"

# What the wheel must hold: the CUDA and emulated libraries unless switched off (the dev venv's
# nvidia wheels give every machine nvcc and the headers; setup.py's line says what it found).
expect=()
[[ ${SWAA_BUILD_CUDA:-1} == 0 ]] || expect+=(cuda)
[[ ${SWAA_BUILD_EMULATED:-1} == 0 ]] || expect+=(emulated)
cd "$work"
step "smoke test: kernels and adapt"
"$venv_python" "$checkout/tests/install/smoke.py" --checkout "$checkout" \
    --expect "$(IFS=,; echo "${expect[*]}")"

step "adding the [eval] extra"
"$venv_python" -m pip install --quiet -c "$work/constraints.txt" "$wheel[eval]"
step "smoke test: the demo and eval CLIs"
"$venv_python" "$checkout/tests/install/smoke.py" --checkout "$checkout" --cli
step "passed"
