"""Where training batches and evaluation samples come from: synthetic or a folder.

Batches are a pure function of ``(seed, step, rank)``, which is what lets a resumed
run continue without repeating or skipping data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from m2ae.errors import UserError
from m2ae.imageio import list_images, read_image_size
from m2ae.model.data.folders import PairedFolder, open_pairs
from m2ae.model.data.synthetic import SyntheticConfig, heldout_set, make_batch, make_sample

#: differences below this (in [0, 1] units) do not count as blur when a folder has no masks
DERIVED_MASK_THRESHOLD = 4.0 / 255.0
VALIDATION_SIZE = 128
#: threshold calibration: training-split pairs at the size ``m2ae eval`` scores. 16 pairs of
#: 128 px chose 0.30 for the shipped tiny, where its IoU on 32 such pairs of 256 px peaks at 0.40
CALIBRATION_IMAGES = 32
CALIBRATION_SIZE = 256
#: seeds of threshold-calibration pairs: far beyond any training step's seeds
CALIBRATION_SEED = 900_000_000


def _step_rng(seed: int, step: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, rank])


def derived_mask(blurred: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """A blur mask for pairs that come without one: where the images visibly differ."""
    return ((blurred - sharp).abs().amax(dim=-3, keepdim=True) > DERIVED_MASK_THRESHOLD).float()


def picture_files(folder: Path) -> tuple[str, ...]:
    """The pictures of ``folder`` as paths for ``SyntheticConfig.pictures``, each checked to
    open as an image of at least 16x16, so a bad file fails the run now, not mid-training."""
    files = list_images(folder)
    if not files:
        raise UserError(f"{folder}: no images in this folder (--pictures wants sharp pictures for backgrounds)")
    for path in files:
        height, width = read_image_size(path)
        if min(height, width) < 16:
            raise UserError(f"{path}: {width}x{height} is too small for a background (at least 16x16)")
    return tuple(str(path) for path in files)


class SyntheticSource:
    """Training-split pairs made as ``config`` says (its split must be ``"train"``)."""

    def __init__(self, config: SyntheticConfig, batch_size: int, seed: int, val_images: int) -> None:
        if config.split != "train":
            raise ValueError(f"SyntheticSource: training pairs come from the train split, got {config.split!r}")
        self.config = config
        self.batch_size = batch_size
        self.seed = seed
        self.val_images = val_images

    def batch(self, step: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        first = ((self.seed * 1_000_003 + step) * world + rank) * self.batch_size
        return make_batch(self.config, range(first, first + self.batch_size))

    def validation(self) -> list[dict[str, np.ndarray]]:
        return [_numpy(item) for item in heldout_set(self.val_images, VALIDATION_SIZE)]

    def calibration(self) -> list[dict[str, np.ndarray]]:
        config = dataclasses.replace(self.config, size=CALIBRATION_SIZE)
        samples = (make_sample(config, CALIBRATION_SEED + i) for i in range(CALIBRATION_IMAGES))
        return [{"blurred": s.blurred, "sharp": s.sharp, "mask": s.mask} for s in samples]


class FolderSource:
    """Random crops of a folder's pairs; the first ``val_images`` pairs are held out."""

    def __init__(self, root: Path, crop: int, batch_size: int, seed: int, val_images: int) -> None:
        self.folder: PairedFolder = open_pairs(root)
        if len(self.folder) <= val_images:
            raise UserError(f"{root}: {len(self.folder)} pairs, need more than the {val_images} held out for validation")
        self.crop = crop
        self.batch_size = batch_size
        self.seed = seed
        self.val_images = val_images

    def batch(self, step: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        rng = _step_rng(self.seed, step, rank)
        indices = rng.integers(self.val_images, len(self.folder), size=self.batch_size)
        crops = [self._crop(self.folder[int(i)], rng) for i in indices]
        return {key: torch.stack([c[key] for c in crops]) for key in ("blurred", "sharp", "mask")}

    def _crop(self, item: dict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        blurred, sharp = item["blurred"], item["sharp"]
        mask = item["mask"] if item["mask"] is not None else derived_mask(blurred, sharp)
        height, width = blurred.shape[-2:]
        if height < self.crop or width < self.crop:
            raise UserError(f"{item['name']}: {width}x{height} is smaller than the {self.crop}px training crop; lower --crop")
        top = int(rng.integers(0, height - self.crop + 1))
        left = int(rng.integers(0, width - self.crop + 1))
        window = (..., slice(top, top + self.crop), slice(left, left + self.crop))
        return {"blurred": blurred[window], "sharp": sharp[window], "mask": mask[window]}

    def validation(self) -> list[dict[str, np.ndarray]]:
        return [_numpy(self.folder[i]) for i in range(self.val_images)]

    def calibration(self) -> list[dict[str, np.ndarray]]:
        return self.validation()


def _numpy(item: dict) -> dict[str, np.ndarray | None]:
    return {key: None if item.get(key) is None else np.asarray(item[key]) for key in ("blurred", "sharp", "mask")}


#: exposure steps of the ``synthetic-shifted`` evaluation set (the standard generator: 9)
SHIFTED_NUM_STEPS = 15


def evaluation_samples(data: str, num_images: int, size: int) -> Sequence[dict[str, np.ndarray | None]]:
    """The evaluation set: ``num_images`` held-out synthetic pairs, or every pair of a folder.

    ``data`` is ``"synthetic"`` (the training generator on held-out images),
    ``"synthetic-shifted"`` (held-out images, local motion blur made by the other
    generator, see :mod:`m2ae.model.data.synthetic`) or a folder of pairs."""
    if data in ("synthetic", "synthetic-shifted") and num_images <= 0:
        raise UserError(f"--num-images must be positive, got {num_images}")
    if data == "synthetic":
        dataset = heldout_set(num_images, size)
    elif data == "synthetic-shifted":
        dataset = heldout_set(num_images, size, generator="shifted", num_steps=SHIFTED_NUM_STEPS)
    else:
        dataset = open_pairs(data)
    return _LazyNumpy(dataset)


class _LazyNumpy:
    """Reads one pair at a time, so large folders are not held in memory."""

    def __init__(self, dataset) -> None:  # noqa: ANN001 (any indexable dataset of dicts)
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, np.ndarray | None]:
        if index >= len(self):
            raise IndexError(index)
        return _numpy(self.dataset[index])
