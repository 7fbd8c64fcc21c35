"""Properties of the numpy reference of MaskedGather / MaskedScatter (the op definition).

Expected values come from element-by-element loops written here from the formulas in
reference.py's docstring (the tile grid is enumerated cell by cell, every output element
is computed on its own), not from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import DTYPES, GATHER_CASES, SCATTER_CASES, assert_bit_equal, gather_inputs, random_tiles, scatter_inputs

from m2ae.trt_plugins import reference

# ---------------------------------------------------------------- independent loop definitions


def grid_cells(n: int, h: int, w: int, tile: int) -> list[tuple[int, int, int]]:
    """(image, top row, left column) of every cell, listed in tile-id order."""
    return [(image, y0, x0) for image in range(n) for y0 in range(0, h, tile) for x0 in range(0, w, tile)]


def loop_gather(dense: np.ndarray, tiles: np.ndarray, tile: int, halo: int) -> np.ndarray:
    n, c, h, w = dense.shape
    cells = grid_cells(n, h, w, tile)
    size = tile + 2 * halo
    out = np.full((len(tiles), c, size, size), np.nan, dtype=dense.dtype)
    for b, v in enumerate(tiles.tolist()):
        image, y0, x0 = cells[v]
        for ci in range(c):
            for i in range(size):
                for j in range(size):
                    y, x = y0 - halo + i, x0 - halo + j
                    out[b, ci, i, j] = dense[image, ci, y, x] if 0 <= y < h and 0 <= x < w else 0
    return out


def loop_scatter(base: np.ndarray, values: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    n, c, h, w = base.shape
    tile = values.shape[3]
    cells = grid_cells(n, h, w, tile)
    out = base.copy()
    for b, v in enumerate(tiles.tolist()):
        image, y0, x0 = cells[v]
        for ci in range(c):
            for i in range(tile):
                for j in range(tile):
                    if y0 + i < h and x0 + j < w:
                        out[image, ci, y0 + i, x0 + j] = values[b, ci, i, j]
    return out


def written_mask(shape: tuple[int, ...], tiles: np.ndarray, tile: int) -> np.ndarray:
    """[N, H, W] bool: pixels that some tile of ``tiles`` covers."""
    n, _, h, w = shape
    cells = grid_cells(n, h, w, tile)
    mask = np.zeros((n, h, w), dtype=bool)
    for v in tiles.tolist():
        image, y0, x0 = cells[v]
        mask[image, y0 : y0 + tile, x0 : x0 + tile] = True
    return mask


def random_bits(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Arbitrary bit patterns, NaN payloads, infinities and negative zeros included."""
    uint = np.uint32 if dtype == np.float32 else np.uint16
    return rng.integers(0, np.iinfo(uint).max, size=shape, dtype=uint, endpoint=True).view(dtype)


