"""Numpy reference of MaskedGather and MaskedScatter: the definition of both ops.

Both work on square tiles of a dense NCHW map. The map is cut into a grid of
``tile x tile`` cells, ``ceil(H / tile)`` rows by ``ceil(W / tile)`` columns per image;
tile id ``v = n * rows * cols + ty * cols + tx`` names cell (ty, tx) of image n.

MaskedGather(dense [N,C,H,W], tiles [B] int32; tile, halo) -> out [B, C, S, S], S = tile + 2*halo:
    out[b, c, i, j] = dense[n, c, ty*tile - halo + i, tx*tile - halo + j]
    where (n, ty, tx) is tile tiles[b], and 0 where that pixel lies outside the image.

MaskedScatter(base [N,C,H,W], values [B, C, tile, tile], tiles [B] int32) -> out [N,C,H,W]:
    out = base, except out[n, c, ty*tile + i, tx*tile + j] = values[b, c, i, j] for every
    such pixel inside the image. Tile ids are unique; the tile size is values' last dim.

Host-side implementations validate shapes and ids and raise ValueError with a message
that says what is wrong.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float16)


def _check_float(name: str, array: np.ndarray) -> None:
    if array.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float16, got {array.dtype}")


def grid_shape(height: int, width: int, tile: int) -> tuple[int, int]:
    """(rows, cols) of the tile grid over an H x W map; partial tiles at the far edges count."""
    return -(-height // tile), -(-width // tile)


def _check_tiles(tiles: np.ndarray, num_tiles: int) -> None:
    if tiles.dtype != np.int32:
        raise ValueError(f"tiles must be int32, got {tiles.dtype}")
    if tiles.ndim != 1:
        raise ValueError(f"tiles must be [B], got shape {tiles.shape}")
    if tiles.size and (tiles.min() < 0 or tiles.max() >= num_tiles):
        raise ValueError(f"tile ids must lie in [0, {num_tiles}), got [{tiles.min()}, {tiles.max()}]")


def tile_origins(tiles: np.ndarray, height: int, width: int, tile: int) -> np.ndarray:
    """[B, 3] (n, y0, x0): image and top-left pixel of each tile's centre."""
    rows, cols = grid_shape(height, width, tile)
    ids = tiles.astype(np.int64)
    n, cell = np.divmod(ids, rows * cols)
    ty, tx = np.divmod(cell, cols)
    return np.stack([n, ty * tile, tx * tile], axis=1)


def masked_gather(dense: np.ndarray, tiles: np.ndarray, tile: int, halo: int) -> np.ndarray:
    """Tiles with a halo, cut out of ``dense``; pixels outside the image read 0."""
    _check_float("dense", dense)
    if dense.ndim != 4:
        raise ValueError(f"dense must be [N,C,H,W], got shape {dense.shape}")
    if tile < 1 or halo < 0:
        raise ValueError(f"tile must be >= 1 and halo >= 0, got tile={tile}, halo={halo}")
    n, c, h, w = dense.shape
    rows, cols = grid_shape(h, w, tile)
    _check_tiles(tiles, n * rows * cols)
    size = tile + 2 * halo
    # Pad so that every window, partial edge tiles included, lies inside the array.
    padded = np.zeros((n, c, rows * tile + 2 * halo, cols * tile + 2 * halo), dtype=dense.dtype)
    padded[:, :, halo : halo + h, halo : halo + w] = dense
    out = np.empty((tiles.size, c, size, size), dtype=dense.dtype)
    for b, (image, y0, x0) in enumerate(tile_origins(tiles, h, w, tile)):
        out[b] = padded[image, :, y0 : y0 + size, x0 : x0 + size]
    return out


def masked_scatter(base: np.ndarray, values: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """A copy of ``base`` with each tile's in-image pixels replaced by ``values``."""
    _check_float("base", base)
    if base.ndim != 4:
        raise ValueError(f"base must be [N,C,H,W], got shape {base.shape}")
    if values.ndim != 4 or values.shape[2] != values.shape[3]:
        raise ValueError(f"values must be [B,C,tile,tile], got shape {values.shape}")
    if values.dtype != base.dtype:
        raise ValueError(f"values dtype {values.dtype} differs from base dtype {base.dtype}")
    n, c, h, w = base.shape
    tile = values.shape[3]
    if tile < 1:
        raise ValueError("values must hold tiles of at least 1x1 pixel")
    if tiles.ndim != 1 or values.shape[:2] != (tiles.shape[0], c):
        raise ValueError(f"values must be [B, {c}, tile, tile] and tiles [B], got {values.shape} and {tiles.shape}")
    rows, cols = grid_shape(h, w, tile)
    _check_tiles(tiles, n * rows * cols)
    if np.unique(tiles).size != tiles.size:
        raise ValueError("tile ids must be unique")
    out = base.copy()
    for b, (image, y0, x0) in enumerate(tile_origins(tiles, h, w, tile)):
        tile_h, tile_w = min(tile, h - y0), min(tile, w - x0)
        out[image, :, y0 : y0 + tile_h, x0 : x0 + tile_w] = values[b, :, :tile_h, :tile_w]
    return out
