"""What this machine offers for building and running TensorRT engines.

``detect_platform`` reports the TensorRT version, the CUDA driver and runtime, the GPU
(name, compute capability, unified memory) and whether this is a Jetson (Orin, Thor).
It never raises: whatever is missing (TensorRT, pycuda, a driver, a GPU) is ``None``,
so the builder and the runtime can say precisely what to install. The GPU is queried
through the CUDA driver library with ctypes, so no Python CUDA package is needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
from dataclasses import asdict, dataclass
from pathlib import Path

JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL_FILE = Path("/proc/device-tree/model")

# Values of CUdevice_attribute in cuda.h.
_ATTR_INTEGRATED = 18
_ATTR_CAN_MAP_HOST_MEMORY = 19
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76

_JETSON_MODELS = ("orin", "thor")
# Integrated GPUs of the Tegra line report names like "Orin" or "NVIDIA Thor".
_TEGRA_NAME_HINTS = _JETSON_MODELS + ("xavier", "tegra")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"
    integrated: bool
    can_map_host_memory: bool


@dataclass(frozen=True)
class PlatformInfo:
    """This machine as the TensorRT builder and runtime see it; None = not available."""

    tensorrt_version: str | None
    cuda_driver_version: str | None  # the driver's CUDA version, "12.6"
    cuda_runtime_version: str | None  # the CUDA pycuda was built against, "12.6"
    gpu_name: str | None
    compute_capability: str | None
    is_jetson: bool
    jetson_model: str | None  # "orin", "thor" or None
    unified_memory: bool  # integrated GPU that can map host memory: zero-copy I/O pays

    @property
    def has_gpu(self) -> bool:
        return self.gpu_name is not None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def jetson_model(*names: str | None) -> str | None:
    """``"orin"`` or ``"thor"`` if one of the names (device name, board model) says so."""
    for name in names:
        lowered = (name or "").lower()
        for model in _JETSON_MODELS:
            if model in lowered:
                return model
    return None


def is_jetson(release_file: Path = JETSON_RELEASE_FILE, device_name: str | None = None) -> bool:
    """True on a Jetson: L4T's release file exists, or the GPU has a Tegra name."""
    if release_file.is_file():
        return True
    lowered = (device_name or "").lower()
    return any(hint in lowered for hint in _TEGRA_NAME_HINTS)


def tensorrt_version() -> str | None:
    try:
        trt = importlib.import_module("tensorrt")
    except (ImportError, OSError):
        return None
    return str(getattr(trt, "__version__", None) or "") or None


def _format_cuda_version(version: int) -> str:
    return f"{version // 1000}.{(version % 1000) // 10}"


def _load_libcuda() -> ctypes.CDLL | None:
    candidates = ["libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")]
    for name in candidates:
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _driver_query(device: int) -> tuple[str | None, GpuInfo | None]:
    """(driver CUDA version, GPU info) from libcuda; (None, None) without a driver."""
    lib = _load_libcuda()
    if lib is None:
        return None, None
    version = ctypes.c_int(0)
    driver_version = None
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
        driver_version = _format_cuda_version(version.value)
    if lib.cuInit(0) != 0:
        return driver_version, None
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or not 0 <= device < count.value:
        return driver_version, None
    handle = ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(handle), device) != 0:
        return driver_version, None
    name = ctypes.create_string_buffer(256)
    if lib.cuDeviceGetName(name, len(name), handle) != 0:
        return driver_version, None

    def attribute(attr: int) -> int:
        value = ctypes.c_int(0)
        if lib.cuDeviceGetAttribute(ctypes.byref(value), attr, handle) != 0:
            return 0
        return value.value

    gpu = GpuInfo(
        name=name.value.decode(errors="replace"),
        compute_capability=f"{attribute(_ATTR_CC_MAJOR)}.{attribute(_ATTR_CC_MINOR)}",
        integrated=bool(attribute(_ATTR_INTEGRATED)),
        can_map_host_memory=bool(attribute(_ATTR_CAN_MAP_HOST_MEMORY)),
    )
    return driver_version, gpu


def _pycuda_runtime_version() -> str | None:
    try:
        driver = importlib.import_module("pycuda.driver")
    except (ImportError, OSError):
        return None
    major, minor, *_ = driver.get_version()
    return f"{major}.{minor}"


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def detect_platform(
    release_file: Path = JETSON_RELEASE_FILE,
    device: int = 0,
    model_file: Path = DEVICE_TREE_MODEL_FILE,
) -> PlatformInfo:
    """Describe this machine; never raises for missing TensorRT, pycuda, driver or GPU."""
    driver_version, gpu = _driver_query(device)
    gpu_name = gpu.name if gpu else None
    jetson = is_jetson(release_file, gpu_name)
    return PlatformInfo(
        tensorrt_version=tensorrt_version(),
        cuda_driver_version=driver_version,
        cuda_runtime_version=_pycuda_runtime_version(),
        gpu_name=gpu_name,
        compute_capability=gpu.compute_capability if gpu else None,
        is_jetson=jetson,
        jetson_model=jetson_model(gpu_name, _read_text(model_file)) if jetson else None,
        unified_memory=bool(gpu and gpu.integrated and gpu.can_map_host_memory),
    )
