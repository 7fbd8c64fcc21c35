"""Engine identity, sidecars and the on-disk engine cache.

An engine is valid only for the exact ONNX, TensorRT version, GPU, plugin library and
optimisation profile it was built with. ``EngineKey`` holds those components and
``cache_key`` hashes a canonical JSON of them, so two builds share a cache entry
exactly when every component agrees. Every engine file has a JSON ``Sidecar`` beside it
(``model.engine`` -> ``model.engine.json``) recording the key, the ONNX's metadata, the
build time and the command; the runtime reads it to check compatibility before it
deserializes. ``EngineCache`` keeps engines and TensorRT timing caches in one folder
(``~/.cache/m2ae/engines`` unless ``M2AE_CACHE_DIR`` or an argument says otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from m2ae import atomic
from m2ae.errors import UserError

CACHE_DIR_ENV = "M2AE_CACHE_DIR"
SIDECAR_FORMAT = 1
# Bump when the builder changes what it puts into an engine, to retire old cache entries.
KEY_SCHEMA = 2  # 2: fp32 layers built without TF32

Shape = tuple[int, int]  # (H, W)

_SHAPE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def format_shape(shape: Shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def parse_shape(text: str, option: str = "shape") -> Shape:
    """``"720x1280"`` -> ``(720, 1280)`` (height x width)."""
    match = _SHAPE_RE.match(text)
    if not match:
        raise UserError(f"{option} {text!r}: expected HEIGHTxWIDTH, for example 720x1280")
    height, width = int(match.group(1)), int(match.group(2))
    if height <= 0 or width <= 0:
        raise UserError(f"{option} {text!r}: height and width must be positive")
    return height, width


def round_up_shape(shape: Shape, multiple: int) -> Shape:
    return tuple(-(-side // multiple) * multiple for side in shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile over the image's height and width."""

    min: Shape
    opt: Shape
    max: Shape

    def __str__(self) -> str:
        return f"min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)}"

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Profile:
        def shape(name: str) -> Shape:
            value = data[name]
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"profile {name} must be [H, W], got {value!r}")
            return int(value[0]), int(value[1])

        return cls(min=shape("min"), opt=shape("opt"), max=shape("max"))

    def cli_args(self) -> list[str]:
        return ["--min", format_shape(self.min), "--opt", format_shape(self.opt), "--max", format_shape(self.max)]

    def contains(self, shape: Shape) -> bool:
        return all(lo <= side <= hi for lo, side, hi in zip(self.min, shape, self.max))

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max


def validate_profile(profile: Profile, multiple: int = 1, min_size: int = 1) -> Profile:
    """Check min <= opt <= max per dimension, every side a multiple of ``multiple`` and at
    least ``min_size`` (the network's smallest input, from its ``m2ae.min_size`` metadata)."""
    if min(profile.min) < min_size:
        fixed = format_shape(round_up_shape(tuple(max(side, min_size) for side in profile.min), multiple))
        raise UserError(
            f"--min {format_shape(profile.min)}: height and width must be at least {min_size} "
            f"(the network's m2ae.min_size); try --min {fixed}"
        )
    for dim, name in enumerate(("height", "width")):
        lo, mid, hi = profile.min[dim], profile.opt[dim], profile.max[dim]
        if not lo <= mid <= hi:
            raise UserError(
                f"--min/--opt/--max: {name} must satisfy min <= opt <= max, got {lo}, {mid}, {hi} ({profile})"
            )
    for option, shape in (("--min", profile.min), ("--opt", profile.opt), ("--max", profile.max)):
        check_multiple(option, shape, multiple)
    return profile


def check_multiple(option: str, shape: Shape, multiple: int) -> None:
    if shape[0] % multiple or shape[1] % multiple:
        fixed = format_shape(round_up_shape(shape, multiple))
        raise UserError(
            f"{option} {format_shape(shape)}: height and width must be multiples of {multiple} "
            f"(the network's m2ae.multiple); try {fixed}"
        )


def parse_profile(min: str, opt: str, max: str, multiple: int = 1, min_size: int = 1) -> Profile:  # noqa: A002
    """Parse ``HxW`` strings into a validated ``Profile``."""
    profile = Profile(min=parse_shape(min, "--min"), opt=parse_shape(opt, "--opt"), max=parse_shape(max, "--max"))
    return validate_profile(profile, multiple, min_size)


def complete_profile(
    min: str | None,  # noqa: A002
    opt: str | None,
    max: str | None,  # noqa: A002
    defaults: Profile,
    multiple: int = 1,
    min_size: int = 1,
) -> Profile:
    """Parse the sides given; fill the others from ``defaults``, moved to fit the given ones.

    ``--max 512x512`` alone keeps the default min and pulls the default opt down to 512x512
    rather than failing on an opt above the max.
    """
    given = {
        name: parse_shape(text, f"--{name}") if text is not None else None
        for name, text in (("min", min), ("opt", opt), ("max", max))
    }

    for name, shape in given.items():
        if shape is not None:
            check_multiple(f"--{name}", shape, multiple)
    upper = given["opt"] or given["max"]
    low = given["min"] or _elementwise(defaults.min, upper, pick_smaller=True)
    lower = given["opt"] or low
    high = given["max"] or _elementwise(defaults.max, lower, pick_smaller=False)
    mid = given["opt"] or _elementwise(_elementwise(defaults.opt, low, pick_smaller=False), high, pick_smaller=True)
    return validate_profile(Profile(min=low, opt=mid, max=high), multiple, min_size)


