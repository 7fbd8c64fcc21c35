"""The CUDA binding layer of the TensorRT runtime (``m2ae.runtime.cuda_binding``).

Which binding ``load_binding`` picks is plain Python, tested with stand-ins for our own
``CudaBinding`` classes (they only construct or fail to import; no CUDA behaviour is
faked). cuda-python itself is a dev dependency, so the real ``cuda.bindings`` is
imported here and, on a machine without a driver or GPU, every call must end in a
``CudaError`` naming the call and the CUDA error, never in a crash. With a GPU, each
installed binding copies data through device and mapped host memory.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from m2ae.errors import UserError
from m2ae.platform_info import (
    CUDA_BINDINGS,
    CUDA_PYTHON,
    PYCUDA,
    cuda_binding_line,
    cuda_binding_version,
    cuda_python_requirement,
    detect_platform,
    installed_cuda_binding,
)
from m2ae.runtime import cuda_binding
from m2ae.runtime.cuda_binding import CudaDevice, CudaError, CudaPythonBinding, load_binding

PLATFORM = detect_platform()
HAS_CUDA_PYTHON = cuda_binding_version(CUDA_PYTHON) is not None
INSTALLED = [binding for binding in CUDA_BINDINGS if cuda_binding_version(binding) is not None]


# ---------------------------------------------------------------- choosing a binding


def importable(name: str) -> type:
    """A stand-in for one of our binding classes whose import succeeds."""
    return type(f"Importable_{name}", (), {"name": name})


def missing(name: str) -> type:
    """A stand-in for one of our binding classes whose CUDA package is not installed."""

    def __init__(self: object) -> None:
        raise ImportError(f"No module named {name!r}")

    return type(f"Missing_{name}", (), {"__init__": __init__})


def test_load_binding_prefers_cuda_python(monkeypatch):
    monkeypatch.setattr(cuda_binding, "BINDINGS", {CUDA_PYTHON: importable(CUDA_PYTHON), PYCUDA: importable(PYCUDA)})
    assert load_binding().name == CUDA_PYTHON
    assert load_binding(PYCUDA).name == PYCUDA


def test_load_binding_falls_back_to_pycuda(monkeypatch):
    monkeypatch.setattr(cuda_binding, "BINDINGS", {CUDA_PYTHON: missing(CUDA_PYTHON), PYCUDA: importable(PYCUDA)})
    assert load_binding().name == PYCUDA


def test_load_binding_without_either_says_how_to_install_both(monkeypatch):
    monkeypatch.setattr(cuda_binding, "BINDINGS", {CUDA_PYTHON: missing(CUDA_PYTHON), PYCUDA: missing(PYCUDA)})
    with pytest.raises(UserError) as info:
        load_binding(platform=PLATFORM)
    message = str(info.value)
    assert "needs cuda-python or pycuda" in message and "No module named 'pycuda'" in message
    assert "pip install 'cuda-python>=12.6" in message and "pip install pycuda" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="needs pycuda, which could not be imported"):
        load_binding(PYCUDA, platform=PLATFORM)
    with pytest.raises(UserError, match="unknown CUDA binding 'cupy'"):
        load_binding("cupy")


def test_cuda_python_requirement_follows_the_driver():
    # cuda-python 13 wheels need a CUDA 13 driver; JetPack 6 and CUDA 12 desktops need 12.x.
    assert cuda_python_requirement("12.6") == "cuda-python>=12.6,<13"
    assert cuda_python_requirement("13.0") == "cuda-python>=12.6"
    assert cuda_python_requirement(None) == "cuda-python>=12.6"


def test_binding_line_names_the_binding_and_both_installs():
    line = cuda_binding_line(PLATFORM, "cuda-python 13.0.1 (cuda.bindings.runtime)")
    assert line.startswith("CUDA binding: cuda-python 13.0.1 (cuda.bindings.runtime); ")
    assert "pip install 'cuda-python" in line and "pip install pycuda" in line and "\n" not in line
    nothing = cuda_binding_line(dataclasses.replace(PLATFORM, cuda_binding=None))
    assert nothing.startswith("CUDA binding: none installed")


def test_platform_reports_the_binding_the_runtime_prefers():
    expected = None if not INSTALLED else INSTALLED[0]
    found = installed_cuda_binding()
    assert (found is None) if expected is None else found.startswith(f"{expected} ")
    assert PLATFORM.cuda_binding == found


def test_device_description():
    orin = CudaDevice(0, "Orin", "8.7", 64 << 30, integrated=True, can_map_host_memory=True)
    assert orin.unified_memory and orin.describe() == "Orin (compute capability 8.7, 64.0 GiB)"
    assert not CudaDevice(0, "NVIDIA H100", "9.0", 80 << 30, integrated=False, can_map_host_memory=True).unified_memory


# ---------------------------------------------------------------- cuda-python without a GPU


@pytest.mark.skipif(not HAS_CUDA_PYTHON, reason="cuda-python is not installed (pip install 'm2ae[dev]')")
@pytest.mark.skipif(PLATFORM.has_gpu, reason="a GPU is present, so CUDA calls succeed here")
def test_every_cuda_python_call_fails_clearly_without_a_gpu():
    binding = CudaPythonBinding()
    assert binding.describe().startswith("cuda-python ") and binding.module in ("cuda.bindings.runtime", "cuda.cudart")
    host = np.zeros(16, np.uint8)
    calls = [
        ("cudaGetDeviceCount", binding.device_count),
        ("cudaGetDeviceCount", lambda: binding.open_device(0)),
        ("cudaMalloc", lambda: binding.device_alloc(16)),
        ("cudaFree", lambda: binding.device_free(0)),
        ("cudaHostAlloc", lambda: binding.pinned_empty(16)),
        ("cudaHostAlloc", lambda: binding.pinned_empty(16, mapped=True)),
        ("cudaFreeHost", lambda: binding.pinned_free(host)),
        ("cudaHostGetDevicePointer", lambda: binding.mapped_pointer(host)),
        ("cudaStreamCreate", binding.stream_create),
        ("cudaStreamSynchronize", lambda: binding.stream_synchronize(0)),
        ("cudaStreamDestroy", lambda: binding.stream_destroy(0)),
        ("cudaMemcpyAsync", lambda: binding.copy_to_device_async(0, host, 0)),
        ("cudaMemcpyAsync", lambda: binding.copy_to_host_async(host, 0, 0)),
    ]
    for call, run in calls:
        with pytest.raises(CudaError) as info:
            run()
        message = str(info.value)
        assert isinstance(info.value, UserError)
        assert message.startswith(f"no CUDA driver/GPU: {call} failed: cudaError"), message
        assert "\n" not in message
    if PLATFORM.cuda_driver_version is None:
        assert "no NVIDIA driver is installed" in message


# ---------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not (PLATFORM.has_gpu and INSTALLED), reason="needs an NVIDIA GPU and cuda-python or pycuda")
@pytest.mark.parametrize("name", INSTALLED)
def test_copies_through_device_and_mapped_memory(name, rng):
    binding = load_binding(name)
    device = binding.open_device(0)
    assert device.name and device.total_memory > 0
    data = rng.random(1000, dtype=np.float32)
    try:
        with binding.activate():
            stream = binding.stream_create()
            source, target = binding.pinned_empty(data.nbytes), binding.pinned_empty(data.nbytes)
            pointer = binding.device_alloc(data.nbytes)
            source.view(np.float32)[:] = data
            binding.copy_to_device_async(pointer, source, stream)
            binding.copy_to_host_async(target, pointer, stream)
            binding.stream_synchronize(stream)
            np.testing.assert_array_equal(target.view(np.float32), data)
            if device.can_map_host_memory:
                mapped = binding.pinned_empty(data.nbytes, mapped=True)
                mapped.view(np.float32)[:] = data
                binding.copy_to_host_async(target, binding.mapped_pointer(mapped), stream)
                binding.stream_synchronize(stream)
                np.testing.assert_array_equal(target.view(np.float32), data)
                binding.pinned_free(mapped)
            binding.device_free(pointer)
            binding.pinned_free(source)
            binding.pinned_free(target)
            binding.stream_destroy(stream)
            with pytest.raises(CudaError, match="failed"):
                binding.device_alloc(1 << 62)  # far beyond any GPU: the call's error, as a CudaError
    finally:
        binding.close()
