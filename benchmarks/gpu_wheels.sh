#!/usr/bin/env bash
# Fetch, where pip reaches PyPI, the wheels that `gpu_checks.sh` installs offline on a GPU
# machine that reaches nothing: m2ae's dependencies that a CUDA PyTorch image usually
# lacks (torch, onnx, onnxruntime, numpy, scipy, scikit-image and the rest are expected
# there). They go to .whl/ (git-ignored) for the Python version the GPU machine runs.
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]      (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
pyver="${1:-3.12}"
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${platforms[@]}" -d .whl onnxsim onnxruntime-extensions onnxconverter-common polygraphy
ls -l .whl
