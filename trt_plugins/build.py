"""Building the native libraries: CMake configure + build of ``trt_plugins/`` out of tree.

``build_plugins(config)`` checks the tools first (CMake, nvcc, and TensorRT unless
only the kernels are wanted) so a missing one is a one-line ``UserError`` that says
what to install, then runs CMake in ``<out>/build`` and copies the libraries and a
``manifest.json`` (TensorRT version, CUDA architectures, sha256 of each library) into
``<out>`` atomically. The loader reads that manifest to refuse a library built for
another TensorRT or GPU. The default ``<out>`` is a folder per configuration under
``loader.default_plugin_root()``, so builds for several TensorRT versions coexist.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from m2ae.atomic import write_text, write_with
from m2ae.errors import UserError
from m2ae.hashing import file_sha256
from m2ae.trt_plugins.loader import KERNELS_LIB_NAME, PLUGIN_LIB_NAME, default_plugin_root
from m2ae.trt_plugins.manifest import MANIFEST_NAME, BuildManifest, LibraryRecord

SOURCE_DIR = Path(__file__).resolve().parent
_ARCH_PATTERN = re.compile(r"(\d{2,3}[af]?(-real|-virtual)?|native|all|all-major)")
DEFAULT_NVCC = Path("/usr/local/cuda/bin/nvcc")


@dataclass(frozen=True)
class PluginBuildConfig:
    """What to build, where and for which GPUs and TensorRT."""

    out_dir: Path | None = None  # default: default_plugin_root() / <configuration key>
    kernels_only: bool = False  # libm2ae_kernels.so only, no TensorRT needed
    headers_only: bool = False  # compile the plugin sources against TensorRT headers alone
    tensorrt_root: Path | None = None  # TensorRT install with include/ and lib/
    tensorrt_include: Path | None = None  # folder with NvInfer*.h (e.g. headers for a pip wheel)
    archs: tuple[str, ...] = ()  # e.g. ("87", "90"); empty: detected (Jetson model or nvidia-smi)
    jobs: int | None = None
    build_type: str = "Release"
    extra_cmake_args: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    kernels_library: Path
    plugin_library: Path | None  # None for kernels-only and headers-only builds
    manifest_path: Path
    manifest: BuildManifest
    configure_seconds: float
    build_seconds: float


def parse_arch_list(text: str) -> tuple[str, ...]:
    """``"87,90"`` or ``"87;90"`` (also ``sm_87``) -> ``("87", "90")``; UserError on anything else."""
    archs = tuple(a.strip().lower().removeprefix("sm_") for a in re.split(r"[,;\s]+", text) if a.strip())
    bad = [a for a in archs if not _ARCH_PATTERN.fullmatch(a)]
    if not archs or bad:
        raise UserError(f"--arch {text!r}: expected compute capabilities such as 87,90 (Orin 87, Thor 110, "
                        f"Ada 89, Hopper 90) or 'native'")
    return archs


def sources_sha256() -> str:
    """Digest of everything CMake compiles, so a build folder is tied to its sources."""
    digest = hashlib.sha256()
    files = [SOURCE_DIR / "CMakeLists.txt", *sorted((SOURCE_DIR / "cmake").glob("*.cmake")),
             *sorted((SOURCE_DIR / "csrc").iterdir())]
    for path in files:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def default_out_dir(config: PluginBuildConfig, source_digest: str) -> Path:
    mode = "kernels" if config.kernels_only else "headers-check" if config.headers_only else "plugins"
    key_text = "|".join([source_digest, mode, ",".join(config.archs) or "auto", str(config.tensorrt_root or ""),
                         str(config.tensorrt_include or ""), config.build_type])
    return default_plugin_root() / f"{mode}-{hashlib.sha256(key_text.encode()).hexdigest()[:12]}"


def find_nvcc() -> Path:
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc"), DEFAULT_NVCC]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise UserError("nvcc not found (PATH, $CUDACXX, /usr/local/cuda/bin): install the CUDA toolkit "
                    "(on Jetson it comes with JetPack in /usr/local/cuda/bin; add that to PATH)")


def find_cmake() -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise UserError("cmake not found on PATH: install CMake >= 3.18 (apt install cmake, or pip install cmake)")
    return Path(cmake)


def _check_dir(option: str, path: Path | None) -> None:
    if path is not None and not path.is_dir():
        raise UserError(f"{option} {path}: no such directory")


def _run(command: list[str], log_path: Path, what: str) -> float:
    start = time.monotonic()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    write_text(log_path, " ".join(command) + "\n\n" + result.stdout)
    if result.returncode != 0:
        raise UserError(f"{what} failed: {_first_error(result.stdout)} (full log: {log_path})")
    return time.monotonic() - start


def _first_error(output: str) -> str:
    """The line of a CMake/compiler log that says what went wrong, made one line."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if "CMake Error" in line:
            message = []
            for follow in lines[index + 1:index + 8]:
                if follow.strip().startswith("Call Stack"):
                    break
                message.append(follow.strip())
            return " ".join(x for x in message if x) or line.strip()
        if re.search(r"\berror\b", line):
            return line.strip()
    return " | ".join(x.strip() for x in lines[-3:] if x.strip()) or "no output"


def _read_cmake_cache(build_dir: Path) -> dict[str, str]:
    cache: dict[str, str] = {}
    cache_path = build_dir / "CMakeCache.txt"
    if cache_path.is_file():
        for line in cache_path.read_text().splitlines():
            match = re.match(r"([A-Za-z0-9_]+):[A-Z_]+=(.*)", line)
            if match:
                cache[match.group(1)] = match.group(2)
    return cache