def test_loop_definitions_hand_example() -> None:
    # The loops themselves, on a 1x1x3x3 map cut into 2x2 tiles (a 2x2 grid, partial edges).
    dense = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    got = loop_gather(dense, np.array([3, 0], np.int32), 2, 1)
    assert got[0, 0].tolist() == [[5, 6, 0, 0], [8, 9, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert got[1, 0].tolist() == [[0, 0, 0, 0], [0, 1, 2, 3], [0, 4, 5, 6], [0, 7, 8, 9]]
    scattered = loop_scatter(dense, np.full((1, 1, 2, 2), -1, np.float32), np.array([1], np.int32))
    assert scattered[0, 0].tolist() == [[1, 2, -1], [4, 5, -1], [7, 8, 9]]


# ---------------------------------------------------------------- gather


def test_gather_hand_example() -> None:
    # 1 image, 2 channels, 3x5, tile 2 -> grid 2 rows x 3 cols; channel c holds 100*c + 10*y + x.
    y, x = np.mgrid[0:3, 0:5]
    dense = np.stack([10 * y + x, 100 + 10 * y + x]).astype(np.float32)[None]
    out = reference.masked_gather(dense, np.array([5, 1], np.int32), tile=2, halo=1)
    assert out.shape == (2, 2, 4, 4) and out.dtype == np.float32
    # tile 5 = cell (1, 2): rows 1..4, cols 3..6 of the image, only rows 1-2, cols 3-4 inside.
    assert out[0, 0].tolist() == [[13, 14, 0, 0], [23, 24, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # tile 1 = cell (0, 1): rows -1..2, cols 1..4.
    assert out[1, 1].tolist() == [[0, 0, 0, 0], [101, 102, 103, 104], [111, 112, 113, 114], [121, 122, 123, 124]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GATHER_CASES)
def test_gather_matches_loops(rng: np.random.Generator, dtype: type, case: tuple[int, ...]) -> None:
    n, c, h, w, tile, halo, b = case
    dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, dtype)
    before = dense.copy()
    got = reference.masked_gather(dense, tiles, tile, halo)
    assert got.shape == (b, c, tile + 2 * halo, tile + 2 * halo) and got.flags.c_contiguous
    assert_bit_equal(got, loop_gather(dense, tiles, tile, halo))
    assert_bit_equal(dense, before)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 11), w=st.integers(1, 11),
    tile=st.integers(1, 6), halo=st.integers(0, 7), extra=st.integers(0, 3), seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(DTYPES),
)
def test_gather_random_shapes(n: int, c: int, h: int, w: int, tile: int, halo: int, extra: int, seed: int,
                              dtype: type) -> None:
    rng = np.random.default_rng(seed)
    num = len(grid_cells(n, h, w, tile))
    b = int(rng.integers(0, num + extra + 1))  # past the cell count ids repeat
    dense = random_bits(rng, (n, c, h, w), dtype)  # copies must keep every bit pattern
    tiles = random_tiles(rng, b, n, h, w, tile)
    assert_bit_equal(reference.masked_gather(dense, tiles, tile, halo), loop_gather(dense, tiles, tile, halo))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_every_cell_border_and_corner(rng: np.random.Generator, dtype: type) -> None:
    # Odd sizes, partial last row and column, halo > tile: every cell in id order.
    n, c, h, w, tile, halo = 2, 2, 7, 10, 3, 4
    dense = rng.standard_normal((n, c, h, w)).astype(dtype)
    tiles = np.arange(len(grid_cells(n, h, w, tile)), dtype=np.int32)
    got = reference.masked_gather(dense, tiles, tile, halo)
    assert_bit_equal(got, loop_gather(dense, tiles, tile, halo))
    # Corners of image 1: the first window's top-left halo is zero, its centre the map's corner.
    first, last = 3 * 4, 2 * 3 * 4 - 1
    assert not got[first, :, :halo].any() and not got[first, :, :, :halo].any()
    assert_bit_equal(got[first, :, halo : halo + tile, halo : halo + tile], dense[1, :, :3, :3])
    # Last cell (2, 3) of image 1 covers rows 6.., cols 9..: one pixel in the image.
    assert_bit_equal(got[last, :, halo, halo], dense[1, :, 6, 9])
    assert not got[last, :, halo + 1 :].any() and not got[last, :, :, halo + 1 :].any()


def test_gather_halo_zero_tile_one_is_a_pixel_pick(rng: np.random.Generator) -> None:
    dense = rng.standard_normal((2, 3, 4, 5)).astype(np.float16)
    tiles = np.array([0, 39, 7, 7, 20], np.int32)
    got = reference.masked_gather(dense, tiles, 1, 0)
    assert got.shape == (5, 3, 1, 1)
    pixels = dense.transpose(0, 2, 3, 1).reshape(-1, 3)  # pixel id n*H*W + y*W + x
    assert_bit_equal(got[:, :, 0, 0], pixels[tiles])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_empty(rng: np.random.Generator, dtype: type) -> None:
    dense = rng.standard_normal((1, 4, 9, 9)).astype(dtype)
    got = reference.masked_gather(dense, np.zeros(0, np.int32), 3, 2)
    assert got.shape == (0, 4, 7, 7) and got.dtype == dtype
    got = reference.masked_gather(np.zeros((0, 4, 9, 9), dtype), np.zeros(0, np.int32), 3, 2)  # N = 0 too
    assert got.shape == (0, 4, 7, 7)


def test_gather_accepts_range_limits(rng: np.random.Generator) -> None:
    dense = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)  # tile 2: 2x2 cells per image, 8 ids
    got = reference.masked_gather(dense, np.array([7, 0], np.int32), 2, 0)
    assert_bit_equal(got[0, :, 0, 0], dense[1, :, 2, 2])
    assert_bit_equal(got[1], dense[0, :, :2, :2])


# ---------------------------------------------------------------- scatter


def test_scatter_hand_example() -> None:
    base = np.zeros((1, 1, 3, 5), np.float32)
    values = np.arange(1, 9, dtype=np.float32).reshape(2, 1, 2, 2)
    out = reference.masked_scatter(base, values, np.array([5, 0], np.int32))
    assert out[0, 0].tolist() == [[5, 6, 0, 0, 0], [7, 8, 0, 0, 0], [0, 0, 0, 0, 1]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SCATTER_CASES)
