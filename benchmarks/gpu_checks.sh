#!/usr/bin/env bash
# The GPU checks of the pruning design, as one prepared run for a machine with a CUDA
# GPU (TensorRT not needed): the CUDA kernels against the numpy reference, their
# bandwidth against the device's copy bandwidth, and a torch sweep of the pruned
# forward against the dense one over blur ratios at 1024^2 and 2048^2.
#
#   bash benchmarks/gpu_checks.sh [OUT]      (default OUT: gpu_checks)
#
# Needs the project installed (pip install -e ".[dev]") beside a CUDA build of torch.
# Every step writes its log under OUT; a failing step does not stop the later ones, and
# the script exits non-zero if any failed.
set -uo pipefail
out="${1:-gpu_checks}"
mkdir -p "$out"
failed=0
step() {
    local name="$1"
    shift
    echo "== $name: $*"
    if ! "$@" 2>&1 | tee "$out/$name.log"; then
        echo "== $name FAILED"
        failed=1
    fi
}
step kernels_build m2ae plugin build --kernels-only
step kernel_tests pytest -q -m gpu
step kernel_bandwidth python -m m2ae.benchmarks.kernel_bandwidth
step torch_sweep m2ae bench --backends torch --variants dense,plugin --blur 0,5,10,25,50,100 \
    --size 1024,2048 --iters 20 --warmup 5 --dense-above 1 --out "$out/torch_sweep" --no-progress
exit "$failed"
