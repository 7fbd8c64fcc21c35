"""The files a benchmark runs: mask-input ONNX exports, reused while they are current, and
TensorRT engines built from exports (where ``platform_info.tensorrt_unavailable`` allows).

An export is current when its ``ModelInfo`` records the same checkpoint (by sha256) and,
for the pruned variants, the same tiling and dense switch as the run asks for; anything
else in the folder (another checkpoint's export, a damaged file) is exported again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import onnx

from m2ae.cli_args import Size
from m2ae.engine_sidecar import Profile
from m2ae.errors import UserError
from m2ae.export.onnx_export import PRECISIONS, VARIANTS, ExportConfig, export_models, model_filename
from m2ae.export.trt_builder import BuildConfig, build_engine
from m2ae.model.checkpoint import LoadedCheckpoint
from m2ae.model.pruned import PruningConfig, PruningOptions
from m2ae.model_info import ModelInfo

#: (variant, precision) of one export
ModelKey = tuple[str, str]


def _recorded_info(path: Path) -> ModelInfo | None:
    """What an exported file records, or None when it is missing, damaged or not m2ae's."""
    if not path.is_file():
        return None
    try:
        model = onnx.load(path, load_external_data=False)
        return ModelInfo.from_onnx(model, path)
    except Exception:  # noqa: BLE001 (onnx raises DecodeError, ValueError, ...; any unreadable file is re-exported)
        return None


def is_current(path: Path, variant: str, sha256: str, pruning: PruningConfig) -> bool:
    """Whether ``path`` is the export of this checkpoint (and, pruned, of this tiling) a run needs."""
    info = _recorded_info(path)
    if info is None or info.checkpoint_sha256 != sha256:
        return False
    if variant == "dense":
        return True
    return (info.tiles is not None and info.tiles == tuple(pruning.tile(s) for s in range(len(info.tiles)))
            and info.dense_above == pruning.dense_above and info.blocks_per_gather == pruning.blocks_per_gather)


def ensure_models(loaded: LoadedCheckpoint, folder: Path, wanted: set[ModelKey], progress: bool,
                  pruning: PruningOptions = PruningOptions()) -> dict[ModelKey, Path]:
    """Mask-input ONNX files for every (variant, precision) in ``wanted``: current ones in
    ``folder`` are reused, the rest exported there."""
    paths = {key: folder / model_filename(key[0], key[1], True) for key in wanted}
    resolved = pruning.resolve(loaded.config.preset)
    missing = {key for key, path in paths.items() if not is_current(path, key[0], loaded.sha256, resolved)}
    if missing:
        # Exports are pure functions of the checkpoint: re-exporting a few current ones costs only time.
        variants = tuple(v for v in VARIANTS if any(key[0] == v for key in missing))
        precisions = tuple(p for p in PRECISIONS if any(key[1] == p for key in missing))
        export_models(ExportConfig(checkpoint=loaded, out=folder, variants=variants, precisions=precisions,
                                   mask_input=True, pruning=pruning, progress=progress))
    return paths


def sweep_profile(sizes: Sequence[Size]) -> Profile:
    """The optimisation profile spanning every size of a sweep, tuned for the first."""
    low = (min(h for h, _ in sizes), min(w for _, w in sizes))
    high = (max(h for h, _ in sizes), max(w for _, w in sizes))
    return Profile(min=low, opt=sizes[0], max=high) if len(sizes) > 1 else Profile(low, low, low)


def build_engines(onnx_files: Sequence[Path], notes: list[str], out: Path | None = None,
                  profile: Profile | None = None, command: tuple[str, ...] = ()) -> dict[Path, Path]:
    """A TensorRT engine per ONNX file (beside it, or in ``out``), keyed by the ONNX path.
    A file whose build fails gets none, and a line in ``notes`` saying why."""
    engines = {}
    for onnx_path in onnx_files:
        target = onnx_path.with_suffix(".engine")
        config = BuildConfig(onnx=onnx_path, out=target if out is None else out / target.name, profile=profile,
                             progress=False, command=command)
        try:
            engines[onnx_path] = build_engine(config).engine_path
        except UserError as exc:
            notes.append(f"{onnx_path.name}: no TensorRT engine: {exc}")
    return engines
