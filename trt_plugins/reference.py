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

Host-side implementations check their arguments against ``contract`` and raise
ValueError with a message that says what is wrong.
"""

from __future__ import annotations

import numpy as np

from m2ae.trt_plugins.contract import (
    Dtypes,
    Operand,
    check_gather,
    check_id_range,
    check_scatter,
    check_unique,
    grid_shape,
)

NUMPY_DTYPES = Dtypes(floats=(np.float32, np.float16), index=np.int32)


def check_gather_args(dense: np.ndarray, tiles: np.ndarray, tile: int, halo: int) -> None:
    """Raise ``ValueError`` where numpy arguments break MaskedGather's contract, ids' range included."""
    check_id_range(tiles, check_gather(Operand.of(dense), Operand.of(tiles), tile, halo, NUMPY_DTYPES))


def check_scatter_args(base: np.ndarray, values: np.ndarray, tiles: np.ndarray, unique: bool = True) -> None:
    """Raise ``ValueError`` where numpy arguments break MaskedScatter's contract, ids' range included.

    ``unique=False`` leaves out the uniqueness check (a sort of the ids).
    """
    check_id_range(tiles, check_scatter(Operand.of(base), Operand.of(values), Operand.of(tiles), NUMPY_DTYPES))
    if unique:
        check_unique(np.unique(tiles).size, tiles.size)


def tile_origins(tiles: np.ndarray, height: int, width: int, tile: int) -> np.ndarray:
    """[B, 3] (n, y0, x0): image and top-left pixel of each tile's centre."""
    rows, cols = grid_shape(height, width, tile)
    ids = tiles.astype(np.int64)
    n, cell = np.divmod(ids, rows * cols)
    ty, tx = np.divmod(cell, cols)
    return np.stack([n, ty * tile, tx * tile], axis=1)


def masked_gather(dense: np.ndarray, tiles: np.ndarray, tile: int, halo: int) -> np.ndarray:
    """Tiles with a halo, cut out of ``dense``; pixels outside the image read 0."""
    check_gather_args(dense, tiles, tile, halo)
    n, c, h, w = dense.shape
    rows, cols = grid_shape(h, w, tile)
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
    check_scatter_args(base, values, tiles)
    _, _, h, w = base.shape
    tile = values.shape[3]
    out = base.copy()
    for b, (image, y0, x0) in enumerate(tile_origins(tiles, h, w, tile)):
        tile_h, tile_w = min(tile, h - y0), min(tile, w - x0)
        out[image, :, y0 : y0 + tile_h, x0 : x0 + tile_w] = values[b, :, :tile_h, :tile_w]
    return out
