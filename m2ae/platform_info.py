"""What this machine offers for building and running TensorRT engines, and what to install.

``detect_platform`` reports the TensorRT version, the CUDA driver, the Python CUDA
binding the runtime would use (cuda-python, else pycuda) and the CUDA it targets, the
GPU (name, compute capability, unified memory) and whether this is a Jetson (Orin,
Thor). It never raises: whatever is missing (TensorRT, a CUDA binding, a driver, a GPU)
is ``None``. The GPU is queried through the CUDA driver library with ctypes, so no
Python CUDA package is needed. The builder (``m2ae.export``) and the runtime
(``m2ae.runtime``) both need this, so it lives here with the install hints and the
``require_*`` checks that turn a missing piece into one clear ``UserError``.

"Can TensorRT run here?" has one answer: ``tensorrt_module`` is the only import of
``tensorrt`` that may fail, and ``tensorrt_unavailable`` says why engines cannot be built
or run on this machine (None where they can); commands, benchmarks and test markers ask it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.metadata
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from m2ae.errors import UserError

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

CUDA_PYTHON = "cuda-python"
PYCUDA = "pycuda"
# The TensorRT runtime's order of preference: cuda-python is what TensorRT's own samples
# use since 10.14 and installs as a wheel; pycuda is kept for machines that have only it.
CUDA_BINDINGS = (CUDA_PYTHON, PYCUDA)
DESKTOP_INSTALL = "pip install 'm2ae[trt]'"
# JetPack's bindings go to the system Python: a venv sees them only with --system-site-packages.
JETSON_INSTALL = (
    "sudo apt install python3-libnvinfer (JetPack's TensorRT Python bindings; in a venv created with "
    "--system-site-packages)"
)
PYCUDA_INSTALL = "pip install pycuda (a source build against the local CUDA toolkit)"


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
    cuda_runtime_version: str | None  # the CUDA the CUDA binding was built for, "12.6"
    gpu_name: str | None
    compute_capability: str | None
    is_jetson: bool
    jetson_model: str | None  # "orin", "thor" or None
    unified_memory: bool  # integrated GPU that can map host memory: zero-copy I/O pays
    cuda_binding: str | None = None  # what the TensorRT runtime would use: "cuda-python 13.0.1", "pycuda 2025.1"

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


def _import_tensorrt() -> ModuleType | str:
    """The ``tensorrt`` module, or why importing it failed."""
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:  # OSError: the package is there, its libnvinfer is not
        return str(exc)


def tensorrt_module() -> ModuleType | None:
    """The ``tensorrt`` module, or None where it is not installed or its libraries do not load."""
    module = _import_tensorrt()
    return None if isinstance(module, str) else module


def tensorrt_version() -> str | None:
    """``tensorrt.__version__``, or None without a usable TensorRT."""
    trt = tensorrt_module()
    return None if trt is None else str(getattr(trt, "__version__", None) or "") or None


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


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package raises instead of returning None
        return False


def cuda_binding_version(binding: str) -> str | None:
    """The installed version of ``"cuda-python"`` or ``"pycuda"`` ("" if unknown); None if absent.

    Found without importing it: importing pycuda needs a CUDA driver.
    """
    if binding == CUDA_PYTHON:
        # cuda.bindings (cuda-bindings, cuda-python >= 12.6) or the older cuda.cudart layout.
        if not (_has_module("cuda.bindings") or _has_module("cuda.cudart")):
            return None
        return _distribution_version("cuda-bindings", "cuda-python") or ""
    if binding == PYCUDA:
        if not _has_module("pycuda"):
            return None
        return _distribution_version("pycuda") or ""
    raise ValueError(f"unknown CUDA binding {binding!r}; known: {', '.join(CUDA_BINDINGS)}")


def installed_cuda_binding() -> str | None:
    """``"cuda-python 13.0.1"`` or ``"pycuda 2025.1"``: the binding the runtime prefers among those installed."""
    for binding in CUDA_BINDINGS:
        version = cuda_binding_version(binding)
        if version is not None:
            return f"{binding} {version}".strip()
    return None


def _binding_runtime_version() -> str | None:
    """The CUDA version the installed binding targets; cudaRuntimeGetVersion needs no driver."""
    if cuda_binding_version(CUDA_PYTHON) is not None:
        try:
            try:
                runtime = importlib.import_module("cuda.bindings.runtime")
            except ImportError:
                runtime = importlib.import_module("cuda.cudart")
            error, version = runtime.cudaRuntimeGetVersion()
        except (ImportError, OSError, RuntimeError):
            return None
        return _format_cuda_version(version) if int(error) == 0 else None
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
    """Describe this machine; never raises for missing TensorRT, CUDA binding, driver or GPU."""
    driver_version, gpu = _driver_query(device)
    gpu_name = gpu.name if gpu else None
    jetson = is_jetson(release_file, gpu_name)
    return PlatformInfo(
        tensorrt_version=tensorrt_version(),
        cuda_driver_version=driver_version,
        cuda_runtime_version=_binding_runtime_version(),
        gpu_name=gpu_name,
        compute_capability=gpu.compute_capability if gpu else None,
        is_jetson=jetson,
        jetson_model=jetson_model(gpu_name, _read_text(model_file)) if jetson else None,
        unified_memory=bool(gpu and gpu.integrated and gpu.can_map_host_memory),
        cuda_binding=installed_cuda_binding(),
    )


# ---------------------------------------------------------------- what to install


def cuda_python_requirement(driver_version: str | None) -> str:
    """The cuda-python this driver runs: a CUDA 12 driver cannot run cuda-python 13 (its wheels need CUDA 13)."""
    major = driver_version.split(".", 1)[0] if driver_version else ""
    return "cuda-python>=12.6,<13" if major == "12" else "cuda-python>=12.6"


def cuda_python_install(platform: PlatformInfo) -> str:
    return f"pip install '{cuda_python_requirement(platform.cuda_driver_version)}'"


def cuda_binding_line(platform: PlatformInfo, in_use: str | None = None) -> str:
    """One line: the CUDA binding the TensorRT runtime uses (``in_use``, else what is installed), how to get either."""
    using = in_use or platform.cuda_binding
    either = f"{cuda_python_install(platform)} (preferred) or {PYCUDA_INSTALL}"
    if using is None:
        return f"CUDA binding: none installed; the TensorRT runtime needs one: {either}"
    return f"CUDA binding: {using}; to install either: {either}"


def install_hint(platform: PlatformInfo) -> str:
    """How to install TensorRT and a CUDA binding on this machine."""
    if platform.is_jetson:
        return f"{JETSON_INSTALL} and {cuda_python_install(platform)}"
    return DESKTOP_INSTALL


def require_tensorrt(platform: PlatformInfo | None = None) -> ModuleType:
    """Import TensorRT, or raise UserError saying how to install it on this machine."""
    module = _import_tensorrt()
    if isinstance(module, str):
        platform = platform or detect_platform()
        raise UserError(
            f"TensorRT is not installed ({module}); install it with: {install_hint(platform)}{no_gpu_note(platform)}"
        )
    return module


def _missing_gpu(platform: PlatformInfo) -> str:
    return "no CUDA driver was found" if platform.cuda_driver_version is None else "the CUDA driver sees no GPU"


def no_gpu_note(platform: PlatformInfo) -> str:
    """Appended to a missing-TensorRT message: installing TensorRT alone won't do without a GPU."""
    return "" if platform.has_gpu else f"; TensorRT also needs an NVIDIA GPU and here {_missing_gpu(platform)}"


def require_gpu(platform: PlatformInfo) -> None:
    if not platform.has_gpu:
        raise UserError(
            f"TensorRT needs an NVIDIA GPU and {_missing_gpu(platform)}; run this on a machine with one "
            "(`nvidia-smi` should list it, on Jetson the GPU comes with JetPack)"
        )


def tensorrt_unavailable(platform: PlatformInfo | None = None, running: bool = True) -> str | None:
    """Why TensorRT engines cannot be built (``running=False``) or built and run here, or
    None where they can: TensorRT and a GPU build them, running also needs a CUDA binding."""
    platform = platform or detect_platform()
    if platform.tensorrt_version is None:
        return f"TensorRT is not installed; install it with: {install_hint(platform)}"
    if not platform.has_gpu:
        return f"TensorRT needs an NVIDIA GPU and {_missing_gpu(platform)}"
    if running and platform.cuda_binding is None:
        return cuda_binding_line(platform)
    return None
