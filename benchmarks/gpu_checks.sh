#!/usr/bin/env bash
# The GPU checks of the pruning design, as one prepared run for a machine with a CUDA
# GPU (TensorRT not needed): the CUDA kernels against the numpy reference, their
# bandwidth against the device's copy bandwidth, and a torch sweep of the pruned
# forward against the dense one over blur ratios at 1024^2 and 2048^2.
#
#   bash benchmarks/gpu_checks.sh [OUT]      (default OUT: gpu_checks)
#
# Needs m2ae importable beside a CUDA build of torch: installed (pip install -e ".[dev]"),
# or, on a machine that reaches no package index, installed here from the wheels that
# `bash benchmarks/gpu_wheels.sh` fetched into .whl/ beforehand (the dependencies a CUDA
# PyTorch image lacks), into a scratch folder, without touching the image's packages.
# Every step writes its log under OUT; a failing step does not stop the later ones, and
# the script exits non-zero if any failed.
set -uo pipefail
out="$(realpath -m "${1:-gpu_checks}")"
cd "$(dirname "$0")/.."
mkdir -p "$out"
if ! python3 -c "import m2ae.benchmarks" 2>/dev/null; then
    site="${TMPDIR:-/tmp}/m2ae-site"
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "m2ae is not installed and .whl/ holds no wheels: pip install -e '.[dev]', or run"
        echo "benchmarks/gpu_wheels.sh where pip reaches PyPI and bring .whl/ along"
        exit 2
    fi
    echo "== installing m2ae and .whl/ into $site (offline)"
    python3 -m pip install --quiet --upgrade --no-index --no-deps --no-compile --target "$site" .whl/*.whl || exit 2
    python3 -m pip install --quiet --upgrade --no-index --no-deps --no-build-isolation --target "$site" . || exit 2
    # PYTHONSAFEPATH: the checkout's own m2ae/ folder (the core modules only) must not
    # shadow the installed package, which maps the stage folders into it.
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH" PYTHONSAFEPATH=1
fi
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
