"""The build manifest: what ``m2ae plugin build`` made and for what, and whether that fits this machine.

``build.py`` writes ``manifest.json`` next to the libraries it installs; the loader
reads it and, through ``check_manifest``, refuses a build made for another TensorRT
(major.minor) or for CUDA architectures the visible GPU cannot run, with a one-line
error that says how to rebuild, instead of a failed engine build later.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from m2ae.errors import UserError
from m2ae.platform_info import tensorrt_version

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


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


def manifest_next_to(library: Path) -> BuildManifest | None:
    """The manifest of the build folder holding ``library``; None for a library built by hand."""
    path = library.parent / MANIFEST_NAME
    return BuildManifest.from_file(path) if path.is_file() else None


def _major_minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


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
        running = tensorrt_version()
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
