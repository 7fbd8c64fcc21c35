"""``m2ae infer``: restore image files with any engine, whole or in tiles, as a batch job.

``restore_image`` restores one array; ``infer_files`` a file or a folder, where a bad
file (unreadable, corrupt, too small, a non-finite output) is reported and skipped while
the rest go on, and ``skip_existing`` resumes a killed run.

Output names: ``{stem}_restored.png`` and ``{stem}_mask.png``; inputs of one folder whose
stems clash (``photo.jpg``, ``photo.tif``) keep their extension: ``photo.jpg_restored.png``,
``photo.tif_restored.png``. Stems are compared ignoring case, since an output folder on
macOS or Windows would merge ``Photo`` and ``photo``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
from tqdm import tqdm

from m2ae.atomic import check_output_dir, remove_stale_temps
from m2ae.errors import UserError
from m2ae.imageio import list_images, read_image, write_image
from m2ae.runtime.base import Engine
from m2ae.runtime.tiling import DEFAULT_MAX_MEMORY, check_tiling_options, plan_tiles, run_tiles

OVERLAY_COLOUR = np.array([1.0, 0.15, 0.15], dtype=np.float32)
OVERLAY_ALPHA = 0.45
RESTORED_SUFFIX = "_restored.png"
MASK_SUFFIX = "_mask.png"

Status = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class InferOptions:
    """How ``infer_files`` and ``restore_image`` run an image.

    ``tile``: side of the square windows the engine runs on (a multiple of the network's
    multiple, at least twice its halo more); None picks it from ``max_memory`` (bytes of
    the working set of one engine call), or a TensorRT engine's profile. ``tile_batch``:
    windows per engine call (default 1, or the TensorRT engine's batch).
    """

    tile: int | None = None
    tile_batch: int | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    skip_existing: bool = False


@dataclass(frozen=True)
class InferResult:
    """One input file: ``done`` (outputs written), ``skipped`` (outputs existed) or
    ``failed`` (``error`` says why; nothing of it written)."""

    source: Path
    status: Status
    restored: Path | None = None
    overlay: Path | None = None
    blurred_fraction: float | None = None
    #: engine windows the image ran in (1: whole-image inference)
    tiles: int = 0
    seconds: float = 0.0
    error: str | None = None


def mask_overlay(image: np.ndarray, mask: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The input (HWC) with the blur mask (HW) tinted red, into ``out`` (may be ``image``)."""
    out = image.copy() if out is None else out
    if out is not image:
        np.copyto(out, image)
    out[mask] = out[mask] * (1.0 - OVERLAY_ALPHA) + OVERLAY_COLOUR * OVERLAY_ALPHA
    return out


def collect_inputs(source: str | Path) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise UserError(f"{path}: no images in this folder")
        return images
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    return [path]


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """The name each input's outputs start with: its stem, or its whole file name where
    stems clash (ignoring case). File names are unique in a folder, so the result is too."""
    names = {path: path.stem for path in inputs}
    # Twice: a whole name can clash with another file's stem (photo.jpg vs photo.jpg.png).
    for _ in range(2):
        counts = Counter(name.casefold() for name in names.values())
        names = {path: path.name if counts[name.casefold()] > 1 else name for path, name in names.items()}
    return names


def restore_image(engine: Engine, image: np.ndarray, *, tile: int | None = None,
                  tile_batch: int | None = None, max_memory: int = DEFAULT_MAX_MEMORY,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Restore one HWC float32 image of any size the model takes (at least its ``min_size``);
    returns (restored HWC in [0, 1], mask HW bool). It runs in tiles when ``tile`` is given
    or it exceeds ``max_memory`` (see ``InferOptions``), with the result of whole-image inference."""
    options = InferOptions(tile=tile, tile_batch=tile_batch, max_memory=max_memory)
    restored, mask, _ = _restore(engine, image, options, progress)
    return restored, mask


def _restore(engine: Engine, image: np.ndarray, options: InferOptions,
             progress: bool) -> tuple[np.ndarray, np.ndarray, int]:
    height, width = image.shape[:2]
    min_size = engine.min_size
    if min(height, width) < min_size:
        raise UserError(f"image is {height}x{width}; the network needs at least {min_size}x{min_size}")
    plan = plan_tiles(engine, height, width, options.tile, options.tile_batch, options.max_memory)
    restored, mask = run_tiles(engine, np.asarray(image, dtype=np.float32), plan, progress)
    return restored, mask, len(plan.windows)


def _write(path: Path, array: np.ndarray) -> Path:
    try:
        return write_image(path, array)
    except OSError as exc:
        # The output folder, not this image: every later image would fail the same way.
        raise UserError(f"{path}: cannot write ({exc.strerror or exc}); nothing of this image was kept") from None


def iter_infer(engine: Engine, source: str | Path, output: str | Path, options: InferOptions = InferOptions(),
               progress: bool = True) -> Iterator[InferResult]:
    """``infer_files`` one file at a time: yields each file's result as it finishes.

    Raises UserError before any work for a bad model, input, output folder or option,
    and during the run only when the output folder fails (disk full, removed).
    """
    if engine.takes_mask:
        raise UserError("this model takes a mask input (a *_maskin_* export); infer needs a model that predicts its mask")
    inputs = collect_inputs(source)
    output = check_output_dir(output, "--output")
    check_tiling_options(engine, options.tile, options.tile_batch, options.max_memory)
    remove_stale_temps(output)
    names = output_names(inputs)
    for path in tqdm(inputs, desc="infer", unit="img", disable=not progress or len(inputs) == 1):
        restored_path = output / f"{names[path]}{RESTORED_SUFFIX}"
        overlay_path = output / f"{names[path]}{MASK_SUFFIX}"
        if options.skip_existing and restored_path.is_file() and overlay_path.is_file():
            yield InferResult(path, "skipped", restored_path, overlay_path)
            continue
        start = time.perf_counter()
        try:
            image = read_image(path)
            restored, mask, tiles = _restore(engine, image, options, progress)
        except UserError as exc:
            message = str(exc)
            yield InferResult(path, "failed", error=message if str(path) in message else f"{path}: {message}")
            continue
        except MemoryError:
            yield InferResult(path, "failed", error=f"{path}: out of memory; give a smaller --max-memory or --tile")
            continue
        _write(restored_path, restored)
        del restored
        _write(overlay_path, mask_overlay(image, mask, out=image))  # the input is no longer needed: tint it in place
        blurred = float(mask.mean())
        del image, mask  # before the next image is read, not after
        yield InferResult(path, "done", restored_path, overlay_path, blurred, tiles, time.perf_counter() - start)


def infer_files(engine: Engine, source: str | Path, output: str | Path, options: InferOptions = InferOptions(),
                progress: bool = True, on_result: Callable[[InferResult], None] | None = None) -> list[InferResult]:
    """Restore every image of ``source`` (a file or folder) into ``output``; returns one
    result per input, failures included (see ``iter_infer``).

    Writes ``{name}_restored.png`` and ``{name}_mask.png`` (the mask over the input) per
    image, each atomically (names: the module's docstring). ``on_result`` sees each
    result as its file finishes.
    """
    results = []
    for result in iter_infer(engine, source, output, options, progress):
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results
