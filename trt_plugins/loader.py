"""Finding, checking and loading the native libraries that ``m2ae plugin build`` makes.

``load()`` opens ``libm2ae_trt_plugins.so`` with ``RTLD_GLOBAL`` so its static
registrar puts the MaskedGather / MaskedScatter creators into TensorRT's plugin
registry. Before that it checks the build's manifest (written by ``build.py`` next to
the libraries) against the TensorRT this Python imports (same major.minor) and the
GPU it sees (an architecture the kernels were compiled for), so a mismatch is a
one-line error instead of a failed engine build.

``load_kernels()`` opens the TensorRT-free ``libm2ae_kernels.so`` and wraps its C
launchers for device arrays (torch CUDA tensors, CuPy arrays: anything with
``__cuda_array_interface__``); tests and benchmarks use it.

Search order for a library: an explicit path (file or build folder), then the
environment variable (``M2AE_PLUGIN_LIB`` / ``M2AE_KERNELS_LIB``), then the builds in
the default folder (``default_plugin_root()``), newest compatible first.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from m2ae.errors import UserError

PLUGIN_LIB_NAME = "libm2ae_trt_plugins.so"
KERNELS_LIB_NAME = "libm2ae_kernels.so"
MANIFEST_NAME = "manifest.json"
PLUGIN_LIB_ENV = "M2AE_PLUGIN_LIB"
KERNELS_LIB_ENV = "M2AE_KERNELS_LIB"
PLUGIN_DIR_ENV = "M2AE_PLUGIN_DIR"
MANIFEST_FORMAT = 1
BUILD_HINT = "build it with `m2ae plugin build`"


def default_plugin_root(environ: Mapping[str, str] = os.environ) -> Path:
    """``$M2AE_PLUGIN_DIR``, else ``$XDG_CACHE_HOME/m2ae/plugins``, else ``~/.cache/m2ae/plugins``."""
    if environ.get(PLUGIN_DIR_ENV):
        return Path(environ[PLUGIN_DIR_ENV]).expanduser()
    base = Path(environ["XDG_CACHE_HOME"]).expanduser() if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "m2ae" / "plugins"


@dataclass(frozen=True)
class LibraryRecord:
    file: str
    sha256: str


@dataclass(frozen=True)
class BuildManifest:
    """What a build made and for what: the JSON written next to the libraries."""

    tensorrt_version: str | None  # headers the plugins were compiled against; None for kernels only
    cuda_archs: tuple[str, ...]  # CMAKE_CUDA_ARCHITECTURES entries, e.g. ("87", "90")
    cuda_version: str | None
    kernels_only: bool
    libraries: dict[str, LibraryRecord] = field(default_factory=dict)  # "kernels" / "plugins" -> record
    source_sha256: str = ""
    built_at: str = ""

    def to_json(self) -> str:
        payload = {
            "format": MANIFEST_FORMAT,
            "tensorrt_version": self.tensorrt_version,
            "cuda_archs": list(self.cuda_archs),
            "cuda_version": self.cuda_version,
            "kernels_only": self.kernels_only,
            "libraries": {k: {"file": v.file, "sha256": v.sha256} for k, v in self.libraries.items()},
            "source_sha256": self.source_sha256,
            "built_at": self.built_at,
        }
        return json.dumps(payload, indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> BuildManifest:
        try:
            payload = json.loads(path.read_text())
            return cls(
                tensorrt_version=payload["tensorrt_version"],
                cuda_archs=tuple(str(a) for a in payload["cuda_archs"]),
                cuda_version=payload.get("cuda_version"),
                kernels_only=bool(payload["kernels_only"]),
                libraries={
                    k: LibraryRecord(file=v["file"], sha256=v["sha256"]) for k, v in payload["libraries"].items()
                },
                source_sha256=payload.get("source_sha256", ""),
                built_at=payload.get("built_at", ""),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{path}: unreadable plugin build manifest ({exc}); rebuild with `m2ae plugin build`")


# ---------------------------------------------------------------------------------
# Compatibility checks


def _major_minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def runtime_tensorrt_version() -> str | None:
    """``tensorrt.__version__`` when TensorRT's Python package is installed, else None."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    return str(importlib.import_module("tensorrt").__version__)


