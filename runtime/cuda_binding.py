"""The CUDA calls the TensorRT runtime makes, over cuda-python or pycuda.

``CudaBinding`` is the handful of operations ``trt_engine`` needs: find a device and
describe it, make it current around a block of calls, device memory, page-locked host
memory (also mapped into the GPU's address space, for zero-copy I/O on Jetson), streams,
and asynchronous copies between host and device. It has two implementations:

- ``CudaPythonBinding``: cuda-python's runtime API, ``cuda.bindings.runtime`` (cuda-python
  12.6 and newer, 13.x included) or ``cuda.cudart`` (older 12.x). What TensorRT's own
  samples use since 10.14; installs as a wheel everywhere.
- ``PycudaBinding``: pycuda's driver API, for machines where pycuda is what is installed.

``load_binding`` picks cuda-python, else pycuda, else raises UserError saying how to
install either. Every call's CUDA status is checked and a failure raises ``CudaError``
(a UserError: one line at the CLI) naming the call and the CUDA error, so a machine
without a driver or GPU, or a driver too old for the binding, gets a message, not a crash.
Both work on the device's primary context, which TensorRT, torch and CuPy share.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from m2ae.errors import UserError
from m2ae.platform_info import (
    CUDA_BINDINGS,
    CUDA_PYTHON,
    PYCUDA,
    PYCUDA_INSTALL,
    PlatformInfo,
    cuda_binding_version,
    cuda_python_install,
    cuda_python_requirement,
    detect_platform,
)

NO_DEVICE = "no CUDA driver/GPU"
# cuda-python statuses that mean "nothing to run on": no driver (or one older than the
# binding's CUDA) reads as InsufficientDriver, a driver without a GPU as NoDevice.
_NO_DEVICE_ERRORS = frozenset({"cudaErrorInsufficientDriver", "cudaErrorNoDevice"})


class CudaError(UserError):
    """A CUDA call failed; the message names the call and the CUDA error."""


@dataclass(frozen=True)
class CudaDevice:
    """One GPU as the binding sees it."""

    index: int
    name: str
    compute_capability: str  # "8.7"
    total_memory: int  # bytes
    integrated: bool
    can_map_host_memory: bool

    @property
    def unified_memory(self) -> bool:
        """An integrated GPU that can map host memory: zero-copy I/O saves the copies."""
        return self.integrated and self.can_map_host_memory

    def describe(self) -> str:
        return f"{self.name} (compute capability {self.compute_capability}, {self.total_memory / 2**30:.1f} GiB)"


class CudaBinding(Protocol):
    """What the TensorRT runtime needs from a Python CUDA binding.

    Pointers and streams are plain ints (what TensorRT's ``set_tensor_address`` and
    ``execute_async_v3`` take); host buffers are 1-D uint8 numpy arrays over page-locked
    memory. Every method raises ``CudaError`` when its CUDA call fails.
    """

    name: str  # "cuda-python" or "pycuda"
    version: str
    module: str  # the module the calls go through

    def describe(self) -> str:
        """``"cuda-python 13.0.1 (cuda.bindings.runtime)"``."""

    def device_count(self) -> int: ...

    def open_device(self, device: int) -> CudaDevice:
        """Make ``device`` (its primary context) the one the other calls use, and describe it."""

    def activate(self) -> AbstractContextManager[None]:
        """The opened device current for the calls inside the block (TensorRT's included)."""

    def close(self) -> None:
        """Let go of the device; free everything allocated first."""

    def device_alloc(self, nbytes: int) -> int: ...

    def device_free(self, pointer: int) -> None: ...

    def pinned_empty(self, nbytes: int, mapped: bool = False) -> np.ndarray:
        """Page-locked host memory; ``mapped`` also maps it into the device's address space."""

    def pinned_free(self, array: np.ndarray) -> None:
        """Free what ``pinned_empty`` returned (the array itself, not a view)."""

    def mapped_pointer(self, array: np.ndarray) -> int:
        """The device address of a ``pinned_empty(..., mapped=True)`` array."""

    def stream_create(self) -> int: ...

    def stream_synchronize(self, stream: int) -> None: ...

    def stream_destroy(self, stream: int) -> None: ...

    def copy_to_device_async(self, pointer: int, host: np.ndarray, stream: int) -> None:
        """Queue a copy of the contiguous ``host`` (in pinned memory) to ``pointer`` on ``stream``."""

    def copy_to_host_async(self, host: np.ndarray, pointer: int, stream: int) -> None:
        """Queue a copy from ``pointer`` into the contiguous ``host`` (in pinned memory) on ``stream``."""


def _describe(binding: CudaBinding) -> str:
    return f"{binding.name} {binding.version} ({binding.module})".replace("  ", " ")


class CudaPythonBinding:
    """``CudaBinding`` on cuda-python's runtime API."""

    name = CUDA_PYTHON

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime

            self.module = "cuda.bindings.runtime"
        except ImportError:
            from cuda import cudart as runtime  # cuda-python before 12.6; an ImportError here means none

            self.module = "cuda.cudart"
        self._rt: Any = runtime
        self.version = cuda_binding_version(CUDA_PYTHON) or ""
        self._device: int | None = None

    def describe(self) -> str:
        return _describe(self)

    # ------------------------------------------------------------ status checks

    def _check(self, call: str, result: Any) -> Any:
        """cuda-python returns (status, *values): raise CudaError unless success; return the value(s)."""
        status, *values = result
        if int(status) != 0:
            raise CudaError(self._failure(call, status))
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def _failure(self, call: str, status: Any) -> str:
        name = self._text(self._rt.cudaGetErrorName(status)) or f"CUDA error {int(status)}"
        reason = self._text(self._rt.cudaGetErrorString(status))
        message = f"{call} failed: {name}" + (f" ({reason})" if reason else "")
        if name in _NO_DEVICE_ERRORS:
            return f"{NO_DEVICE}: {message}{self._driver_note()}"
        return message

    @staticmethod
    def _text(result: Any) -> str:
        status, value = result
        if int(status) != 0:
            return ""
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    def _driver_note(self) -> str:
        """Why there is no usable device: no driver at all, or one older than the binding's CUDA."""
        status, driver = self._rt.cudaDriverGetVersion()
        if int(status) != 0 or not driver:
            return "; no NVIDIA driver is installed (`nvidia-smi` should list the GPU)"
        status, runtime = self._rt.cudaRuntimeGetVersion()
        if int(status) == 0 and driver // 1000 < runtime // 1000:
            driver_text = f"{driver // 1000}.{driver % 1000 // 10}"
            return (
                f"; the driver supports CUDA {driver_text} and {self.describe()} is built for CUDA "
                f"{runtime // 1000}: pip install '{cuda_python_requirement(driver_text)}'"
            )
        return ""

    # ------------------------------------------------------------ devices

    def device_count(self) -> int:
        return int(self._check("cudaGetDeviceCount", self._rt.cudaGetDeviceCount()))

    def open_device(self, device: int) -> CudaDevice:
        count = self.device_count()
        if not 0 <= device < count:
            raise CudaError(f"CUDA device {device} does not exist: this machine has {count} (0 to {count - 1})")
        # The runtime API works on the device's primary context: the one TensorRT and torch use.
        self._check("cudaSetDevice", self._rt.cudaSetDevice(device))
        props = self._check("cudaGetDeviceProperties", self._rt.cudaGetDeviceProperties(device))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        self._device = device
        return CudaDevice(
            index=device,
            name=name.rstrip("\x00"),
            compute_capability=f"{props.major}.{props.minor}",
            total_memory=int(props.totalGlobalMem),
            integrated=bool(props.integrated),
            can_map_host_memory=bool(props.canMapHostMemory),
        )

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        if self._device is None:
            raise RuntimeError("CudaPythonBinding.activate before open_device")
        previous = self._check("cudaGetDevice", self._rt.cudaGetDevice())
        if previous != self._device:
            self._check("cudaSetDevice", self._rt.cudaSetDevice(self._device))
        try:
            yield
        finally:
            if previous != self._device:
                self._check("cudaSetDevice", self._rt.cudaSetDevice(previous))

    def close(self) -> None:
        # The primary context stays: torch, CuPy or another engine may still be using it.
        self._device = None

    # ------------------------------------------------------------ memory

    def device_alloc(self, nbytes: int) -> int:
        return int(self._check("cudaMalloc", self._rt.cudaMalloc(nbytes)))

    def device_free(self, pointer: int) -> None:
        self._check("cudaFree", self._rt.cudaFree(pointer))

    def pinned_empty(self, nbytes: int, mapped: bool = False) -> np.ndarray:
        flags = self._rt.cudaHostAllocMapped if mapped else self._rt.cudaHostAllocDefault
        pointer = int(self._check("cudaHostAlloc", self._rt.cudaHostAlloc(nbytes, flags)))
        return np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(pointer))

    def pinned_free(self, array: np.ndarray) -> None:
        self._check("cudaFreeHost", self._rt.cudaFreeHost(array.ctypes.data))

    def mapped_pointer(self, array: np.ndarray) -> int:
        return int(self._check("cudaHostGetDevicePointer", self._rt.cudaHostGetDevicePointer(array.ctypes.data, 0)))

    # ------------------------------------------------------------ streams and copies

    def stream_create(self) -> int:
        return int(self._check("cudaStreamCreate", self._rt.cudaStreamCreate()))

    def stream_synchronize(self, stream: int) -> None:
        self._check("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(stream))

    def stream_destroy(self, stream: int) -> None:
        self._check("cudaStreamDestroy", self._rt.cudaStreamDestroy(stream))

    def copy_to_device_async(self, pointer: int, host: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check("cudaMemcpyAsync", self._rt.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, stream))

    def copy_to_host_async(self, host: np.ndarray, pointer: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check("cudaMemcpyAsync", self._rt.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, stream))


class PycudaBinding:
    """``CudaBinding`` on pycuda's driver API, pushing the device's primary context around calls."""

    name = PYCUDA
    module = "pycuda.driver"

    def __init__(self) -> None:
        import pycuda.driver  # ImportError or OSError (no libcuda): load_binding tries the next

        self._cuda: Any = pycuda.driver
        self.version = cuda_binding_version(PYCUDA) or ""
        self._context: Any = None
        # pycuda frees through its own objects: keep them by the int handles the runtime uses.
        self._allocations: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}

    def describe(self) -> str:
        return _describe(self)

    @contextlib.contextmanager
    def _calling(self, call: str, prefix: str = "") -> Iterator[None]:
        """Turn pycuda's exception (its text names the driver call and error) into a CudaError."""
        try:
            yield
        except self._cuda.Error as exc:
            raise CudaError(f"{prefix}{call} failed: {exc}") from None

    def device_count(self) -> int:
        with self._calling("cuInit", f"{NO_DEVICE}: "):
            self._cuda.init()
            return int(self._cuda.Device.count())

    def open_device(self, device: int) -> CudaDevice:
        count = self.device_count()
        if not 0 <= device < count:
            raise CudaError(f"CUDA device {device} does not exist: this machine has {count} (0 to {count - 1})")
        cuda = self._cuda
        with self._calling("cuDevicePrimaryCtxRetain"):
            handle = cuda.Device(device)
            self._context = handle.retain_primary_context()
            major, minor = handle.compute_capability()
            return CudaDevice(
                index=device,
                name=str(handle.name()),
                compute_capability=f"{major}.{minor}",
                total_memory=int(handle.total_memory()),
                integrated=bool(handle.get_attribute(cuda.device_attribute.INTEGRATED)),
                can_map_host_memory=bool(handle.get_attribute(cuda.device_attribute.CAN_MAP_HOST_MEMORY)),
            )

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        if self._context is None:
            raise RuntimeError("PycudaBinding.activate before open_device")
        with self._calling("cuCtxPushCurrent"):
            self._context.push()
        try:
            yield
        finally:
            with self._calling("cuCtxPopCurrent"):
                self._cuda.Context.pop()

    def close(self) -> None:
        self._streams.clear()
        if self._context is not None:
            with self._calling("cuDevicePrimaryCtxRelease"):
                self._context.detach()
            self._context = None

    def device_alloc(self, nbytes: int) -> int:
        with self._calling("cuMemAlloc"):
            allocation = self._cuda.mem_alloc(nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def device_free(self, pointer: int) -> None:
        with self._calling("cuMemFree"):
            self._allocations.pop(pointer).free()

    def pinned_empty(self, nbytes: int, mapped: bool = False) -> np.ndarray:
        flags = self._cuda.host_alloc_flags.DEVICEMAP if mapped else 0
        with self._calling("cuMemHostAlloc"):
            return self._cuda.pagelocked_empty(nbytes, np.uint8, mem_flags=flags)

    def pinned_free(self, array: np.ndarray) -> None:
        with self._calling("cuMemFreeHost"):
            array.base.free()  # the HostAllocation behind pagelocked_empty's array

    def mapped_pointer(self, array: np.ndarray) -> int:
        with self._calling("cuMemHostGetDevicePointer"):
            return int(array.base.get_device_pointer())

    def stream_create(self) -> int:
        with self._calling("cuStreamCreate"):
            stream = self._cuda.Stream()
        self._streams[stream.handle] = stream
        return int(stream.handle)

    def stream_synchronize(self, stream: int) -> None:
        with self._calling("cuStreamSynchronize"):
            self._streams[stream].synchronize()

    def stream_destroy(self, stream: int) -> None:
        # pycuda destroys a stream when its object goes; dropping the last reference is the call.
        with self._calling("cuStreamDestroy"):
            del self._streams[stream]

    def copy_to_device_async(self, pointer: int, host: np.ndarray, stream: int) -> None:
        with self._calling("cuMemcpyHtoDAsync"):
            self._cuda.memcpy_htod_async(self._allocations.get(pointer, pointer), host, self._streams[stream])

    def copy_to_host_async(self, host: np.ndarray, pointer: int, stream: int) -> None:
        with self._calling("cuMemcpyDtoHAsync"):
            self._cuda.memcpy_dtoh_async(host, self._allocations.get(pointer, pointer), self._streams[stream])


BINDINGS: dict[str, type] = {CUDA_PYTHON: CudaPythonBinding, PYCUDA: PycudaBinding}


def load_binding(prefer: str | None = None, platform: PlatformInfo | None = None) -> CudaBinding:
    """The binding named by ``prefer``, else the first of cuda-python, pycuda that imports.

    Raises UserError naming what failed and how to install either binding.
    """
    if prefer is not None and prefer not in BINDINGS:
        raise UserError(f"unknown CUDA binding {prefer!r}; choose {' or '.join(CUDA_BINDINGS)}")
    failures = []
    for name in (prefer,) if prefer else CUDA_BINDINGS:
        try:
            return BINDINGS[name]()
        except (ImportError, OSError) as exc:
            failures.append(f"{name}: {exc}")
    platform = platform or detect_platform()
    wanted = prefer or " or ".join(CUDA_BINDINGS)
    raise UserError(
        f"the TensorRT runtime needs {wanted}, which could not be imported ({'; '.join(failures)}); "
        f"install with: {cuda_python_install(platform)} (preferred) or {PYCUDA_INSTALL}"
    )
