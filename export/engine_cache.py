"""The on-disk engine cache, and the builder's --min/--opt/--max options.

``EngineCache`` keeps engines (``<cache_key>.engine`` with their sidecars, see
``m2ae.engine_sidecar``) and TensorRT timing caches in one folder
(``~/.cache/m2ae/engines`` unless ``M2AE_CACHE_DIR`` or an argument says otherwise).
``complete_profile`` turns the ``HxW`` options given into a validated ``Profile``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from m2ae import atomic
from m2ae.cli_args import Size, format_size, parse_size
from m2ae.engine_sidecar import Profile, Sidecar, sidecar_path
from m2ae.errors import UserError
from m2ae.padding import padded_size

CACHE_DIR_ENV = "M2AE_CACHE_DIR"


def validate_profile(profile: Profile, multiple: int = 1, min_size: int = 1) -> Profile:
    """Check min <= opt <= max per dimension, every side a multiple of ``multiple`` and at
    least ``min_size`` (the network's smallest input, from its ``m2ae.min_size`` metadata)."""
    if min(profile.min) < min_size:
        fixed = format_size(padded_size(*(max(side, min_size) for side in profile.min), multiple))
        raise UserError(
            f"--min {format_size(profile.min)}: height and width must be at least {min_size} "
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


def check_multiple(option: str, shape: Size, multiple: int) -> None:
    if shape[0] % multiple or shape[1] % multiple:
        fixed = format_size(padded_size(*shape, multiple))
        raise UserError(
            f"{option} {format_size(shape)}: height and width must be multiples of {multiple} "
            f"(the network's m2ae.multiple); try {fixed}"
        )


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
        name: parse_size(text, f"--{name}") if text is not None else None
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


def _elementwise(shape: Size, bound: Size | None, pick_smaller: bool) -> Size:
    if bound is None:
        return shape
    pick = (lambda a, b: a if a <= b else b) if pick_smaller else (lambda a, b: a if a >= b else b)
    return pick(shape[0], bound[0]), pick(shape[1], bound[1])


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