def visible_compute_capability() -> tuple[int, int] | None:
    """Compute capability of the current CUDA device via CuPy or torch; None without a GPU."""
    if importlib.util.find_spec("cupy") is not None:
        try:
            cupy = importlib.import_module("cupy")
            cc = str(cupy.cuda.Device().compute_capability)
            return int(cc[:-1]), int(cc[-1])
        except Exception:  # noqa: BLE001 - no driver / no device: fall through to torch
            pass
    if importlib.util.find_spec("torch") is not None:
        torch = importlib.import_module("torch")
        if torch.cuda.is_available():
            return tuple(torch.cuda.get_device_capability())  # type: ignore[return-value]
    return None


def archs_run_on(archs: tuple[str, ...], capability: tuple[int, int]) -> bool | None:
    """Whether code built for ``archs`` runs on a GPU of ``capability``; None when unknowable.

    "87" carries sm_87 code and compute_87 PTX; "87-real" only the code; "87-virtual"
    only PTX. Code runs on the same major with an equal or newer minor; PTX is JIT
    compiled for any newer GPU; arch-specific targets ("90a") run only on their own GPU.
    """
    device = capability[0] * 10 + capability[1]
    known = False
    for arch in archs:
        match = re.fullmatch(r"(\d+)([af]?)(-real|-virtual)?", arch.strip())
        if match is None:
            continue  # "native", "all", ...: resolved by CMake, not recorded
        known = True
        number, specific, kind = int(match.group(1)), match.group(2), match.group(3) or ""
        if specific:
            if number == device:
                return True
            continue
        if kind != "-virtual" and number // 10 == capability[0] and number % 10 <= capability[1]:
            return True
        if kind != "-real" and number <= device:
            return True
    return False if known else None


def check_manifest(manifest: BuildManifest, where: Path, need_tensorrt: bool) -> None:
    """Raise UserError when the build does not fit this Python's TensorRT or this GPU."""
    if need_tensorrt:
        running = runtime_tensorrt_version()
        built = manifest.tensorrt_version
        if running is not None and built is not None and _major_minor(running) != _major_minor(built):
            raise UserError(
                f"{where} was built against TensorRT {built} but this Python has TensorRT {running}: "
                f"rebuild with `m2ae plugin build` (--tensorrt-root pointing at TensorRT {running})"
            )
    capability = visible_compute_capability()
    if capability is not None and archs_run_on(manifest.cuda_archs, capability) is False:
        archs = ",".join(manifest.cuda_archs)
        raise UserError(
            f"{where} was built for CUDA architectures {archs} but the GPU is sm_{capability[0]}{capability[1]}: "
            f"rebuild with `m2ae plugin build --arch {capability[0]}{capability[1]}`"
        )


# ---------------------------------------------------------------------------------
# Finding a library


def _manifest_for(library: Path) -> BuildManifest | None:
    manifest_path = library.parent / MANIFEST_NAME
    return BuildManifest.from_file(manifest_path) if manifest_path.is_file() else None


def _resolve_given(path: Path, lib_name: str, origin: str) -> Path:
    path = path.expanduser()
    if path.is_dir():
        path = path / lib_name
    if not path.is_file():
        raise UserError(f"{origin}: library {path} not found; {BUILD_HINT} (or point {origin} at the built file)")
    return path.resolve()


def find_library(lib_name: str, path: str | os.PathLike | None, env_var: str, need_tensorrt: bool) -> Path:
    """Locate ``lib_name`` (see the module docstring for the order) and check its manifest."""
    if path is None and not os.environ.get(env_var):
        return _newest_compatible_build(lib_name, env_var, need_tensorrt)
    if path is not None:
        library = _resolve_given(Path(path), lib_name, str(path))
    else:
        library = _resolve_given(Path(os.environ[env_var]), lib_name, f"${env_var}")
    manifest = _manifest_for(library)
    if manifest is not None:
        check_manifest(manifest, library, need_tensorrt)
    return library


