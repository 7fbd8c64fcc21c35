"""What an engine is: its identity, the JSON sidecar beside it, and the cache key.

An engine is valid only for the exact ONNX, TensorRT version, GPU, plugin library and
optimisation profile it was built with. ``EngineKey`` holds those components and
``cache_key`` hashes a canonical JSON of them, so two builds share a cache entry
exactly when every component agrees. Every engine file has a JSON ``Sidecar`` beside it
(``model.engine`` -> ``model.engine.json``) recording the key, the ONNX's metadata, the
build time and the command. The builder (``m2ae.export``) writes it and the runtime
(``m2ae.runtime``) reads it to check compatibility before it deserializes, so it lives
here, below both.
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
from m2ae.cli_args import Size, format_size
from m2ae.errors import UserError

SIDECAR_FORMAT = 1
# Bump when the builder changes what it puts into an engine, to retire old cache entries.
KEY_SCHEMA = 2  # 2: fp32 layers built without TF32


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile over the image's height and width."""

    min: Size
    opt: Size
    max: Size

    def __str__(self) -> str:
        return f"min {format_size(self.min)}, opt {format_size(self.opt)}, max {format_size(self.max)}"

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Profile:
        def shape(name: str) -> Size:
            value = data[name]
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"profile {name} must be [H, W], got {value!r}")
            return int(value[0]), int(value[1])

        return cls(min=shape("min"), opt=shape("opt"), max=shape("max"))

    def cli_args(self) -> list[str]:
        return ["--min", format_size(self.min), "--opt", format_size(self.opt), "--max", format_size(self.max)]

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max


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