def _elementwise(shape: Shape, bound: Shape | None, pick_smaller: bool) -> Shape:
    if bound is None:
        return shape
    pick = (lambda a, b: a if a <= b else b) if pick_smaller else (lambda a, b: a if a >= b else b)
    return pick(shape[0], bound[0]), pick(shape[1], bound[1])


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; equal keys mean interchangeable engines."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    plugin_sha256: str | None
    profile: Profile
    batch: int = 1
    legacy_fp16: bool = False  # TensorRT 10's weakly typed BuilderFlag.FP16 build
    dla_core: int | None = None
    workspace_mib: int | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["profile"] = self.profile.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> EngineKey:
        values = dict(data)
        values["profile"] = Profile.from_dict(values["profile"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def cache_key(key: EngineKey) -> str:
    """sha256 of the key's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps({"schema": KEY_SCHEMA, **key.to_dict()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


@dataclass(frozen=True)
class Sidecar:
    """What an engine was built from, with what, and how: the JSON beside every engine."""

    key: EngineKey
    cache_key: str
    onnx_path: str
    onnx_metadata: dict[str, str] = field(default_factory=dict)
    strongly_typed: bool = True
    plugin_path: str | None = None
    build_seconds: float = 0.0
    built_at: str = ""
    command: list[str] = field(default_factory=list)
    m2ae_version: str = ""

    def to_json(self) -> str:
        data = {"format": SIDECAR_FORMAT, **asdict(self)}
        data["key"] = self.key.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "sidecar") -> Sidecar:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise UserError(
                f"{source}: not an m2ae engine sidecar of format {SIDECAR_FORMAT} (found {found!r}); "
                "rebuild the engine with `m2ae build`"
            )
        data.pop("format")
        try:
            data["key"] = EngineKey.from_dict(data["key"])
            return cls(**data)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"{source}: incomplete or malformed engine sidecar ({exc}); rebuild with `m2ae build`"
            ) from None

    def write(self, path: str | os.PathLike) -> Path:
        return atomic.write_text(path, self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike) -> Sidecar:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise UserError(f"{path}: no such engine sidecar") from None
        return cls.from_json(text, source=str(path))

    def rebuild_command(self, engine_path: str | os.PathLike) -> str:
        """The `m2ae build` line that rebuilds this engine on the current machine."""
        parts = ["m2ae", "build", "--onnx", self.onnx_path, *self.key.profile.cli_args()]
        if self.plugin_path:
            parts += ["--plugin", self.plugin_path]
        if self.key.batch != 1:
            parts += ["--batch", str(self.key.batch)]
        if self.key.legacy_fp16:
            parts.append("--fp16")
        if self.key.dla_core is not None:
            parts += ["--dla", str(self.key.dla_core)]
        if self.key.workspace_mib is not None:
            parts += ["--workspace", str(self.key.workspace_mib)]
        parts += ["--out", str(engine_path)]
        return " ".join(_shell_quote(part) for part in parts)


def _shell_quote(text: str) -> str:
    if re.fullmatch(r"[\w@%+=:,./-]+", text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$M2AE_CACHE_DIR``, else ``$XDG_CACHE_HOME/m2ae/engines``, else ``~/.cache/m2ae/engines``."""
    if environ.get(CACHE_DIR_ENV):
        return Path(environ[CACHE_DIR_ENV]).expanduser()
    base = Path(environ["XDG_CACHE_HOME"]).expanduser() if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "m2ae" / "engines"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


@dataclass(frozen=True)
class EngineCache:
    """A folder of ``<cache_key>.engine`` files with sidecars, and TensorRT timing caches."""

    root: Path

    @classmethod
    def at(cls, directory: str | os.PathLike | None = None) -> EngineCache:
        return cls(Path(directory).expanduser() if directory else default_cache_dir())

    def engine_path(self, key_hash: str) -> Path:
        return self.root / f"{key_hash}.engine"

    def lookup(self, key_hash: str) -> Path | None:
        """The cached engine for this key, if both it and a matching sidecar exist."""
        engine = self.engine_path(key_hash)
        if not engine.is_file():
            return None
        try:
            sidecar = Sidecar.read(sidecar_path(engine))
        except UserError:
            return None
        return engine if sidecar.cache_key == key_hash else None

    def store(self, engine_bytes: bytes, sidecar: Sidecar) -> Path:
        # Engine first, sidecar last: a crash in between leaves an entry lookup() ignores.
        engine = atomic.write_bytes(self.engine_path(sidecar.cache_key), engine_bytes)
        sidecar.write(sidecar_path(engine))
        return engine

    def timing_cache_path(self, tensorrt_version: str, gpu_name: str, compute_capability: str) -> Path:
        name = f"trt{_slug(tensorrt_version)}_{_slug(gpu_name)}_sm{_slug(compute_capability)}.timing"
        return self.root / "timing" / name
