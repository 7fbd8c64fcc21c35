"""``m2ae infer``: restore image files with any engine, padding to the network's multiple."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from m2ae.errors import UserError
from m2ae.imageio import list_images, read_image, write_image
from m2ae.padding import crop_to, pad_to_multiple
from m2ae.runtime.base import Engine

OVERLAY_COLOUR = np.array([1.0, 0.15, 0.15], dtype=np.float32)
OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class InferResult:
    source: Path
    restored: Path
    overlay: Path
    blurred_fraction: float


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The input (HWC) with the blur mask (HW) tinted red."""
    tint = mask[..., None].astype(np.float32) * OVERLAY_ALPHA
    return image * (1.0 - tint) + OVERLAY_COLOUR * tint


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


def restore_image(engine: Engine, image: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Restore one HWC image of any size >= ``min_size``; returns (restored HWC, mask HW)."""
    height, width = image.shape[:2]
    if min(height, width) < min_size:
        raise UserError(f"image is {width}x{height}; the network needs at least {min_size}x{min_size}")
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    out = engine.infer(pad_to_multiple(chw, engine.multiple)[None])
    restored = crop_to(out.restored[0], height, width).transpose(1, 2, 0)
    mask = crop_to(out.mask[0, 0], height, width) > 0.5
    return np.clip(restored, 0.0, 1.0), mask


def infer_files(engine: Engine, source: str | Path, output: str | Path, progress: bool = True) -> list[InferResult]:
    """Restore every image of ``source`` (a file or folder) into ``output``.

    Writes ``{stem}_restored.png`` and ``{stem}_mask.png`` (the mask over the input)
    per image, each atomically; a bad image stops the run with its name before any of
    its outputs is written.
    """
    if engine.takes_mask:
        raise UserError("this model takes a mask input (a *_maskin_* export); infer needs a model that predicts its mask")
    inputs = collect_inputs(source)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder")
    min_size = int(engine.metadata.get("m2ae.min_size", engine.multiple))
    results = []
    for path in tqdm(inputs, desc="infer", unit="img", disable=not progress or len(inputs) == 1):
        image = read_image(path)
        try:
            restored, mask = restore_image(engine, image, min_size)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        restored_path = write_image(output / f"{path.stem}_restored.png", restored)
        overlay_path = write_image(output / f"{path.stem}_mask.png", mask_overlay(image, mask))
        results.append(InferResult(path, restored_path, overlay_path, float(mask.mean())))
    return results