def _newest_compatible_build(lib_name: str, env_var: str, need_tensorrt: bool) -> Path:
    root = default_plugin_root()
    candidates = sorted(
        (p for p in root.glob(f"*/{lib_name}") if (p.parent / MANIFEST_NAME).is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not candidates:
        raise UserError(f"no {lib_name} found in {root} and ${env_var} is not set: {BUILD_HINT}")
    first_error: UserError | None = None
    for library in candidates:
        try:
            check_manifest(BuildManifest.from_file(library.parent / MANIFEST_NAME), library, need_tensorrt)
        except UserError as exc:
            first_error = first_error or exc
            continue
        return library.resolve()
    assert first_error is not None
    raise first_error


def _dlopen(library: Path) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise UserError(f"cannot load {library}: {exc}; {BUILD_HINT} on this machine") from None


def _check_build_info(lib: ctypes.CDLL, library: Path) -> None:
    """For libraries without a manifest (built by hand with CMake): check what they embed."""
    lib.m2ae_plugin_build_info.restype = ctypes.c_char_p
    info = json.loads(lib.m2ae_plugin_build_info().decode())
    manifest = BuildManifest(
        tensorrt_version=info["tensorrt"],
        cuda_archs=tuple(a for a in re.split(r"[,;]", info["cuda_archs"]) if a),
        cuda_version=None,
        kernels_only=False,
    )
    check_manifest(manifest, library, need_tensorrt=True)


def _ensure_registered_with_python_tensorrt(library: Path, tensorrt: ModuleType) -> None:
    """Make the creators visible to the ``tensorrt`` module's registry.

    The library's static registrar fills the registry of the libnvinfer it was linked
    against. When TensorRT's Python package carries its own copy (a pip wheel next to
    a system install), that is another registry: hand the library to it explicitly.
    """
    registry = tensorrt.get_plugin_registry()
    from m2ae.trt_plugins import GATHER_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION

    get_creator = getattr(registry, "get_creator", None)
    if get_creator is not None:
        registered = get_creator(GATHER_OP, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None
    else:
        registered = any(
            getattr(c, "name", None) == GATHER_OP and getattr(c, "plugin_namespace", None) == PLUGIN_NAMESPACE
            for c in getattr(registry, "all_creators", ())
        )
    if not registered:
        if registry.load_library(str(library)) is None:
            raise UserError(f"TensorRT could not register the plugins of {library}; {BUILD_HINT} for this TensorRT")


def load(path: str | os.PathLike | None = None) -> ctypes.CDLL:
    """Load the TensorRT plugin library and register its creators; see the module docstring."""
    library = find_library(PLUGIN_LIB_NAME, path, PLUGIN_LIB_ENV, need_tensorrt=True)
    # A pip wheel keeps libnvinfer in its own folder, off the loader's search path: once
    # the tensorrt module has loaded it, the plugin's dependency on it resolves to that
    # copy by soname.
    tensorrt = importlib.import_module("tensorrt") if importlib.util.find_spec("tensorrt") is not None else None
    lib = _dlopen(library)
    if _manifest_for(library) is None:
        _check_build_info(lib, library)
    if tensorrt is not None:
        _ensure_registered_with_python_tensorrt(library, tensorrt)
    return lib


# ---------------------------------------------------------------------------------
# Kernels-only library and typed wrappers

_DTYPES = {"<f4": 0, "<f2": 1}  # M2aeDtype in masked_ops_kernels.h


@dataclass(frozen=True)
class DeviceArray:
    """The parts of ``__cuda_array_interface__`` the launchers need."""

    pointer: int
    shape: tuple[int, ...]
    typestr: str

    @classmethod
    def of(cls, name: str, array: Any) -> DeviceArray:
        interface = getattr(array, "__cuda_array_interface__", None)
        if interface is None:
            raise TypeError(f"{name} must be a CUDA device array (torch CUDA tensor or CuPy array)")
        shape = tuple(int(s) for s in interface["shape"])
        typestr = interface["typestr"].replace("=", "<").replace("|", "<")
        strides = interface.get("strides")
        if strides is not None:
            itemsize = int(typestr[2:])
            expected = itemsize
            for size, stride in zip(reversed(shape), reversed(strides)):
                if size > 1 and stride != expected:
                    raise ValueError(f"{name} must be C-contiguous, got strides {strides} for shape {shape}")
                expected *= size
        return cls(pointer=int(interface["data"][0]), shape=shape, typestr=typestr)


def _device_arrays(**arrays: Any) -> list[DeviceArray]:
    return [DeviceArray.of(name, array) for name, array in arrays.items()]


class MaskedOpsKernels:
    """The launchers of ``libm2ae_kernels.so`` (or of the plugin library, which holds them too)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        i64, i32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
        lib.m2ae_masked_gather.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, i32, i32, i32, ptr]
        lib.m2ae_masked_gather.restype = ctypes.c_int
        lib.m2ae_masked_scatter.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i32, i32, ptr]
        lib.m2ae_masked_scatter.restype = ctypes.c_int
        lib.m2ae_cuda_error_string.argtypes = [ctypes.c_int]
        lib.m2ae_cuda_error_string.restype = ctypes.c_char_p
        lib.m2ae_kernels_build_info.restype = ctypes.c_char_p

    def build_info(self) -> dict[str, Any]:
        return json.loads(self.lib.m2ae_kernels_build_info().decode())

    def _check(self, op: str, status: int) -> None:
        if status != 0:
            reason = self.lib.m2ae_cuda_error_string(status).decode()
            raise RuntimeError(f"{op} failed: {reason} (CUDA error {status})")

    def gather(self, out: Any, dense: Any, tiles: Any, tile: int, halo: int, stream: int = 0) -> None:
        """``out[B,C,S,S] = MaskedGather(dense [N,C,H,W], tiles [B]; tile, halo)``, S = tile + 2*halo, on ``stream``."""
        o, d, t = _device_arrays(out=out, dense=dense, tiles=tiles)
        if len(d.shape) != 4 or len(t.shape) != 1:
            raise ValueError(f"expected dense [N,C,H,W] and tiles [B]; got {d.shape} and {t.shape}")
        if tile < 1 or halo < 0:
            raise ValueError(f"tile must be >= 1 and halo >= 0, got tile={tile}, halo={halo}")
        if d.typestr not in _DTYPES or o.typestr != d.typestr or t.typestr != "<i4":
            raise ValueError(f"dense and out must share float32/float16 and tiles must be int32; got "
                             f"{d.typestr}, {o.typestr}, {t.typestr}")
        n, c, h, w = d.shape
        size = tile + 2 * halo
        if o.shape != (t.shape[0], c, size, size):
            raise ValueError(f"out must be [{t.shape[0]}, {c}, {size}, {size}], got {o.shape}")
        status = self.lib.m2ae_masked_gather(o.pointer, d.pointer, t.pointer, n, c, h, w, t.shape[0], tile, halo,
                                             _DTYPES[d.typestr], stream)
        self._check("m2ae_masked_gather", status)

    def scatter(self, out: Any, base: Any, values: Any, tiles: Any, stream: int = 0) -> None:
        """``out = MaskedScatter(base [N,C,H,W], values [B,C,tile,tile], tiles [B])``; ``out`` may be ``base``."""
        o, b, v, t = _device_arrays(out=out, base=base, values=values, tiles=tiles)
        if len(b.shape) != 4 or len(v.shape) != 4 or len(t.shape) != 1:
            raise ValueError(
                f"expected base [N,C,H,W], values [B,C,tile,tile], tiles [B]; got {b.shape}, {v.shape}, {t.shape}")
        if b.typestr not in _DTYPES or v.typestr != b.typestr or o.typestr != b.typestr or t.typestr != "<i4":
            raise ValueError(f"base, values and out must share float32/float16 and tiles must be int32; got "
                             f"{b.typestr}, {v.typestr}, {o.typestr}, {t.typestr}")
        n, c, h, w = b.shape
        tile = v.shape[3]
        if tile < 1 or v.shape != (t.shape[0], c, tile, tile) or o.shape != b.shape:
            raise ValueError(f"values must be [{t.shape[0]}, {c}, tile, tile] with tile >= 1 and out {b.shape}; "
                             f"got {v.shape} and {o.shape}")
        status = self.lib.m2ae_masked_scatter(o.pointer, b.pointer, v.pointer, t.pointer, n, c, h, w, t.shape[0], tile,
                                              _DTYPES[b.typestr], stream)
        self._check("m2ae_masked_scatter", status)


def load_kernels(path: str | os.PathLike | None = None) -> MaskedOpsKernels:
    """Load ``libm2ae_kernels.so`` (``m2ae plugin build --kernels-only`` makes it) and wrap it."""
    library = find_library(KERNELS_LIB_NAME, path, KERNELS_LIB_ENV, need_tensorrt=False)
    return MaskedOpsKernels(_dlopen(library))
