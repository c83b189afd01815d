#!/usr/bin/env bash
# Runs a command as on a machine without a CUDA toolkit: in a private mount namespace (root and
# util-linux's unshare needed), every /usr/local/cuda* folder is covered by an empty one and
# every nvcc on PATH by an empty file; CUDA_HOME and CUDA_PATH are unset. What the build then
# finds comes from the nvidia-* wheels in the venv (cuda_toolkit.py). .ci/run runs `make test`
# under it, so CI proves that the build and every test need no system toolkit.
set -euo pipefail
if [[ -z ${SWAA_EMPTY_DIR:-} ]]; then
    # Outside the namespace: make the empty covers here, so they can be removed afterwards.
    SWAA_EMPTY_DIR=$(mktemp -d) SWAA_EMPTY_FILE=$(mktemp)
    export SWAA_EMPTY_DIR SWAA_EMPTY_FILE
    trap 'rm -rf "$SWAA_EMPTY_DIR" "$SWAA_EMPTY_FILE"' EXIT
    unshare --mount --propagation private "$0" "$@"
    exit
fi
unset CUDA_HOME CUDA_PATH
for dir in /usr/local/cuda /usr/local/cuda-*; do
    [[ -d $dir ]] && mount --bind "$SWAA_EMPTY_DIR" "$(realpath "$dir")"
done
IFS=: read -ra path_dirs <<< "$PATH"
for dir in "${path_dirs[@]}"; do
    [[ -x $dir/nvcc && -f $dir/nvcc ]] && mount --bind "$SWAA_EMPTY_FILE" "$(realpath "$dir/nvcc")"
done
for dir in "${path_dirs[@]}"; do
    if [[ -x $dir/nvcc ]] || compgen -G "/usr/local/cuda*/include/cuda_runtime.h" > /dev/null; then
        echo "without_cuda_toolkit.sh: a toolkit is still visible" >&2
        exit 1
    fi
done
echo "without_cuda_toolkit.sh: /usr/local/cuda* and nvcc on PATH hidden; running: $*" >&2
exec "$@"
