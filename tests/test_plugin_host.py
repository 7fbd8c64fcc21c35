"""Host logic of the TensorRT plugins, run without a GPU or libnvinfer.

tests/csrc/plugin_host_harness.cpp is compiled with g++ (-Wall -Wextra -Werror) against
the TensorRT headers in $M2AE_TENSORRT_INCLUDE, together with the plugin, creator and
shared sources (not plugin_registration.cpp: it needs libnvinfer's registry), and
linked to the kernels-only library the CMake project builds. It then calls what
TensorRT calls on the creators and plugins of the tile contract (plugin version "2"):
identity, attribute parsing in both phases (tile and halo required, any integer
width), serialization round trips, clone/attach, output types, the format contract,
output shapes (through a test double of TensorRT's expression builder),
configurePlugin/onShapeChange, capabilities, and enqueue where the launchers return
before touching the device. Nothing launches, so libcudart loads without a GPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from m2ae.trt_plugins.build import SOURCE_DIR, PluginBuildConfig, build_plugins, find_nvcc

HARNESS_DIR = Path(__file__).resolve().parent / "csrc"
CSRC = SOURCE_DIR / "csrc"
PLUGIN_SOURCES = ("plugin_common.cpp", "masked_gather_plugin.cpp", "masked_scatter_plugin.cpp",
                  "masked_ops_creators.cpp")
MIN_CHECKS = 580  # the harness makes ~650 checks; far fewer means a section silently did not run


def _tensorrt_include() -> Path:
    value = os.environ.get("M2AE_TENSORRT_INCLUDE")
    if not value:
        pytest.skip("M2AE_TENSORRT_INCLUDE is not set: no TensorRT headers to compile the plugins against")
    include = Path(value)
    if not (include / "NvInferRuntime.h").is_file():
        pytest.skip(f"M2AE_TENSORRT_INCLUDE={include} has no NvInferRuntime.h")
    return include


def _cuda_include(nvcc: Path) -> Path:
    """The folder with cuda_runtime_api.h that nvcc itself compiles against."""
    dryrun = subprocess.run([str(nvcc), "-dryrun", "-c", "-x", "c++", os.devnull, "-o", os.devnull],
                            capture_output=True, text=True)
    candidates = [Path(p) for p in re.findall(r'-I"?([^"\s]+)', dryrun.stdout + dryrun.stderr)]
    candidates += [nvcc.resolve().parent.parent / "include", Path("/usr/local/cuda/include")]
    for candidate in candidates:
        if (candidate / "cuda_runtime_api.h").is_file():
            return candidate
    pytest.skip(f"cuda_runtime_api.h not found next to {nvcc}")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    include = _tensorrt_include()
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot compile the host harness")
    if shutil.which("cmake") is None or not (shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").is_file()):
        pytest.skip("cmake or nvcc not found: cannot build the kernels library the plugins link to")
    nvcc = find_nvcc()
    out = tmp_path_factory.mktemp("plugin_host")
    kernels = build_plugins(PluginBuildConfig(out_dir=out / "kernels", kernels_only=True, archs=("87",)))
    kernels_dir = kernels.kernels_library.parent
    binary = out / "plugin_host_harness"
    command = [gxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror",
               "-isystem", str(include), "-isystem", str(_cuda_include(nvcc)),
               "-I", str(CSRC), "-I", str(HARNESS_DIR),
               str(HARNESS_DIR / "plugin_host_harness.cpp"), *(str(CSRC / name) for name in PLUGIN_SOURCES),
               f"-L{kernels_dir}", "-lm2ae_kernels", f"-Wl,-rpath,{kernels_dir}", "-o", str(binary)]
    compiled = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if compiled.returncode != 0:
        pytest.fail(f"harness does not compile against {include}:\n{compiled.stderr[-6000:]}")
    return binary


@pytest.mark.slow
@pytest.mark.tensorrt
def test_plugin_host_logic(harness: Path) -> None:
    result = subprocess.run([str(harness)], capture_output=True, text=True, timeout=120)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    summary = re.search(r"(\d+) checks, (\d+) failed", result.stdout)
    assert summary is not None, report[-2000:]
    assert int(summary.group(2)) == 0
    assert int(summary.group(1)) >= MIN_CHECKS, report[-2000:]
