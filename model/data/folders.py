"""Blurred/sharp pairs from folders on disk, in the two layouts m2ae understands.

ReLoBlur layout: anywhere under the folder (recursively), ``<name>_blur.<ext>`` with
``<name>_sharp.<ext>`` and optionally a mask ``<name>_mask.<ext>`` or
``<name>_blur_mask.<ext>``. A partner is looked for in the blur file's own folder first,
then anywhere in the tree (it must then be the only file of that name). Image files
with none of these suffixes are ignored.

Paired layout: ``blur/``, ``sharp/`` and optionally ``mask/`` holding files with the
same names (matched by name without extension, so masks may be PNG beside JPEG images).

Masks are all or nothing: either every pair has one or none has. Every file's header is
checked when the folder is opened (pairs, sizes, readable images), so a bad folder
fails at once with a one-line :class:`~m2ae.errors.UserError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from m2ae.errors import UserError
from m2ae.imageio import list_images, read_image, read_image_size, read_mask

RELOBLUR = "reloblur"
PAIRED = "paired"

# Longest first: "x_blur_mask" is a mask of "x", not a blur image of "x_blur_m..."
_RELOBLUR_ROLES = (("_blur_mask", "mask"), ("_mask", "mask"), ("_blur", "blurred"), ("_sharp", "sharp"))


@dataclass(frozen=True)
class PairFiles:
    """The files of one pair; ``name`` identifies it (relative path without suffixes)."""

    name: str
    blurred: Path
    sharp: Path
    mask: Path | None


def _role(path: Path) -> tuple[str, str] | None:
    """``(role, base name)`` of a ReLoBlur-layout file, or None if it has no role."""
    stem = path.stem
    for suffix, role in _RELOBLUR_ROLES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return role, stem[: -len(suffix)]
    return None


def _is_blur(path: Path) -> bool:
    role = _role(path)
    return role is not None and role[0] == "blurred"


def _partner(blur: Path, base: str, candidates: dict[str, list[Path]], what: str) -> Path | None:
    """The file of role ``what`` for ``blur``: same folder first, else unique in the tree."""
    found = candidates.get(base, [])
    beside = [p for p in found if p.parent == blur.parent]
    if len(beside) > 1:
        raise UserError(f"{blur}: more than one {what} file beside it: {', '.join(p.name for p in beside)}")
    if beside:
        return beside[0]
    if len(found) > 1:
        raise UserError(f"{blur}: ambiguous {what} file, candidates: {', '.join(str(p) for p in found)}")
    return found[0] if found else None


def _scan_reloblur(root: Path, files: list[Path]) -> list[PairFiles]:
    by_role: dict[str, dict[str, list[Path]]] = {"blurred": {}, "sharp": {}, "mask": {}}
    for path in files:
        role = _role(path)
        if role is not None:
            by_role[role[0]].setdefault(role[1], []).append(path)
    pairs: list[PairFiles] = []
    claimed: set[Path] = set()
    for base, blurs in sorted(by_role["blurred"].items()):
        for blur in blurs:
            sharp = _partner(blur, base, by_role["sharp"], "sharp")
            if sharp is None:
                raise UserError(f"{blur}: no matching {base}_sharp image under {root}")
            mask = _partner(blur, base, by_role["mask"], "mask")
            for partner in (sharp, mask):
                if partner in claimed:
                    raise UserError(f"{partner}: matches more than one blur image (e.g. {blur})")
                if partner is not None:
                    claimed.add(partner)
            name = (blur.parent.relative_to(root) / base).as_posix()
            pairs.append(PairFiles(name=name, blurred=blur, sharp=sharp, mask=mask))
    for role in ("sharp", "mask"):
        for paths in by_role[role].values():
            for path in paths:
                if path not in claimed:
                    raise UserError(f"{path}: {role} image without a matching _blur image under {root}")
    return sorted(pairs, key=lambda p: p.name)


def _by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in files:
            raise UserError(f"{path}: same name as {files[path.stem].name}; names must be unique in {folder}")
        files[path.stem] = path
    return files


def _scan_paired(root: Path) -> list[PairFiles]:
    blurs, sharps = _by_stem(root / "blur"), _by_stem(root / "sharp")
    masks = _by_stem(root / "mask") if (root / "mask").is_dir() else {}
    for stem, path in sharps.items():
        if stem not in blurs:
            raise UserError(f"{path}: sharp image without a blur image of the same name in {root / 'blur'}")
    for stem, path in masks.items():
        if stem not in blurs:
            raise UserError(f"{path}: mask without a blur image of the same name in {root / 'blur'}")
    pairs = []
    for stem, blur in sorted(blurs.items()):
        if stem not in sharps:
            raise UserError(f"{blur}: no sharp image of the same name in {root / 'sharp'}")
        pairs.append(PairFiles(name=stem, blurred=blur, sharp=sharps[stem], mask=masks.get(stem)))
    return pairs


def _check(pairs: list[PairFiles], root: Path) -> None:
    """Headers readable, sizes equal within each pair, masks all or nothing."""
    with_mask = [p for p in pairs if p.mask is not None]
    if with_mask and len(with_mask) != len(pairs):
        lacking = next(p for p in pairs if p.mask is None)
        raise UserError(
            f"{lacking.blurred}: has no mask while {with_mask[0].mask} does; "
            f"give every pair under {root} a mask or none"
        )
    for pair in pairs:
        size = read_image_size(pair.blurred)
        for other in (pair.sharp, pair.mask):
            if other is None:
                continue
            height, width = read_image_size(other)
            if (height, width) != size:
                raise UserError(
                    f"{other}: size {width}x{height} differs from {pair.blurred} ({size[1]}x{size[0]})"
                )


class PairedFolder:
    """Pairs of a folder as a dataset: item i is a dict with ``blurred`` and ``sharp``
    (float32 tensors [3,H,W] in [0,1]), ``mask`` (float32 [1,H,W] of 0/1, or None when
    the folder has no masks) and ``name`` (str): the keys of the synthetic data."""

    def __init__(self, root: Path, layout: str, pairs: list[PairFiles]) -> None:
        self.root = root
        self.layout = layout
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | str | None]]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str | None]:
        pair = self.pairs[index]
        blurred, sharp = read_image(pair.blurred), read_image(pair.sharp)
        mask = read_mask(pair.mask) if pair.mask is not None else None
        # Decoded sizes can still differ from header sizes through EXIF orientation.
        for path, shape in ((pair.sharp, sharp.shape[:2]), (pair.mask, None if mask is None else mask.shape)):
            if shape is not None and shape != blurred.shape[:2]:
                raise UserError(
                    f"{path}: size {shape[1]}x{shape[0]} differs from {pair.blurred} "
                    f"({blurred.shape[1]}x{blurred.shape[0]}) after EXIF orientation"
                )
        return {
            "blurred": torch.from_numpy(np.ascontiguousarray(blurred.transpose(2, 0, 1))),
            "sharp": torch.from_numpy(np.ascontiguousarray(sharp.transpose(2, 0, 1))),
            "mask": None if mask is None else torch.from_numpy(mask[None].astype(np.float32)),
            "name": pair.name,
        }


def detect_layout(root: Path, files: list[Path]) -> str:
    """``"paired"`` or ``"reloblur"`` for a folder whose image files are ``files``."""
    has_dirs = (root / "blur").is_dir() and (root / "sharp").is_dir()
    if has_dirs:
        blur_stems = {p.stem for p in list_images(root / "blur")}
        if blur_stems & {p.stem for p in list_images(root / "sharp")}:
            return PAIRED
    if any(_is_blur(p) for p in files):
        return RELOBLUR
    if has_dirs:
        return PAIRED
    if (root / "blur").is_dir():
        raise UserError(f"{root / 'sharp'}: no such folder (the paired layout needs blur/ and sharp/)")
    raise UserError(
        f"{root}: matches neither layout: expected *_blur/*_sharp images (ReLoBlur) "
        "or blur/ and sharp/ folders with the same file names"
    )


def open_pairs(path: str | os.PathLike) -> PairedFolder:
    """Open a folder of blurred/sharp pairs, detecting its layout and validating it."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root}: no such folder")
    if not root.is_dir():
        raise UserError(f"{root}: is a file, expected a folder of blurred/sharp pairs")
    files = list_images(root, recursive=True)
    if not files:
        raise UserError(f"{root}: no image files in this folder")
    layout = detect_layout(root, files)
    pairs = _scan_paired(root) if layout == PAIRED else _scan_reloblur(root, files)
    if not pairs:
        raise UserError(f"{root}: no blurred/sharp pairs found ({layout} layout)")
    _check(pairs, root)
    return PairedFolder(root, layout, pairs)
