"""Native build of the custom ops (real nvcc/CMake compiles) and the loader's checks.

GPU-free: the kernels-only library is compiled for sm_87 and sm_90, its launchers are
called only where they must return before touching a GPU (nothing to do, bad
arguments), the plugin sources are compiled against TensorRT headers when some are
available, the loader's refusals are exercised on manifests, and the Python wrappers
of the launchers on a stand-in library and stand-in device arrays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from m2ae.errors import UserError
from m2ae.trt_plugins import build, loader, manifest
from m2ae.trt_plugins.build import PluginBuildConfig, build_plugins, parse_arch_list, tensorrt_header_version
from m2ae.trt_plugins.launchers import MaskedOpsKernels
from m2ae.trt_plugins.manifest import BuildManifest, LibraryRecord, archs_run_on

HAVE_TOOLS = shutil.which("cmake") is not None and (shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").is_file())
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="cmake or nvcc not found: cannot compile the CUDA sources")

CUDA_ERROR_INVALID_VALUE = 1


@pytest.fixture(scope="module")
def kernels_build(tmp_path_factory: pytest.TempPathFactory) -> build.BuildResult:
    if not HAVE_TOOLS:
        pytest.skip("cmake or nvcc not found: cannot compile the CUDA sources")
    out = tmp_path_factory.mktemp("kernels")
    return build_plugins(PluginBuildConfig(out_dir=out, kernels_only=True, archs=("87", "90")))


@pytest.fixture
def plugin_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty default build folder, and no library named by the environment."""
    monkeypatch.setenv(loader.PLUGIN_DIR_ENV, str(tmp_path / "plugins"))
    monkeypatch.delenv(loader.PLUGIN_LIB_ENV, raising=False)
    monkeypatch.delenv(loader.KERNELS_LIB_ENV, raising=False)
    return tmp_path / "plugins"


def _tensorrt_include() -> Path | None:
    if os.environ.get("M2AE_TENSORRT_INCLUDE"):
        return Path(os.environ["M2AE_TENSORRT_INCLUDE"])
    if os.environ.get("TENSORRT_ROOT"):
        return Path(os.environ["TENSORRT_ROOT"]) / "include"
    return None


def _fake_build(root: Path, name: str, tensorrt_version: str | None, archs: tuple[str, ...],
                content: bytes = b"not a library") -> Path:
    """A build folder with a manifest and ``content`` where the plugin library goes.

    With the default placeholder the loader must refuse or pick it on its manifest
    alone, before it loads anything.
    """
    folder = root / name
    folder.mkdir(parents=True)
    library = folder / loader.PLUGIN_LIB_NAME
    library.write_bytes(content)
    record = BuildManifest(
        tensorrt_version=tensorrt_version,
        cuda_archs=archs,
        cuda_version="13.0",
        kernels_only=False,
        libraries={"plugins": LibraryRecord(file=library.name, sha256=build.file_sha256(library))},
    )
    (folder / manifest.MANIFEST_NAME).write_text(record.to_json())
    return library


# --- real compiles ------------------------------------------------------------------


@pytest.mark.slow
@needs_tools
def test_kernels_compile_for_sm87_and_sm90(kernels_build: build.BuildResult) -> None:
    result = kernels_build
    assert result.kernels_library.is_file()
    assert result.plugin_library is None
    assert result.manifest.cuda_archs == ("87", "90")
    assert result.manifest.tensorrt_version is None
    recorded = BuildManifest.from_file(result.manifest_path)
    assert recorded.libraries["kernels"].sha256 == build.file_sha256(result.kernels_library)
    assert recorded.source_sha256 == build.sources_sha256()
    info = loader.load_kernels(result.out_dir).build_info()
    assert info["cuda_archs"] == "87,90"
    assert info["cuda_runtime"] >= 12000


