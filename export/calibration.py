"""Images for int8 calibration: synthetic training-split pairs, or a folder of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from m2ae.errors import UserError
from m2ae.imageio import list_images, read_image
from m2ae.padding import pad_to_multiple

CALIBRATION_SIZE = 256
#: seeds far from training's, so calibration never replays a training batch
CALIBRATION_SEED = 7_000_000


def _center_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[..., top : top + size, left : left + size]


def calibration_images(source: str, count: int, multiple: int, size: int = CALIBRATION_SIZE) -> list[np.ndarray]:
    """``count`` CHW float32 images padded to ``multiple``: 'synthetic' or a folder's images."""
    if count <= 0:
        raise UserError(f"calibration needs at least one image, got {count}")
    if source == "synthetic":
        from m2ae.model.data.synthetic import SyntheticConfig, make_sample

        config = SyntheticConfig(size=size, split="train")
        return [make_sample(config, CALIBRATION_SEED + i).blurred for i in range(count)]
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(f"--calib: {folder} is neither 'synthetic' nor a folder of images")
    paths = list_images(folder, recursive=True)
    if not paths:
        raise UserError(f"--calib: {folder} holds no images")
    images = []
    for path in paths[:count]:
        chw = np.ascontiguousarray(read_image(path).transpose(2, 0, 1))
        images.append(pad_to_multiple(_center_crop(chw, size), multiple))
    return images