def tensorrt_header_version(include_dir: Path) -> str | None:
    """``major.minor.patch`` from NvInferVersion.h (TensorRT 10 literals or 11's *_ENTERPRISE)."""
    header = include_dir / "NvInferVersion.h"
    if not header.is_file():
        return None
    text = header.read_text(errors="replace")
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        match = re.search(rf"#define NV_TENSORRT_{part} (\d+)", text) or re.search(
            rf"#define TRT_{part}_ENTERPRISE (\d+)", text)
        if match is None:
            return None
        parts.append(match.group(1))
    return ".".join(parts)


def _nvcc_version(nvcc: Path) -> str | None:
    result = subprocess.run([str(nvcc), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    match = re.search(r"release (\d+\.\d+)", result.stdout)
    return match.group(1) if match else None


def _install(src: Path, dest: Path) -> LibraryRecord:
    write_with(dest, lambda tmp: shutil.copyfile(src, tmp))
    return LibraryRecord(file=dest.name, sha256=file_sha256(dest))


def _configure_command(config: PluginBuildConfig, cmake: Path, nvcc: Path, build_dir: Path) -> list[str]:
    command = [str(cmake), "-S", str(SOURCE_DIR), "-B", str(build_dir),
               f"-DCMAKE_BUILD_TYPE={config.build_type}", f"-DCMAKE_CUDA_COMPILER={nvcc}",
               f"-DPython3_EXECUTABLE={sys.executable}",
               f"-DM2AE_KERNELS_ONLY={'ON' if config.kernels_only else 'OFF'}",
               f"-DM2AE_PLUGIN_HEADERS_ONLY={'ON' if config.headers_only else 'OFF'}"]
    if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
        command += ["-G", "Ninja"]
    if config.archs:
        command.append(f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(config.archs)}")
    if config.tensorrt_root is not None:
        command.append(f"-DTENSORRT_ROOT={config.tensorrt_root.resolve()}")
    if config.tensorrt_include is not None:
        command.append(f"-DTensorRT_INCLUDE_DIR={config.tensorrt_include.resolve()}")
    return command + list(config.extra_cmake_args)


def build_plugins(config: PluginBuildConfig) -> BuildResult:
    """Configure and build; install the libraries and their manifest into the output folder."""
    if config.kernels_only and config.headers_only:
        raise UserError("--kernels-only and --headers-only exclude each other")
    _check_dir("--tensorrt-root", config.tensorrt_root)
    _check_dir("--tensorrt-include", config.tensorrt_include)
    cmake, nvcc = find_cmake(), find_nvcc()
    digest = sources_sha256()
    out_dir = (config.out_dir or default_out_dir(config, digest)).expanduser().resolve()
    build_dir = out_dir / "build"
    build_dir.mkdir(parents=True, exist_ok=True)

    configure_seconds = _run(_configure_command(config, cmake, nvcc, build_dir), out_dir / "cmake-configure.log",
                             "CMake configure")
    cache = _read_cmake_cache(build_dir)
    include_dir = cache.get("TensorRT_INCLUDE_DIR", "")
    has_headers = bool(include_dir) and not include_dir.endswith("-NOTFOUND")
    has_library = bool(cache.get("TensorRT_LIBRARY")) and not cache["TensorRT_LIBRARY"].endswith("-NOTFOUND")
    wants_plugins = not config.kernels_only and not config.headers_only
    if wants_plugins and not (has_headers and has_library):
        missing = "headers (NvInferRuntime.h)" if not has_headers else "libnvinfer"
        raise UserError(
            f"TensorRT {missing} not found: pass --tensorrt-root DIR (a TensorRT install with include/ and lib/), "
            "install TensorRT's development package (apt install libnvinfer-dev; JetPack ships it), "
            "or pass --kernels-only for the kernels alone"
        )

    command = [str(cmake), "--build", str(build_dir)]
    if config.jobs:
        command += ["--parallel", str(config.jobs)]
    build_seconds = _run(command, out_dir / "cmake-build.log", "build")

    lib_dir = build_dir / "lib"
    libraries = {"kernels": _install(lib_dir / KERNELS_LIB_NAME, out_dir / KERNELS_LIB_NAME)}
    plugin_library = None
    if wants_plugins:
        plugin_library = out_dir / PLUGIN_LIB_NAME
        libraries["plugins"] = _install(lib_dir / PLUGIN_LIB_NAME, plugin_library)

    compiled_against = has_headers and not config.kernels_only
    manifest = BuildManifest(
        tensorrt_version=tensorrt_header_version(Path(include_dir)) if compiled_against else None,
        cuda_archs=tuple(a for a in cache.get("CMAKE_CUDA_ARCHITECTURES", "").split(";") if a),
        cuda_version=_nvcc_version(nvcc),
        kernels_only=config.kernels_only,
        libraries=libraries,
        source_sha256=digest,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    manifest_path = write_text(out_dir / MANIFEST_NAME, manifest.to_json())
    return BuildResult(
        out_dir=out_dir,
        kernels_library=out_dir / KERNELS_LIB_NAME,
        plugin_library=plugin_library,
        manifest_path=manifest_path,
        manifest=manifest,
        configure_seconds=configure_seconds,
        build_seconds=build_seconds,
    )