@pytest.mark.slow
@needs_tools
def test_launchers_return_before_touching_the_gpu(kernels_build: build.BuildResult) -> None:
    lib = loader.load_kernels(kernels_build.kernels_library).lib
    # Nothing to do (B == 0, C == 0, or an in-place scatter of no tile): success without a launch or a copy.
    assert lib.m2ae_masked_gather(None, None, None, 2, 8, 35, 35, 0, 16, 2, 0, None) == 0
    assert lib.m2ae_masked_gather(None, None, None, 2, 0, 35, 35, 7, 16, 2, 1, None) == 0
    assert lib.m2ae_masked_scatter(None, None, None, None, 2, 8, 35, 35, 0, 16, 0, None) == 0
    # Bad arguments are refused before any launch or copy.
    invalid = CUDA_ERROR_INVALID_VALUE
    assert lib.m2ae_masked_gather(None, None, None, 1, 4, 16, 16, 5, 16, 2, 7, None) == invalid  # dtype
    assert lib.m2ae_masked_gather(None, None, None, 1, 4, 16, 16, 5, 0, 2, 0, None) == invalid  # tile
    assert lib.m2ae_masked_gather(None, None, None, 1, 4, 16, 16, 5, 16, -1, 0, None) == invalid  # halo
    assert lib.m2ae_masked_gather(None, None, None, 1, 4, -16, 16, 5, 16, 2, 0, None) == invalid  # height
    assert lib.m2ae_masked_scatter(None, None, None, None, 1, 4, 16, 16, 3, 0, 0, None) == invalid  # tile
    assert lib.m2ae_masked_scatter(None, None, None, None, 1, 4, 16, 16, -3, 16, 0, None) == invalid  # B
    assert lib.m2ae_masked_scatter(None, None, None, None, 1, 4, 16, 16, 3, 16, 2, None) == invalid  # dtype
    assert lib.m2ae_cuda_error_string(CUDA_ERROR_INVALID_VALUE) == b"invalid argument"


@pytest.mark.slow
@needs_tools
@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) not found")
def test_kernels_library_exports_only_the_c_api(kernels_build: build.BuildResult) -> None:
    listing = subprocess.run(["nm", "-D", "--defined-only", str(kernels_build.kernels_library)],
                             capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in listing.splitlines() if " T " in line}
    # Hidden visibility keeps kernels and helpers private, so two copies cannot clash.
    assert exported == {"m2ae_masked_gather", "m2ae_masked_scatter", "m2ae_kernels_build_info",
                        "m2ae_cuda_error_string"}


