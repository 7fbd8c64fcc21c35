"""ONNX -> TensorRT engine: the one place that drives the TensorRT builder.

Precision lives in the ONNX (docs/design.md section 4): fp32, fp16 and int8 QDQ ONNX all
build as *strongly typed* networks, the only kind TensorRT 11 builds, with TF32 off so
fp32 tensors compute in fp32. On TensorRT 10, ``fp16=True`` on an fp32 ONNX is also
accepted (the legacy weakly typed ``BuilderFlag.FP16`` build). One optimisation profile
covers the image's H and W, a timing cache per TensorRT version and GPU speeds up
rebuilds, and engines are cached by ``m2ae.engine_sidecar.cache_key``. TensorRT is imported
only when a build runs; everything that decides *what* to build is plain Python and
testable without it.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Callable

from m2ae import __version__, atomic
from m2ae.cli_args import Size, format_size
from m2ae.engine_sidecar import EngineKey, Profile, Sidecar, cache_key, sidecar_path
from m2ae.errors import UserError
from m2ae.export.engine_cache import EngineCache, validate_profile
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK
from m2ae.hashing import file_sha256
from m2ae.model_info import ModelInfo
from m2ae.padding import padded_size
from m2ae.platform_info import PlatformInfo, detect_platform, require_gpu, require_tensorrt
from m2ae.trt_plugins import DOMAIN
from m2ae.trt_plugins.onnx_ops import has_custom_ops

PLUGIN_AUTO = "auto"
FP16_EXPORT_HINT = "m2ae export --precision fp16"
_INPUT_CHANNELS = {INPUT_IMAGE: 3, INPUT_MASK: 1}


# ---------------------------------------------------------------- what is there


def tensorrt_major(version: str) -> int:
    return int(version.split(".", 1)[0])


# ---------------------------------------------------------------- the ONNX


@dataclass(frozen=True)
class OnnxInfo:
    """What the builder needs to know about an ONNX file, read without its weights."""

    path: Path
    sha256: str
    #: the m2ae metadata; ``mask_input`` as the graph's inputs have it
    model: ModelInfo
    inputs: dict[str, tuple[int | str, ...]]  # name -> dims (int, or a symbolic name)
    uses_m2ae_ops: bool


def read_onnx_info(path: str | Path) -> OnnxInfo:
    """UserError for a missing or unreadable file, and for an ONNX m2ae did not export."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--onnx {path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a bad file
        raise UserError(f"--onnx {path}: not a readable ONNX model ({exc})") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        inputs[value.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
    # The pruned graphs hold their custom ops inside If branches.
    uses_ops = has_custom_ops(model) or any(
        node.domain == DOMAIN for function in model.functions for node in function.node
    )
    metadata = ModelInfo.from_onnx(model, path)
    return OnnxInfo(
        path=path.resolve(),
        sha256=file_sha256(path),
        # The graph decides, as the runtime's engines do: metadata may predate m2ae.mask_input.
        model=metadata.with_graph_inputs(inputs),
        inputs=inputs,
        uses_m2ae_ops=uses_ops,
    )


# ---------------------------------------------------------------- what to build


@dataclass(frozen=True)
class BuildDefaults:
    profile: Profile
    workspace_mib: int | None  # None: TensorRT's default (the whole device memory)


# Jetson boards share a few GB between CPU and GPU: a smaller workspace and a 1080p
# max profile keep a build from starving the system. Thor has far more memory than Orin.
_DESKTOP_DEFAULTS = ((256, 256), (1024, 1024), (2160, 3840), None)
_JETSON_DEFAULTS = {
    "orin": ((256, 256), (720, 1280), (1080, 1920), 1024),
    "thor": ((256, 256), (1080, 1920), (1440, 2560), 4096),
}
_UNKNOWN_JETSON_DEFAULTS = _JETSON_DEFAULTS["orin"]


def build_defaults(platform: PlatformInfo, multiple: int = 1, min_size: int = 1) -> BuildDefaults:
    """Profile and workspace defaults for this machine, sides rounded up to ``multiple``
    (and at least ``min_size``)."""
    if platform.is_jetson:
        low, opt, high, workspace = _JETSON_DEFAULTS.get(platform.jetson_model or "", _UNKNOWN_JETSON_DEFAULTS)
    else:
        low, opt, high, workspace = _DESKTOP_DEFAULTS
    # Rounding up keeps the named resolution inside the profile after padding to `multiple`.
    profile = Profile(*(padded_size(max(h, min_size), max(w, min_size), multiple) for h, w in (low, opt, high)))
    return BuildDefaults(profile=profile, workspace_mib=workspace)


def check_fp16_request(fp16: bool, onnx_precision: str | None, onnx_path: Path) -> None:
    """The part of the --fp16 check that needs no TensorRT: only an fp32 ONNX can take it."""
    if fp16 and onnx_precision not in (None, "fp32"):
        raise UserError(
            f"--fp16: {onnx_path} is already a {onnx_precision} ONNX and builds in that precision; drop --fp16"
        )


def strongly_typed_for(fp16: bool, onnx_precision: str | None, trt_major: int, onnx_path: Path) -> bool:
    """Whether to build strongly typed; raise UserError for an --fp16 request that can't work."""
    if not fp16:
        return True
    check_fp16_request(fp16, onnx_precision, onnx_path)
    if trt_major >= 11:
        raise UserError(
            f"--fp16: TensorRT {trt_major} builds only strongly typed networks, so precision must come from the "
            f"ONNX; make an fp16 ONNX with `{FP16_EXPORT_HINT}` and build that without --fp16"
        )
    return False


def check_dla_request(
    dla_core: int | None,
    platform: PlatformInfo,
    profile: Profile | None = None,
    onnx_precision: str | None = None,
    fp16: bool = False,
) -> None:
    """Refuse a --dla build that cannot put anything on the DLA (before TensorRT is involved)."""
    if dla_core is None:
        return
    if dla_core < 0:
        raise UserError(f"--dla {dla_core}: the DLA core index must be 0 or more")
    if not platform.is_jetson:
        raise UserError(f"--dla {dla_core}: DLA cores exist only on Jetson boards; drop --dla on this machine")
    if platform.jetson_model == "thor":
        raise UserError(f"--dla {dla_core}: Jetson Thor has no DLA cores (Orin has them); drop --dla")
    # DLA has no dynamic shapes: a layer with a dynamic dimension would silently fall back to the GPU.
    if profile is not None and not profile.is_static:
        side = format_size(profile.opt)
        raise UserError(
            f"--dla {dla_core}: DLA runs fixed sizes only, and the profile is {profile}; "
            f"build one size with --min {side} --opt {side} --max {side}"
        )
    # DLA computes in fp16 and int8 only: every layer of an fp32 network would fall back to the GPU.
    if not fp16 and onnx_precision not in ("fp16", "int8"):
        raise UserError(
            f"--dla {dla_core}: DLA runs fp16 and int8 layers only and this ONNX is "
            f"{onnx_precision or 'of unknown precision (no m2ae.precision metadata)'}; build an fp16 or int8 ONNX "
            f"(`{FP16_EXPORT_HINT}` or `--precision int8`), or on TensorRT 10 add --fp16"
        )


def input_profile_shapes(
    inputs: dict[str, tuple[int | str, ...]], profile: Profile, batch: int, onnx_path: Path
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) NCHW shapes for every network input, from the H/W profile."""
    if INPUT_IMAGE not in inputs:
        raise UserError(f"{onnx_path}: no input named {INPUT_IMAGE!r}; is this an m2ae export?")
    shapes = {}
    for name, dims in inputs.items():
        if name not in _INPUT_CHANNELS:
            raise UserError(
                f"{onnx_path}: unexpected input {name!r}; m2ae models take {INPUT_IMAGE!r} and {INPUT_MASK!r}"
            )
        if len(dims) != 4:
            raise UserError(f"{onnx_path}: input {name!r} must be [N,C,H,W], got {len(dims)} dimensions")
        n, c, h, w = dims
        if isinstance(n, int) and n > 0 and n != batch:
            raise UserError(f"--batch {batch}: {onnx_path} has a fixed batch of {n} on {name!r}")
        channels = c if isinstance(c, int) and c > 0 else _INPUT_CHANNELS[name]
        fixed_hw = (h, w) if all(isinstance(d, int) and d > 0 for d in (h, w)) else None
        if fixed_hw is not None and not profile.min == profile.opt == profile.max == fixed_hw:
            side = format_size(fixed_hw)
            raise UserError(
                f"{onnx_path}: input {name!r} has a fixed size {side}; "
                f"build with --min {side} --opt {side} --max {side}"
            )

        def nchw(hw: Size) -> tuple[int, ...]:
            return (batch, channels, hw[0], hw[1])

        shapes[name] = (nchw(profile.min), nchw(profile.opt), nchw(profile.max))
    return shapes


@dataclass(frozen=True)
class BuildConfig:
    """One `m2ae build`: which ONNX, for which shapes, where the engine goes."""

    onnx: Path
    out: Path | None = None  # default: the ONNX path with suffix .engine
    plugin: str = PLUGIN_AUTO  # "auto" (load the m2ae plugin if the ONNX uses its ops) or a library path
    profile: Profile | None = None  # default: build_defaults() for this machine
    batch: int = 1
    workspace_mib: int | None = None  # default: build_defaults() for this machine
    dla_core: int | None = None
    fp16: bool = False  # TensorRT 10 only: weakly typed fp16 build of an fp32 ONNX
    cache_dir: Path | None = None  # default: engine_cache.default_cache_dir()
    use_cache: bool = True
    progress: bool = True
    command: tuple[str, ...] = field(default_factory=tuple)  # recorded in the sidecar

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.onnx).with_suffix(".engine")


@dataclass(frozen=True)
class BuildResult:
    engine_path: Path
    sidecar_path: Path
    sidecar: Sidecar
    cached: bool  # True: taken from the engine cache, nothing was built


# ---------------------------------------------------------------- building


def _load_plugin(plugin: str, info: OnnxInfo) -> str | None:
    """Register the m2ae plugin creators with TensorRT; return the library's path."""
    if plugin == PLUGIN_AUTO and not info.uses_m2ae_ops:
        return None
    from m2ae.trt_plugins.loader import load

    library = load(None if plugin == PLUGIN_AUTO else plugin)
    return str(library.path)


def _progress_monitor(trt: ModuleType):
    """An IProgressMonitor that draws tqdm bars (or prints top-level phases without tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()  # TensorRT calls from several threads
            self._bars: dict[str, object] = {}
            self._depth: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name] = depth
                if tqdm is not None:
                    self._bars[phase_name] = tqdm(
                        total=num_steps, desc=phase_name, position=depth, leave=depth == 0, file=sys.stderr
                    )
                elif depth == 0:
                    print(f"m2ae build: {phase_name} ...", file=sys.stderr, flush=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(1)
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()
                self._depth.pop(phase_name, None)

    return Monitor()


def _attach_timing_cache(builder_config, path: Path) -> None:
    """Give the build the timing cache saved at ``path``, or a fresh one."""
    data = path.read_bytes() if path.is_file() else b""
    cache = builder_config.create_timing_cache(data) if data else None
    # A cache TensorRT rejects (another version or device, a torn file) only makes the build slower.
    if cache is None or not builder_config.set_timing_cache(cache, ignore_mismatch=False):
        cache = builder_config.create_timing_cache(b"")
        builder_config.set_timing_cache(cache, ignore_mismatch=False)


def _save_timing_cache(builder_config, path: Path) -> None:
    # The config's cache, as trtexec and Polygraphy save it: it holds this build's timings.
    cache = builder_config.get_timing_cache()
    if cache is not None:
        atomic.write_bytes(path, bytes(cache.serialize()))


def _parse_errors(parser, onnx_path: Path, plugin_path: str | None) -> UserError:
    messages = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        where = f" (node {error.node_name()} / {error.node_operator()})" if error.node() >= 0 else ""
        messages.append(f"{error.desc()}{where}")
    text = "; ".join(messages) or "unknown parser error"
    hint = ""
    if plugin_path is None and "plugin" in text.lower():
        hint = "; the m2ae plugin library was not loaded: pass --plugin PATH or build it first"
    return UserError(f"TensorRT could not parse {onnx_path}: {text}{hint}")


def network_flags(trt: ModuleType, strongly_typed: bool) -> int:
    """``create_network`` flags for this TensorRT.

    TensorRT 11 builds every network strongly typed and keeps the flag only as an
    ignored, deprecated value (NvInfer.h); on 10 it is what makes the build follow the
    ONNX's types.
    """
    if not strongly_typed or tensorrt_major(trt.__version__) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _configure_dla(trt: ModuleType, builder, network, config, dla_core: int) -> None:
    available = builder.num_DLA_cores
    if dla_core >= available:
        raise UserError(
            f"--dla {dla_core}: TensorRT {trt.__version__} sees {available} DLA core(s) on this device "
            "(TensorRT 11.0 to 11.3 have no DLA support at all); drop --dla or pick a core below that"
        )
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = dla_core
    # Layers DLA lacks run on the GPU; the m2ae plugin ops are CUDA kernels, so pin them there.
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    plugin_types = {trt.LayerType.PLUGIN, trt.LayerType.PLUGIN_V2, trt.LayerType.PLUGIN_V3}
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in plugin_types:
            config.set_device_type(layer, trt.DeviceType.GPU)


def _build_serialized(
    trt: ModuleType,
    info: OnnxInfo,
    key: EngineKey,
    strongly_typed: bool,
    plugin_path: str | None,
    timing_path: Path,
    progress: bool,
) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, strongly_typed))
    # The parser owns the weights it imported, so it stays alive until the engine is built.
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(info.path)):
        raise _parse_errors(parser, info.path, plugin_path)

    config = builder.create_builder_config()
    # Precision lives in the ONNX (docs/design.md section 4): float32 tensors compute in IEEE fp32,
    # not in the TF32 that TensorRT allows by default on Ampere and newer (the fp32 parity
    # threshold, max abs 1e-4, is below TF32's rounding).
    config.clear_flag(trt.BuilderFlag.TF32)
    if key.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, key.workspace_mib << 20)
    if key.legacy_fp16:
        config.set_flag(trt.BuilderFlag.FP16)  # exists on TensorRT 10 only; strongly_typed_for checked that
    if key.dla_core is not None:
        _configure_dla(trt, builder, network, config, key.dla_core)

    profile = builder.create_optimization_profile()
    network_inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    for name, (low, opt, high) in input_profile_shapes(network_inputs, key.profile, key.batch, info.path).items():
        profile.set_shape(name, low, opt, high)
    if config.add_optimization_profile(profile) < 0:
        raise UserError(f"TensorRT rejected the optimisation profile ({key.profile}) for {info.path}")

    _attach_timing_cache(config, timing_path)
    if progress:
        config.progress_monitor = _progress_monitor(trt)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine from {info.path}; its messages above say why")
    _save_timing_cache(config, timing_path)
    return bytes(serialized)


def _write_engine(write: Callable[[Path], object], sidecar: Sidecar, out: Path) -> Path:
    """Write the engine with ``write(path)``, then its sidecar, each atomically.

    An older sidecar goes first: a crash in between leaves an engine without a sidecar,
    which the runtime refuses, never a new engine described by the old sidecar.
    """
    sidecar_path(out).unlink(missing_ok=True)
    atomic.write_with(out, write)
    sidecar.write(sidecar_path(out))
    return out


def _check_numbers(config: BuildConfig) -> None:
    if config.batch < 1:
        raise UserError(f"--batch {config.batch}: must be 1 or more")
    if config.workspace_mib is not None and config.workspace_mib < 1:
        raise UserError(f"--workspace {config.workspace_mib}: must be a positive number of MiB")


def choose_profile(config: BuildConfig, info: OnnxInfo, platform: PlatformInfo) -> tuple[Profile, int | None]:
    """The profile and workspace (MiB) to build with: the config's, else this machine's defaults."""
    defaults = build_defaults(platform, info.model.multiple, info.model.min_size)
    profile = validate_profile(config.profile or defaults.profile, info.model.multiple, info.model.min_size)
    workspace = config.workspace_mib if config.workspace_mib is not None else defaults.workspace_mib
    return profile, workspace


def check_request(config: BuildConfig, info: OnnxInfo, profile: Profile, platform: PlatformInfo) -> None:
    """Refuse what cannot build before TensorRT is needed: a mistake shows on any machine,
    and a bad profile fails in milliseconds instead of after parsing the network."""
    input_profile_shapes(info.inputs, profile, config.batch, info.path)
    check_dla_request(config.dla_core, platform, profile, info.model.precision, config.fp16)
    check_fp16_request(config.fp16, info.model.precision, info.path)


def _open_tensorrt(config: BuildConfig, info: OnnxInfo, platform: PlatformInfo) -> tuple[ModuleType, bool]:
    """TensorRT, and whether to build strongly typed; UserError for what this TensorRT would refuse."""
    trt = require_tensorrt(platform)
    require_gpu(platform)
    strongly_typed = strongly_typed_for(config.fp16, info.model.precision, tensorrt_major(trt.__version__), info.path)
    # `m2ae check` against this TensorRT's rules: what would fail the parse or the build
    # stops here (UserError), before TensorRT parses anything.
    from m2ae.export.trt_check import check_before_build

    for warning in check_before_build(info.path, trt.__version__):
        print(f"m2ae build: {warning}", file=sys.stderr)
    return trt, strongly_typed


@dataclass(frozen=True)
class BuildPlan:
    """One engine to build, every choice made: the cache key and what it does not hold."""

    info: OnnxInfo
    key: EngineKey
    strongly_typed: bool
    plugin_path: str | None


def plan_build(config: BuildConfig, platform: PlatformInfo | None = None, info: OnnxInfo | None = None
               ) -> tuple[ModuleType, BuildPlan]:
    """Read the ONNX (unless the caller has: ``info``), check the request (all before
    TensorRT is needed), then open TensorRT and the plugin and make the engine's cache key;
    returns TensorRT and the plan."""
    info = info or read_onnx_info(config.onnx)
    _check_numbers(config)
    platform = platform or detect_platform()
    profile, workspace = choose_profile(config, info, platform)
    check_request(config, info, profile, platform)
    trt, strongly_typed = _open_tensorrt(config, info, platform)
    plugin_path = _load_plugin(config.plugin, info)
    key = EngineKey(
        onnx_sha256=info.sha256,
        tensorrt_version=trt.__version__,
        gpu_name=platform.gpu_name or "",
        compute_capability=platform.compute_capability or "",
        plugin_sha256=file_sha256(plugin_path) if plugin_path else None,
        profile=profile,
        batch=config.batch,
        legacy_fp16=not strongly_typed,
        dla_core=config.dla_core,
        workspace_mib=workspace,
    )
    return trt, BuildPlan(info, key, strongly_typed, plugin_path)


def _result(out: Path, sidecar: Sidecar, cached: bool) -> BuildResult:
    return BuildResult(engine_path=out, sidecar_path=sidecar_path(out), sidecar=sidecar, cached=cached)


def _copy_from_cache(cache: EngineCache, plan: BuildPlan, config: BuildConfig) -> BuildResult | None:
    """The cached engine of ``plan``, copied to the output path with its sidecar; None on a miss."""
    cached = cache.lookup(cache_key(plan.key))
    if cached is None:
        return None
    sidecar = Sidecar.read(sidecar_path(cached))
    out = config.out_path
    if out.resolve() != cached.resolve():
        sidecar = replace(sidecar, onnx_path=str(plan.info.path), command=list(config.command))
        _write_engine(lambda tmp: shutil.copyfile(cached, tmp), sidecar, out)
    return _result(out, sidecar, cached=True)


def _build_new(trt: ModuleType, cache: EngineCache, plan: BuildPlan, config: BuildConfig) -> BuildResult:
    """Build the engine of ``plan``; write it (and, with the cache on, its cache entry) with its sidecar."""
    key = plan.key
    timing_path = cache.timing_cache_path(key.tensorrt_version, key.gpu_name, key.compute_capability)
    start = time.perf_counter()
    engine_bytes = _build_serialized(
        trt, plan.info, key, plan.strongly_typed, plan.plugin_path, timing_path, config.progress
    )
    sidecar = Sidecar(
        key=key,
        cache_key=cache_key(key),
        onnx_path=str(plan.info.path),
        onnx_metadata=plan.info.model.to_metadata(),
        strongly_typed=plan.strongly_typed,
        plugin_path=plan.plugin_path,
        build_seconds=round(time.perf_counter() - start, 3),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=list(config.command),
        m2ae_version=__version__,
    )
    if config.use_cache:
        cache.store(engine_bytes, sidecar)
    out = _write_engine(lambda tmp: tmp.write_bytes(engine_bytes), sidecar, config.out_path)
    return _result(out, sidecar, cached=False)


def build_engine(config: BuildConfig, platform: PlatformInfo | None = None,
                 info: OnnxInfo | None = None) -> BuildResult:
    """Build (or take from the cache) the engine for ``config`` and write it with its sidecar.

    ``info``: ``read_onnx_info(config.onnx)`` where the caller has read it already. The
    steps: ``plan_build`` (read the ONNX, check the request, choose the profile, open
    TensorRT, make the cache key), then ``_copy_from_cache`` or ``_build_new``.
    """
    trt, plan = plan_build(config, platform, info)
    cache = EngineCache.at(config.cache_dir)
    cached = _copy_from_cache(cache, plan, config) if config.use_cache else None
    return cached or _build_new(trt, cache, plan, config)
