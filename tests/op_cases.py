"""Inputs shared by every test of the MaskedGather / MaskedScatter fast paths.

Tile ids that reach every image corner and border first, the shape cases (partial
edge tiles, halo wider than the tile, tile 1, B = 0, batch > 1, channel counts past one
block's chunk, windows larger than one block's threads) and a bitwise comparison, so
the GPU kernels and their CPU emulation are held to the same cases against
trt_plugins/reference.py.
"""

from __future__ import annotations

import numpy as np

from m2ae.trt_plugins.contract import grid_shape

DTYPES = (np.float32, np.float16)


def _bits(array: np.ndarray) -> np.ndarray:
    return array.view(np.uint32 if array.dtype == np.float32 else np.uint16)


def assert_bit_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    mismatches = np.flatnonzero(_bits(actual).ravel() != _bits(expected).ravel())
    assert mismatches.size == 0, f"{mismatches.size} elements differ, first at flat index {mismatches[:5]}"


def random_tiles(rng: np.random.Generator, b: int, n: int, h: int, w: int, tile: int) -> np.ndarray:
    """``b`` tile ids in random order: every image's corner cells first, then its other
    border cells, then interior ones, so a large enough B covers every border and corner.

    Unique while ``b`` does not exceed the number of cells; past that (gather only) the
    rest repeats cells already drawn.
    """
    rows, cols = grid_shape(h, w, tile)
    ty, tx = np.divmod(np.arange(rows * cols), cols)
    corner = np.isin(ty, (0, rows - 1)) & np.isin(tx, (0, cols - 1))
    border = np.isin(ty, (0, rows - 1)) | np.isin(tx, (0, cols - 1))
    groups = [corner, border & ~corner, ~border]
    cells = np.arange(rows * cols)
    images = np.arange(n)[:, None] * rows * cols
    order = np.concatenate([rng.permutation((images + cells[group]).ravel()) for group in groups])
    if b > order.size:
        order = np.concatenate([order, rng.choice(order, b - order.size)])
    return rng.permutation(order[:b]).astype(np.int32)


def gather_inputs(rng: np.random.Generator, n: int, c: int, h: int, w: int, tile: int, b: int,
                  dtype: type) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((n, c, h, w)).astype(dtype), random_tiles(rng, b, n, h, w, tile)


def scatter_inputs(rng: np.random.Generator, n: int, c: int, h: int, w: int, tile: int, b: int,
                   dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base = rng.standard_normal((n, c, h, w)).astype(dtype)
    values = rng.standard_normal((b, c, tile, tile)).astype(dtype)
    return base, values, random_tiles(rng, b, n, h, w, tile)


GATHER_CASES = [
    # n, c, h, w, tile, halo, b
    (1, 3, 17, 13, 4, 1, 20),  # odd H and W: partial tiles at the right and bottom; every cell
    (2, 17, 16, 16, 8, 2, 8),  # batch 2, channels past one block's chunk; every cell
    (1, 1, 7, 9, 2, 5, 20),  # halo wider than the tile; every cell
    (2, 33, 5, 6, 1, 0, 45),  # tile 1, no halo: one-pixel windows
    (1, 4, 9, 9, 3, 0, 0),  # B = 0
    (1, 16, 40, 36, 16, 2, 9),  # 20x20 windows: more pixels than one block's threads
    (2, 3, 11, 11, 16, 2, 5),  # tile larger than the image; ids repeat
]


SCATTER_CASES = [
    # n, c, h, w, tile, b
    (1, 3, 17, 13, 4, 20),  # odd H and W: partial tiles at the right and bottom; every cell
    (2, 17, 16, 16, 8, 5),  # batch 2, channels past one block's chunk
    (2, 33, 5, 6, 1, 31),  # tile 1
    (1, 4, 9, 9, 3, 0),  # B = 0: out == base
    (1, 16, 40, 36, 16, 9),  # 256-pixel tiles, every cell
    (2, 3, 11, 11, 16, 2),  # tile larger than the image
    (1, 1, 35, 37, 17, 6),  # 289-pixel tiles: more than one block's threads; partial edges
]
