"""The argument contract of MaskedGather and MaskedScatter (docs/design.md section 3), checked in one place.

The tile grid, and the checks every host-side implementation runs before it moves
data: the numpy reference, the torch ops, the ONNX Runtime kernels, the ONNX node
builders and the ctypes wrappers of the CUDA launchers. The checks read plain shapes
and ints (``Operand``) and compare dtypes with the caller's own dtype objects
(``Dtypes``), so numpy and torch get one wording (each framework prints its own dtype
names). Each raises ``ValueError`` saying what is wrong.

The id checks (range, uniqueness) read the ids' values, which only a host path can do
cheaply, so callers run them where they can: on the device ids are trusted (they come
from NonZero over the tile map in the same graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def grid_shape(height: int, width: int, tile: int) -> tuple[int, int]:
    """(rows, cols) of the tile grid over an H x W map; partial tiles at the far edges count."""
    return -(-height // tile), -(-width // tile)


def tile_count(images: int, height: int, width: int, tile: int) -> int:
    """How many tile ids the grid of ``images`` H x W maps has: the ids are ``0 .. count - 1``."""
    rows, cols = grid_shape(height, width, tile)
    return images * rows * cols


@dataclass(frozen=True)
class Dtypes:
    """One framework's dtype objects: those data may have (float32, float16) and the ids' (int32)."""

    floats: tuple[Any, ...]
    index: Any


@dataclass(frozen=True)
class Operand:
    """What the checks read of an array or tensor: its shape, and its dtype as its framework names it."""

    shape: tuple[int, ...]
    dtype: Any

    @classmethod
    def of(cls, array: Any) -> Operand:
        """Anything with ``shape`` and ``dtype``: numpy arrays, torch tensors."""
        return cls(tuple(int(size) for size in array.shape), array.dtype)


def check_tile_halo(tile: int, halo: int) -> None:
    """MaskedGather's attributes: ``tile >= 1``, ``halo >= 0``."""
    if tile < 1 or halo < 0:
        raise ValueError(f"tile must be >= 1 and halo >= 0, got tile={tile}, halo={halo}")


def _check_float(name: str, operand: Operand, dtypes: Dtypes) -> None:
    if operand.dtype not in dtypes.floats:
        raise ValueError(f"{name} must be float32 or float16, got {operand.dtype}")


def _check_map(name: str, operand: Operand) -> None:
    if len(operand.shape) != 4:
        raise ValueError(f"{name} must be [N,C,H,W], got shape {operand.shape}")


def _check_tiles(tiles: Operand, dtypes: Dtypes) -> None:
    if tiles.dtype != dtypes.index:
        raise ValueError(f"tiles must be int32, got {tiles.dtype}")
    if len(tiles.shape) != 1:
        raise ValueError(f"tiles must be [B], got shape {tiles.shape}")


def check_gather(dense: Operand, tiles: Operand, tile: int, halo: int, dtypes: Dtypes) -> int:
    """Raise ``ValueError`` where MaskedGather's arguments break the contract, ids' values aside.

    Returns the number of tile ids the grid has, the bound ``check_id_range`` needs.
    """
    _check_float("dense", dense, dtypes)
    _check_map("dense", dense)
    check_tile_halo(tile, halo)
    _check_tiles(tiles, dtypes)
    n, _, h, w = dense.shape
    return tile_count(n, h, w, tile)


def check_scatter(base: Operand, values: Operand, tiles: Operand, dtypes: Dtypes) -> int:
    """Raise ``ValueError`` where MaskedScatter's arguments break the contract, ids' values aside.

    Returns the number of tile ids the grid has, the bound ``check_id_range`` needs.
    """
    _check_float("base", base, dtypes)
    _check_map("base", base)
    if len(values.shape) != 4 or values.shape[2] != values.shape[3]:
        raise ValueError(f"values must be [B,C,tile,tile], got shape {values.shape}")
    if values.dtype != base.dtype:
        raise ValueError(f"values dtype {values.dtype} differs from base dtype {base.dtype}")
    tile = values.shape[3]
    if tile < 1:
        raise ValueError("values must hold tiles of at least 1x1 pixel")
    n, c, h, w = base.shape
    if len(tiles.shape) != 1 or values.shape[:2] != (tiles.shape[0], c):
        raise ValueError(f"values must be [B, {c}, tile, tile] and tiles [B], got {values.shape} and {tiles.shape}")
    _check_tiles(tiles, dtypes)
    return tile_count(n, h, w, tile)


def check_id_range(ids: Any, count: int) -> None:
    """Ids ``[B]`` on the host (a numpy array or a CPU tensor) must lie in ``[0, count)``."""
    if len(ids):
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= count:
            raise ValueError(f"tile ids must lie in [0, {count}), got [{low}, {high}]")


def check_unique(distinct: int, total: int) -> None:
    """MaskedScatter's ids must be unique: ``distinct`` of them among ``total``."""
    if distinct != total:
        raise ValueError("tile ids must be unique")
