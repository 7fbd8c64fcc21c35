"""Finding and loading the native libraries that ``m2ae plugin build`` makes.

``load()`` opens ``libm2ae_trt_plugins.so`` with ``RTLD_GLOBAL`` so its static
registrar puts the MaskedGather / MaskedScatter creators into TensorRT's plugin
registry, after checking the build's manifest against this Python's TensorRT and the
visible GPU (``manifest.check_manifest``), and returns it as a ``PluginLibrary`` that
says which file was loaded. ``load_kernels()`` opens the TensorRT-free
``libm2ae_kernels.so`` and wraps its C launchers (``launchers.MaskedOpsKernels``).

Search order for a library: an explicit path (file or build folder), then the
environment variable (``M2AE_PLUGIN_LIB`` / ``M2AE_KERNELS_LIB``), then the builds in
the default folder (``default_plugin_root()``), newest compatible first.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Mapping

from m2ae.errors import UserError
from m2ae.platform_info import tensorrt_module
from m2ae.trt_plugins import GATHER_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION
from m2ae.trt_plugins.launchers import MaskedOpsKernels
from m2ae.trt_plugins.manifest import MANIFEST_NAME, BuildManifest, check_manifest, manifest_next_to

PLUGIN_LIB_NAME = "libm2ae_trt_plugins.so"
KERNELS_LIB_NAME = "libm2ae_kernels.so"
PLUGIN_LIB_ENV = "M2AE_PLUGIN_LIB"
KERNELS_LIB_ENV = "M2AE_KERNELS_LIB"
PLUGIN_DIR_ENV = "M2AE_PLUGIN_DIR"
BUILD_HINT = "build it with `m2ae plugin build`"


@dataclass(frozen=True)
class PluginLibrary:
    """The loaded TensorRT plugin library: its resolved path, and the open handle that keeps it loaded."""

    path: Path
    handle: ctypes.CDLL


def default_plugin_root(environ: Mapping[str, str] = os.environ) -> Path:
    """``$M2AE_PLUGIN_DIR``, else ``$XDG_CACHE_HOME/m2ae/plugins``, else ``~/.cache/m2ae/plugins``."""
    if environ.get(PLUGIN_DIR_ENV):
        return Path(environ[PLUGIN_DIR_ENV]).expanduser()
    base = Path(environ["XDG_CACHE_HOME"]).expanduser() if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "m2ae" / "plugins"


# ---------------------------------------------------------------------------------
# Finding a library


def _resolve_given(path: Path, lib_name: str, origin: str) -> Path:
    path = path.expanduser()
    if path.is_dir():
        path = path / lib_name
    if not path.is_file():
        raise UserError(f"{origin}: library {path} not found; {BUILD_HINT} (or point {origin} at the built file)")
    return path.resolve()


def find_library(lib_name: str, path: str | os.PathLike | None, env_var: str, need_tensorrt: bool) -> Path:
    """Locate ``lib_name`` (see the module docstring for the order), check its manifest, return its resolved path."""
    if path is None and not os.environ.get(env_var):
        return _newest_compatible_build(lib_name, env_var, need_tensorrt)
    if path is not None:
        library = _resolve_given(Path(path), lib_name, str(path))
    else:
        library = _resolve_given(Path(os.environ[env_var]), lib_name, f"${env_var}")
    manifest = manifest_next_to(library)
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


# ---------------------------------------------------------------------------------
# Loading


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


def load(path: str | os.PathLike | None = None) -> PluginLibrary:
    """Load the TensorRT plugin library and register its creators; see the module docstring."""
    library = find_library(PLUGIN_LIB_NAME, path, PLUGIN_LIB_ENV, need_tensorrt=True)
    # A pip wheel keeps libnvinfer in its own folder, off the loader's search path: once
    # the tensorrt module has loaded it, the plugin's dependency on it resolves to that
    # copy by soname.
    tensorrt = tensorrt_module()
    handle = _dlopen(library)
    if manifest_next_to(library) is None:
        _check_build_info(handle, library)
    if tensorrt is not None:
        _ensure_registered_with_python_tensorrt(library, tensorrt)
    return PluginLibrary(path=library, handle=handle)


def load_kernels(path: str | os.PathLike | None = None) -> MaskedOpsKernels:
    """Load ``libm2ae_kernels.so`` (``m2ae plugin build --kernels-only`` makes it) and wrap it."""
    return MaskedOpsKernels(_dlopen(find_library(KERNELS_LIB_NAME, path, KERNELS_LIB_ENV, need_tensorrt=False)))