def test_scatter_matches_loops(rng: np.random.Generator, dtype: type, case: tuple[int, ...]) -> None:
    n, c, h, w, tile, b = case
    base, values, tiles = scatter_inputs(rng, n, c, h, w, tile, b, dtype)
    before = base.copy()
    got = reference.masked_scatter(base, values, tiles)
    assert got.shape == base.shape and got.flags.c_contiguous and got is not base
    assert_bit_equal(got, loop_scatter(base, values, tiles))
    assert_bit_equal(base, before)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 11), w=st.integers(1, 11),
    tile=st.integers(1, 6), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES),
)
def test_scatter_replaces_only_tile_pixels(n: int, c: int, h: int, w: int, tile: int, seed: int,
                                           dtype: type) -> None:
    rng = np.random.default_rng(seed)
    b = int(rng.integers(0, len(grid_cells(n, h, w, tile)) + 1))
    base = random_bits(rng, (n, c, h, w), dtype)
    values = random_bits(rng, (b, c, tile, tile), dtype)
    tiles = random_tiles(rng, b, n, h, w, tile)
    got = reference.masked_scatter(base, values, tiles)
    assert_bit_equal(got, loop_scatter(base, values, tiles))
    untouched = ~written_mask(base.shape, tiles, tile)
    untouched = np.broadcast_to(untouched[:, None], base.shape)
    assert_bit_equal(got[untouched], base[untouched])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_every_cell(rng: np.random.Generator, dtype: type) -> None:
    # Every cell, partial ones included: the result is the values' tiled mosaic, cropped.
    n, c, h, w, tile = 2, 3, 7, 5, 3
    rows, cols = 3, 2
    base = rng.standard_normal((n, c, h, w)).astype(dtype)
    values = rng.standard_normal((n * rows * cols, c, tile, tile)).astype(dtype)
    tiles = rng.permutation(n * rows * cols).astype(np.int32)
    got = reference.masked_scatter(base, values[tiles], tiles)
    mosaic = values.reshape(n, rows, cols, c, tile, tile).transpose(0, 3, 1, 4, 2, 5).reshape(n, c, 9, 6)
    assert_bit_equal(got, np.ascontiguousarray(mosaic[:, :, :h, :w]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_empty_is_copy_of_base(rng: np.random.Generator, dtype: type) -> None:
    base = random_bits(rng, (1, 2, 3, 3), dtype)
    out = reference.masked_scatter(base, np.zeros((0, 2, 2, 2), dtype), np.zeros(0, np.int32))
    assert_bit_equal(out, base)
    assert not np.shares_memory(out, base)


def test_scatter_tile_larger_than_image(rng: np.random.Generator) -> None:
    base = rng.standard_normal((2, 1, 3, 2)).astype(np.float32)
    values = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    out = reference.masked_scatter(base, values, np.array([1], np.int32))  # one cell per image
    assert_bit_equal(out[0], base[0])
    assert_bit_equal(out[1, 0], values[0, 0, :3, :2])


def test_scatter_then_gather_round_trip(rng: np.random.Generator) -> None:
    base = rng.standard_normal((2, 3, 9, 7)).astype(np.float16)
    values = rng.standard_normal((5, 3, 4, 4)).astype(np.float16)
    tiles = random_tiles(rng, 5, 2, 9, 7, 4)
    out = reference.masked_scatter(base, values, tiles)
    back = reference.masked_gather(out, tiles, 4, 0)
    inside = back != 0  # windows of partial cells read 0 outside the image
    assert_bit_equal(back[inside], values[inside])


# ---------------------------------------------------------------- validation


def _gather_args() -> dict:
    # 2 images, 3x3, tile 2: 2x2 cells each, ids 0..7.
    return {"dense": np.zeros((2, 2, 3, 3), np.float32), "tiles": np.array([0, 7], np.int32), "tile": 2, "halo": 1}


GATHER_ERRORS = [
    ({"dense": np.zeros((2, 2, 3, 3), np.float64)}, "dense must be float32 or float16, got float64"),
    ({"dense": np.zeros((2, 2, 3, 3), np.int32)}, "dense must be float32 or float16, got int32"),
    ({"dense": np.zeros((2, 3, 3), np.float32)}, r"dense must be \[N,C,H,W\], got shape \(2, 3, 3\)"),
    ({"dense": np.zeros((1, 2, 2, 3, 3), np.float32)}, r"dense must be \[N,C,H,W\], got shape \(1, 2, 2, 3, 3\)"),
    ({"tile": 0}, "tile must be >= 1 and halo >= 0, got tile=0, halo=1"),
    ({"tile": -3}, "tile must be >= 1 and halo >= 0, got tile=-3, halo=1"),
    ({"halo": -1}, "tile must be >= 1 and halo >= 0, got tile=2, halo=-1"),
    ({"tiles": np.array([0, 7], np.int64)}, "tiles must be int32, got int64"),
    ({"tiles": np.array([0, 7], np.uint32)}, "tiles must be int32, got uint32"),
    ({"tiles": np.array([[0, 7]], np.int32)}, r"tiles must be \[B\], got shape \(1, 2\)"),
    ({"tiles": np.array(3, np.int32)}, r"tiles must be \[B\], got shape \(\)"),
    ({"tiles": np.array([0, 8], np.int32)}, r"tile ids must lie in \[0, 8\), got \[0, 8\]"),
    ({"tiles": np.array([-1, 3], np.int32)}, r"tile ids must lie in \[0, 8\), got \[-1, 3\]"),
    ({"tiles": np.array([2], np.int32), "tile": 3}, r"tile ids must lie in \[0, 2\), got \[2, 2\]"),
]


@pytest.mark.parametrize(("override", "message"), GATHER_ERRORS)
def test_gather_errors(override: dict, message: str) -> None:
    reference.masked_gather(**_gather_args())  # the unmodified arguments are valid
    with pytest.raises(ValueError, match=f"^{message}$"):
        reference.masked_gather(**{**_gather_args(), **override})


def test_gather_repeated_ids_are_valid(rng: np.random.Generator) -> None:
    dense = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    out = reference.masked_gather(dense, np.array([3, 3], np.int32), 2, 1)
    assert_bit_equal(out[0], out[1])


def _scatter_args() -> dict:
    # 2 images, 2 channels, 3x3, tile 2: ids 0..7.
    return {"base": np.zeros((2, 2, 3, 3), np.float32), "values": np.ones((2, 2, 2, 2), np.float32),
            "tiles": np.array([0, 7], np.int32)}


SCATTER_ERRORS = [
    ({"base": np.zeros((2, 2, 3, 3), np.float64)}, "base must be float32 or float16, got float64"),
    ({"base": np.zeros((2, 3, 3), np.float32)}, r"base must be \[N,C,H,W\], got shape \(2, 3, 3\)"),
    ({"values": np.ones((2, 2, 2), np.float32)}, r"values must be \[B,C,tile,tile\], got shape \(2, 2, 2\)"),
    ({"values": np.ones((2, 2, 2, 3), np.float32)}, r"values must be \[B,C,tile,tile\], got shape \(2, 2, 2, 3\)"),
    ({"values": np.ones((2, 2, 2, 2), np.float16)}, "values dtype float16 differs from base dtype float32"),
    ({"values": np.ones((2, 2, 2, 2), np.float64)}, "values dtype float64 differs from base dtype float32"),
    ({"values": np.ones((2, 2, 0, 0), np.float32)}, "values must hold tiles of at least 1x1 pixel"),
    ({"values": np.ones((3, 2, 2, 2), np.float32)},
     r"values must be \[B, 2, tile, tile\] and tiles \[B\], got \(3, 2, 2, 2\) and \(2,\)"),
    ({"values": np.ones((2, 1, 2, 2), np.float32)},
     r"values must be \[B, 2, tile, tile\] and tiles \[B\], got \(2, 1, 2, 2\) and \(2,\)"),
    ({"tiles": np.array([[0, 7]], np.int32)},
     r"values must be \[B, 2, tile, tile\] and tiles \[B\], got \(2, 2, 2, 2\) and \(1, 2\)"),
    ({"tiles": np.array([0, 7], np.int64)}, "tiles must be int32, got int64"),
    ({"tiles": np.array([0, 8], np.int32)}, r"tile ids must lie in \[0, 8\), got \[0, 8\]"),
    ({"tiles": np.array([-2, 1], np.int32)}, r"tile ids must lie in \[0, 8\), got \[-2, 1\]"),
    ({"values": np.ones((2, 2, 3, 3), np.float32)}, r"tile ids must lie in \[0, 2\), got \[0, 7\]"),  # tile 3
    ({"tiles": np.array([5, 5], np.int32)}, "tile ids must be unique"),
]


@pytest.mark.parametrize(("override", "message"), SCATTER_ERRORS)
def test_scatter_errors(override: dict, message: str) -> None:
    reference.masked_scatter(**_scatter_args())
    with pytest.raises(ValueError, match=f"^{message}$"):
        reference.masked_scatter(**{**_scatter_args(), **override})
