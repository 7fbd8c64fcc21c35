"""Inputs shared by every test of the MaskedGather / MaskedScatter fast paths.

Random tables and indices that always reach the image borders, the shape cases
(odd sizes, K = 0, Kt = 0, batch > 1, channel counts past one block's chunk) and a
bitwise comparison, so the GPU kernels and their CPU emulation are held to the same
cases against trt_plugins/reference.py.
"""

from __future__ import annotations

import numpy as np

DTYPES = (np.float32, np.float16)


def _bits(array: np.ndarray) -> np.ndarray:
    return array.view(np.uint32 if array.dtype == np.float32 else np.uint16)


def assert_bit_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    mismatches = np.flatnonzero(_bits(actual).ravel() != _bits(expected).ravel())
    assert mismatches.size == 0, f"{mismatches.size} elements differ, first at flat index {mismatches[:5]}"


def random_table(rng: np.random.Generator, t: int, k: int, kt: int, num_pixels: int) -> np.ndarray:
    """Tokens, dense pixels and zeros mixed; first/last pixel and token at fixed spots."""
    kind = rng.integers(0, 3 if kt else 2, size=(t, k))  # 0 dense, 1 zero, 2 token
    dense = -2 - rng.integers(0, num_pixels, size=(t, k))
    token = rng.integers(0, max(kt, 1), size=(t, k))
    table = np.where(kind == 0, dense, np.where(kind == 1, -1, token)).astype(np.int32)
    if k >= 4:
        table[0, 0] = -2  # pixel 0
        table[0, 1] = -2 - (num_pixels - 1)  # last pixel of the last image
        table[-1, -1] = kt - 1 if kt else -1
        table[-1, -2] = 0 if kt else -1
    return table


def random_index(rng: np.random.Generator, k: int, num_pixels: int, sort: bool) -> np.ndarray:
    index = rng.permutation(num_pixels)[:k]
    if k >= 2:  # both borders, kept unique
        rest = [p for p in index if p not in (0, num_pixels - 1)][: k - 2]
        index = np.array([0, num_pixels - 1, *rest])
        rng.shuffle(index)
    return (np.sort(index) if sort else index).astype(np.int32)


GATHER_CASES = [
    # n, c, h, w, kt, t, k
    (1, 3, 5, 7, 11, 9, 13),  # odd sizes, scalar path
    (2, 16, 8, 8, 40, 9, 64),  # batch 2, 4-wide along k
    (2, 17, 9, 5, 6, 1, 30),  # 2-wide, channel count past one block's chunk
    (1, 4, 6, 6, 0, 9, 20),  # Kt = 0: only dense pixels and zeros
    (1, 8, 4, 4, 5, 9, 0),  # K = 0
    (2, 33, 3, 3, 10, 2, 1),  # one column
    (1, 32, 48, 40, 3000, 9, 3001),  # many blocks
]


SCATTER_CASES = [
    # n, c, h, w, k
    (1, 3, 5, 7, 10),
    (2, 16, 8, 8, 64),
    (2, 17, 9, 5, 31),
    (1, 4, 6, 6, 0),  # K = 0: out == base
    (2, 33, 3, 3, 18),  # every pixel
    (1, 32, 40, 48, 1500),
]