@needs_tools
@pytest.mark.parametrize("arch", ["87", "90"])
def test_kernels_read_through_the_read_only_cache(tmp_path: Path, arch: str) -> None:
    """Every kernel loads its inputs with ld.global.nc, one element of its dtype at a time, and spills nothing.

    The kernels copy element by element (tile windows start at arbitrary columns, so no
    vector width is aligned in general); what keeps them at bandwidth is coalescing and
    the read-only data cache for tile ids, dense pixels and values. Losing __ldg, or
    per-thread state that falls out of registers into local memory, keeps results right
    and only shows on a GPU profile; the generated PTX shows it here.
    """
    ptx = tmp_path / "kernels.ptx"
    result = subprocess.run([str(build.find_nvcc()), "-std=c++17", "-O3", f"-arch=sm_{arch}", "-ptx",
                             f"-I{build.SOURCE_DIR / 'csrc'}", str(build.SOURCE_DIR / "csrc" / "masked_ops_kernels.cu"),
                             "-o", str(ptx)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
    kernels = {entry.split("(")[0]: entry for entry in ptx.read_text().split(".entry ")[1:]}
    element_bits = {"GatherThreadIf": 32, "GatherThreadI6__half": 16, "ScatterThreadIf": 32,
                    "ScatterThreadI6__half": 16}
    assert len(kernels) == len(element_bits)
    for kind, bits in element_bits.items():
        matches = [body for name, body in kernels.items() if f"{kind}E" in name]
        assert len(matches) == 1, f"expected one kernel named like {kind}, got {len(matches)}"
        loads = set(re.findall(r"\bld\.global[\w.]*", matches[0]))
        assert "ld.global.nc.s32" in loads, f"{kind}: tile ids not read through the read-only cache: {loads}"
        element_loads = {op for op in loads if re.fullmatch(rf"ld\.global(\.nc)?\.[bfu]{bits}", op)}
        assert element_loads and all(op.startswith("ld.global.nc.") for op in element_loads), (kind, loads)
        assert ".local" not in matches[0], f"{kind} uses local memory"


@pytest.mark.slow
@needs_tools
def test_jetson_target_picks_its_architecture(tmp_path: Path) -> None:
    result = build_plugins(PluginBuildConfig(out_dir=tmp_path, kernels_only=True,
                                             extra_cmake_args=("-DM2AE_JETSON_TARGET=orin",)))
    assert result.manifest.cuda_archs == ("87",)
    assert loader.load_kernels(result.kernels_library).build_info()["cuda_archs"] == "87"


@pytest.mark.slow
@pytest.mark.tensorrt
@needs_tools
def test_plugin_sources_compile_against_tensorrt_headers(tmp_path: Path) -> None:
    include = _tensorrt_include()
    if include is None or not (include / "NvInferRuntime.h").is_file():
        pytest.skip("TensorRT headers not found; set M2AE_TENSORRT_INCLUDE")
    result = build_plugins(PluginBuildConfig(out_dir=tmp_path, headers_only=True, archs=("87",),
                                             tensorrt_include=include))
    assert result.plugin_library is None
    assert result.manifest.tensorrt_version == tensorrt_header_version(include)
    objects = sorted(p.name for p in (tmp_path / "build").rglob("*.cpp.o"))
    assert objects == sorted(f"{name}.cpp.o" for name in (
        "plugin_common", "masked_gather_plugin", "masked_scatter_plugin", "masked_ops_creators",
        "plugin_registration"))


@pytest.mark.slow
@needs_tools
def test_plugin_build_without_tensorrt_says_what_to_install(tmp_path: Path) -> None:
    system_headers = [Path(p) / "NvInferRuntime.h" for p in (
        "/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include")]
    if any(p.is_file() for p in system_headers) or os.environ.get("TENSORRT_ROOT"):
        pytest.skip("TensorRT is installed here, so the plugin build would not fail")
    with pytest.raises(UserError, match="--tensorrt-root.*--kernels-only"):
        build_plugins(PluginBuildConfig(out_dir=tmp_path, archs=("87",)))
    assert not (tmp_path / loader.PLUGIN_LIB_NAME).exists()
    assert not (tmp_path / manifest.MANIFEST_NAME).exists()


# --- build driver errors (no compile) --------------------------------------------------


def test_parse_arch_list() -> None:
    assert parse_arch_list("87,90") == ("87", "90")
    assert parse_arch_list("sm_87; 110") == ("87", "110")
    assert parse_arch_list("90a,89-real") == ("90a", "89-real")
    for bad in ("", "8.7", "orin", "87,x"):
        with pytest.raises(UserError, match="--arch"):
            parse_arch_list(bad)


def test_missing_cmake_and_nvcc_say_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="install CMake"):
        build.find_cmake()
    monkeypatch.delenv("CUDACXX", raising=False)
    monkeypatch.setattr(build, "DEFAULT_NVCC", tmp_path / "absent" / "nvcc")
    with pytest.raises(UserError, match="install the CUDA toolkit"):
        build.find_nvcc()


def test_bad_build_options(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--tensorrt-root"):
        build_plugins(PluginBuildConfig(out_dir=tmp_path, tensorrt_root=tmp_path / "nope"))
    with pytest.raises(UserError, match="exclude each other"):
        build_plugins(PluginBuildConfig(out_dir=tmp_path, kernels_only=True, headers_only=True))


def test_tensorrt_header_version_reads_10_and_11_styles(tmp_path: Path) -> None:
    (tmp_path / "v10").mkdir()
    (tmp_path / "v10" / "NvInferVersion.h").write_text(
        "#define NV_TENSORRT_MAJOR 10 //!< major\n#define NV_TENSORRT_MINOR 3\n#define NV_TENSORRT_PATCH 0\n")
    (tmp_path / "v11").mkdir()
    (tmp_path / "v11" / "NvInferVersion.h").write_text(
        "#define TRT_MAJOR_ENTERPRISE 11\n#define TRT_MINOR_ENTERPRISE 1\n#define TRT_PATCH_ENTERPRISE 2\n"
        "#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n#define NV_TENSORRT_MINOR TRT_MINOR_ENTERPRISE\n"
        "#define NV_TENSORRT_PATCH TRT_PATCH_ENTERPRISE\n")
    assert tensorrt_header_version(tmp_path / "v10") == "10.3.0"
    assert tensorrt_header_version(tmp_path / "v11") == "11.1.2"
    assert tensorrt_header_version(tmp_path) is None


def test_cli_reports_bad_arch_as_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    from m2ae.cli import main

    assert main(["plugin", "build", "--arch", "orin"]) == 2
    assert "--arch" in capsys.readouterr().err


# --- loader ---------------------------------------------------------------------------


def test_load_missing_explicit_path_says_build(plugin_root: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="m2ae plugin build"):
        loader.load(tmp_path / "missing.so")
    with pytest.raises(UserError, match="m2ae plugin build"):
        loader.load(tmp_path)  # a folder without the library


def test_load_missing_env_path_names_the_variable(plugin_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv(loader.PLUGIN_LIB_ENV, str(tmp_path / "nowhere.so"))
    with pytest.raises(UserError, match=r"\$M2AE_PLUGIN_LIB.*m2ae plugin build"):
        loader.load()


def test_load_without_any_build_says_build(plugin_root: Path) -> None:
    with pytest.raises(UserError, match=f"no {loader.PLUGIN_LIB_NAME} found in .*m2ae plugin build"):
        loader.load()
    with pytest.raises(UserError, match="m2ae plugin build"):
        loader.load_kernels()


@pytest.mark.slow
@needs_tools
def test_load_says_which_file_it_loaded(kernels_build: build.BuildResult, plugin_root: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Without TensorRT in the way any shared library stands in for the plugin library.
    library = _fake_build(plugin_root, "b", tensorrt_version="10.3.0", archs=("87",),
                          content=kernels_build.kernels_library.read_bytes())
    monkeypatch.setattr(manifest, "tensorrt_version", lambda: "10.3.0")
    monkeypatch.setattr(manifest, "visible_compute_capability", lambda: None)
    monkeypatch.setattr(loader, "tensorrt_module", lambda: None)
    for given in (None, library.parent, library):
        loaded = loader.load(given)
        assert loaded.path == library.resolve()
        assert loaded.handle.m2ae_kernels_build_info  # the open handle is that file's


def test_load_refuses_other_tensorrt_version(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library = _fake_build(plugin_root, "old", tensorrt_version="10.3.0", archs=("87",))
    monkeypatch.setattr(manifest, "tensorrt_version", lambda: "11.1.0")
    monkeypatch.setattr(manifest, "visible_compute_capability", lambda: None)
    with pytest.raises(UserError, match=r"built against TensorRT 10\.3\.0 but this Python has TensorRT 11\.1\.0"):
        loader.load(library)
    with pytest.raises(UserError, match="TensorRT 10.3.0"):
        loader.load()  # the only default build does not fit either


def test_load_accepts_same_major_minor_other_patch(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library = _fake_build(plugin_root, "b", tensorrt_version="10.3.0", archs=("87",))
    monkeypatch.setattr(manifest, "tensorrt_version", lambda: "10.3.1.post1")
    monkeypatch.setattr(manifest, "visible_compute_capability", lambda: (8, 7))
    found = loader.find_library(loader.PLUGIN_LIB_NAME, None, loader.PLUGIN_LIB_ENV, need_tensorrt=True)
    assert found == library.resolve()


def test_load_refuses_other_gpu_architecture(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library = _fake_build(plugin_root, "desktop", tensorrt_version="10.3.0", archs=("89-real", "90-real"))
    monkeypatch.setattr(manifest, "tensorrt_version", lambda: None)
    monkeypatch.setattr(manifest, "visible_compute_capability", lambda: (8, 7))
    with pytest.raises(UserError, match=r"architectures 89-real,90-real but the GPU is sm_87.*--arch 87"):
        loader.load(library)


def test_default_search_skips_incompatible_newer_build(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fitting = _fake_build(plugin_root, "trt10", tensorrt_version="10.3.0", archs=("87",))
    newer = _fake_build(plugin_root, "trt11", tensorrt_version="11.1.0", archs=("87",))
    os.utime(fitting, (1_000_000, 1_000_000))
    assert newer.stat().st_mtime > fitting.stat().st_mtime
    monkeypatch.setattr(manifest, "tensorrt_version", lambda: "10.3.0")
    monkeypatch.setattr(manifest, "visible_compute_capability", lambda: None)
    found = loader.find_library(loader.PLUGIN_LIB_NAME, None, loader.PLUGIN_LIB_ENV, need_tensorrt=True)
    assert found == fitting.resolve()
    monkeypatch.setattr(manifest, "tensorrt_version", lambda: "11.1.0")
    found = loader.find_library(loader.PLUGIN_LIB_NAME, None, loader.PLUGIN_LIB_ENV, need_tensorrt=True)
    assert found == newer.resolve()


def test_unreadable_manifest_is_a_user_error(plugin_root: Path) -> None:
    library = _fake_build(plugin_root, "broken", tensorrt_version="10.3.0", archs=("87",))
    (library.parent / manifest.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(UserError, match="unreadable plugin build manifest"):
        loader.load(library)


def test_manifest_round_trip(tmp_path: Path) -> None:
    record = BuildManifest(tensorrt_version="10.3.0", cuda_archs=("87", "110"), cuda_version="13.0",
                           kernels_only=False, libraries={"plugins": LibraryRecord("libx.so", "ab" * 32)},
                           source_sha256="cd" * 32, built_at="2026-01-01T00:00:00+00:00")
    path = tmp_path / "manifest.json"
    path.write_text(record.to_json())
    assert BuildManifest.from_file(path) == record
    assert json.loads(path.read_text())["format"] == manifest.MANIFEST_FORMAT


@pytest.mark.parametrize(
    ("archs", "capability", "expected"),
    [
        (("87",), (8, 7), True),
        (("86-real",), (8, 7), True),  # same major, older minor: binary compatible
        (("89-real",), (8, 7), False),  # newer minor than the GPU
        (("80-real",), (9, 0), False),  # code for another major does not run
        (("80",), (9, 0), True),  # ...but its PTX is JIT compiled
        (("90-virtual",), (8, 7), False),  # PTX never runs on an older GPU
        (("90a",), (9, 0), True),
        (("90a",), (10, 0), False),  # arch-specific code runs only on its own GPU
        (("110",), (8, 7), False),
        (("87", "110"), (11, 0), True),
        (("native",), (8, 7), None),
    ],
)
def test_archs_run_on(archs: tuple[str, ...], capability: tuple[int, int], expected: bool | None) -> None:
    assert archs_run_on(archs, capability) is expected


# --- launcher wrappers (a stand-in library, stand-in device arrays) --------------------


class _Launcher:
    """Stands in for one C function of the library: takes ctypes' argtypes/restype, records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, *args: int) -> int:
        self.calls.append(args)
        return 0


class _StubLibrary:
    def __init__(self) -> None:
        self.m2ae_masked_gather = _Launcher()
        self.m2ae_masked_scatter = _Launcher()
        self.m2ae_cuda_error_string = _Launcher()
        self.m2ae_kernels_build_info = _Launcher()


class _DeviceBuffer:
    """Says it lives on a GPU (``__cuda_array_interface__``); the wrappers never read it."""

    def __init__(self, pointer: int, shape: tuple[int, ...], dtype: type = np.float32,
                 strides: tuple[int, ...] | None = None) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": np.dtype(dtype).str, "data": (pointer, False),
                                         "strides": strides, "version": 3}


def _gather_buffers() -> dict:
    # dense 2 x 4 x 7 x 6, three tiles of 3 with halo 1: out 3 x 4 x 5 x 5.
    return {"out": _DeviceBuffer(1, (3, 4, 5, 5)), "dense": _DeviceBuffer(2, (2, 4, 7, 6)),
            "tiles": _DeviceBuffer(3, (3,), np.int32), "tile": 3, "halo": 1}


def _scatter_buffers() -> dict:
    return {"out": _DeviceBuffer(1, (2, 4, 7, 6)), "base": _DeviceBuffer(2, (2, 4, 7, 6)),
            "values": _DeviceBuffer(4, (3, 4, 3, 3)), "tiles": _DeviceBuffer(3, (3,), np.int32)}


def test_launcher_wrappers_pass_sizes_and_dtype_codes() -> None:
    lib = _StubLibrary()
    kernels = MaskedOpsKernels(lib)  # type: ignore[arg-type]
    half = {"out": _DeviceBuffer(1, (3, 4, 5, 5), np.float16), "dense": _DeviceBuffer(2, (2, 4, 7, 6), np.float16)}
    kernels.gather(**{**_gather_buffers(), **half}, stream=9)
    # out, dense, tiles, N, C, H, W, B, tile, halo, dtype (float16: 1), stream
    assert lib.m2ae_masked_gather.calls == [(1, 2, 3, 2, 4, 7, 6, 3, 3, 1, 1, 9)]
    kernels.scatter(**_scatter_buffers())
    # out, base, values, tiles, N, C, H, W, B, tile, dtype (float32: 0), stream
    assert lib.m2ae_masked_scatter.calls == [(1, 2, 4, 3, 2, 4, 7, 6, 3, 3, 0, 0)]


LAUNCHER_ERRORS = [  # the contract's wording, as the reference words it, plus the output buffer's own checks
    ("gather", {"dense": _DeviceBuffer(2, (2, 4, 7, 6), np.float64)}, "dense must be float32 or float16, got float64"),
    ("gather", {"dense": _DeviceBuffer(2, (4, 7, 6))}, r"dense must be \[N,C,H,W\], got shape \(4, 7, 6\)"),
    ("gather", {"tile": 0}, "tile must be >= 1 and halo >= 0, got tile=0, halo=1"),
    ("gather", {"tiles": _DeviceBuffer(3, (3,), np.int64)}, "tiles must be int32, got int64"),
    ("gather", {"out": _DeviceBuffer(1, (3, 4, 5, 5), np.float16)},
     "dense and out must share float32/float16, got float32 and float16"),
    ("gather", {"out": _DeviceBuffer(1, (3, 4, 3, 3))}, r"out must be \[3, 4, 5, 5\], got \(3, 4, 3, 3\)"),
    ("gather", {"dense": _DeviceBuffer(2, (2, 4, 7, 6), strides=(4 * 7 * 6 * 4, 7 * 6 * 4, 6 * 4, 8))},
     r"dense must be C-contiguous, got strides \(672, 168, 24, 8\) for shape \(2, 4, 7, 6\)"),
    ("scatter", {"values": _DeviceBuffer(4, (3, 4, 3, 2))},
     r"values must be \[B,C,tile,tile\], got shape \(3, 4, 3, 2\)"),
    ("scatter", {"values": _DeviceBuffer(4, (3, 4, 3, 3), np.float16)},
     "values dtype float16 differs from base dtype float32"),
    ("scatter", {"values": _DeviceBuffer(4, (2, 4, 3, 3))},
     r"values must be \[B, 4, tile, tile\] and tiles \[B\], got \(2, 4, 3, 3\) and \(3,\)"),
    ("scatter", {"out": _DeviceBuffer(1, (2, 4, 7, 7))}, r"out must be \[2, 4, 7, 6\], got \(2, 4, 7, 7\)"),
]


@pytest.mark.parametrize(("op", "override", "message"), LAUNCHER_ERRORS)
def test_launcher_wrappers_refuse_before_launching(op: str, override: dict, message: str) -> None:
    lib = _StubLibrary()
    launch = getattr(MaskedOpsKernels(lib), op)  # type: ignore[arg-type]
    buffers = _gather_buffers() if op == "gather" else _scatter_buffers()
    with pytest.raises(ValueError, match=f"^{message}$"):
        launch(**{**buffers, **override})
    assert not lib.m2ae_masked_gather.calls and not lib.m2ae_masked_scatter.calls
