"""Properties of the numpy reference of MaskedGather / MaskedScatter (the op definition).

Expected values come from explicit element-by-element loops written here from the
DESIGN.md section 3 formulas, not from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from m2ae.trt_plugins import reference


def loop_gather(dense: np.ndarray, tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
    n, c, h, w = dense.shape
    t, k = table.shape
    out = np.full((t * c, k), np.nan, dtype=np.float64)
    for ti in range(t):
        for ki in range(k):
            v = int(table[ti, ki])
            for ci in range(c):
                if v >= 0:
                    value = tokens[ci, v]
                elif v == -1:
                    value = 0.0
                else:
                    p = -2 - v
                    value = dense[p // (h * w), ci, (p % (h * w)) // w, p % w]
                out[ti * c + ci, ki] = value
    return out


def loop_scatter(base: np.ndarray, values: np.ndarray, index: np.ndarray, accumulate: int) -> np.ndarray:
    n, c, h, w = base.shape
    out = base.copy()
    for ki, p in enumerate(index.tolist()):
        ni, hi, wi = p // (h * w), (p % (h * w)) // w, p % w
        for ci in range(c):
            if accumulate:
                out[ni, ci, hi, wi] = out[ni, ci, hi, wi] + values[ci, ki]
            else:
                out[ni, ci, hi, wi] = values[ci, ki]
    return out


def random_table(rng: np.random.Generator, t: int, k: int, kt: int, num_pixels: int) -> np.ndarray:
    return rng.integers(-1 - num_pixels, kt, size=(t, k)).astype(np.int32)


def test_gather_hand_example() -> None:
    # dense [1, 2, 2, 2]: channel c at pixel p holds 10*c + p; tokens hold 100 + ...
    dense = np.array([[[[0, 1], [2, 3]], [[10, 11], [12, 13]]]], dtype=np.float32)
    tokens = np.array([[100, 101, 102], [200, 201, 202]], dtype=np.float32)
    table = np.array([[2, -1, -2, -5], [0, -3, 1, -1]], dtype=np.int32)
    expected = np.array(
        [
            [102, 0, 0, 3],  # t=0, c=0
            [202, 0, 10, 13],  # t=0, c=1
            [100, 1, 101, 0],  # t=1, c=0
            [200, 11, 201, 0],  # t=1, c=1
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(reference.masked_gather(dense, tokens, table), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(
    "shape",
    [(1, 3, 4, 5, 6, 9, 7), (2, 2, 3, 3, 0, 9, 5), (1, 4, 2, 3, 5, 1, 4), (2, 1, 1, 1, 3, 3, 6), (1, 2, 3, 3, 4, 9, 0)],
)
def test_gather_matches_loops(rng: np.random.Generator, dtype: type, shape: tuple[int, ...]) -> None:
    n, c, h, w, kt, t, k = shape
    dense = rng.standard_normal((n, c, h, w)).astype(dtype)
    tokens = rng.standard_normal((c, kt)).astype(dtype)
    table = random_table(rng, t, k, kt, n * h * w)
    got = reference.masked_gather(dense, tokens, table)
    assert got.dtype == dtype and got.shape == (t * c, k)
    np.testing.assert_array_equal(got, loop_gather(dense, tokens, table).astype(dtype))


def test_gather_borders_and_extremes(rng: np.random.Generator) -> None:
    n, c, h, w, kt = 2, 3, 4, 5, 4
    dense = rng.standard_normal((n, c, h, w)).astype(np.float32)
    tokens = rng.standard_normal((c, kt)).astype(np.float32)
    last_pixel = n * h * w - 1
    table = np.array([[-2, -2 - last_pixel, kt - 1, 0, -1, -2 - (h * w - 1), -2 - h * w]], dtype=np.int32)
    got = reference.masked_gather(dense, tokens, table)
    np.testing.assert_array_equal(got, loop_gather(dense, tokens, table).astype(np.float32))
    np.testing.assert_array_equal(got[:, 0], dense[0, :, 0, 0])
    np.testing.assert_array_equal(got[:, 1], dense[1, :, h - 1, w - 1])
    np.testing.assert_array_equal(got[:, 6], dense[1, :, 0, 0])


def test_gather_all_minus_one_is_zero(rng: np.random.Generator) -> None:
    dense = rng.standard_normal((1, 2, 3, 3)).astype(np.float16)
    tokens = np.zeros((2, 0), dtype=np.float16)
    got = reference.masked_gather(dense, tokens, np.full((9, 4), -1, dtype=np.int32))
    assert got.shape == (18, 4) and not got.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("accumulate", [0, 1])
@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (2, 2, 3, 3), (1, 1, 1, 1), (2, 4, 1, 7)])
def test_scatter_matches_loops(rng: np.random.Generator, dtype: type, accumulate: int, shape: tuple[int, ...]) -> None:
    n, c, h, w = shape
    base = rng.standard_normal(shape).astype(dtype)
    for k in (0, 1, n * h * w // 2, n * h * w):
        index = rng.permutation(n * h * w)[:k].astype(np.int32)
        values = rng.standard_normal((c, k)).astype(dtype)
        got = reference.masked_scatter(base, values, index, accumulate)
        assert got.dtype == dtype and got.shape == shape and got.flags.c_contiguous
        np.testing.assert_array_equal(got, loop_scatter(base, values, index, accumulate))


def test_scatter_empty_is_copy_of_base(rng: np.random.Generator) -> None:
    base = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    out = reference.masked_scatter(base, np.zeros((2, 0), np.float32), np.zeros(0, np.int32), 1)
    np.testing.assert_array_equal(out, base)
    out[0, 0, 0, 0] += 1
    assert out[0, 0, 0, 0] != base[0, 0, 0, 0]


def test_scatter_does_not_modify_base(rng: np.random.Generator) -> None:
    base = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    before = base.copy()
    reference.masked_scatter(base, np.ones((2, 2), np.float32), np.array([0, 8], np.int32), 1)
    np.testing.assert_array_equal(base, before)


def test_scatter_accumulate_adds(rng: np.random.Generator) -> None:
    base = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    values = np.array([[10.0], [20.0]], dtype=np.float32)
    index = np.array([3], dtype=np.int32)
    replaced = reference.masked_scatter(base, values, index, 0)
    added = reference.masked_scatter(base, values, index, 1)
    assert replaced[0, :, 1, 1].tolist() == [10.0, 20.0]
    assert added[0, :, 1, 1].tolist() == [13.0, 27.0]


GATHER_ERRORS = [
    (lambda d, t, tb: (d.astype(np.float64), t, tb), "dense must be float32 or float16"),
    (lambda d, t, tb: (d, t, tb.astype(np.int64)), "table must be int32"),
    (lambda d, t, tb: (d[0], t, tb), r"dense must be \[N,C,H,W\]"),
    (lambda d, t, tb: (d, t[0], tb), r"tokens must be \[C,Kt\] and table \[T,K\]"),
    (lambda d, t, tb: (d, t, tb[0]), r"tokens must be \[C,Kt\] and table \[T,K\]"),
    (lambda d, t, tb: (d, t.astype(np.float16), tb), "tokens dtype float16 differs from dense dtype float32"),
    (lambda d, t, tb: (d, t[:1], tb), "tokens have 1 channels, dense has 2"),
    (lambda d, t, tb: (d, t, np.array([[3]], np.int32)), "table value 3 out of range"),
    (lambda d, t, tb: (d, t, np.array([[-1 - 18 - 1]], np.int32)), "table value -20 out of range"),
]


@pytest.mark.parametrize(("mutate", "message"), GATHER_ERRORS)
def test_gather_errors(rng: np.random.Generator, mutate, message: str) -> None:  # noqa: ANN001
    dense = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    tokens = rng.standard_normal((2, 3)).astype(np.float32)
    table = np.array([[0, -1, -2]], dtype=np.int32)
    with pytest.raises(ValueError, match=message):
        reference.masked_gather(*mutate(dense, tokens, table))


def test_gather_accepts_range_limits(rng: np.random.Generator) -> None:
    dense = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    tokens = rng.standard_normal((2, 3)).astype(np.float32)
    table = np.array([[2, -1 - 18]], dtype=np.int32)
    got = reference.masked_gather(dense, tokens, table)
    np.testing.assert_array_equal(got[:, 0], tokens[:, 2])
    np.testing.assert_array_equal(got[:, 1], dense[1, :, 2, 2])


SCATTER_ERRORS = [
    (lambda b, v, i, a: (b.astype(np.float64), v, i, a), "base must be float32 or float16"),
    (lambda b, v, i, a: (b, v, i.astype(np.int64), a), "index must be int32"),
    (lambda b, v, i, a: (b[0], v, i, a), r"base must be \[N,C,H,W\]"),
    (lambda b, v, i, a: (b, v[0], i, a), r"values must be \[C,K\] and index \[K\]"),
    (lambda b, v, i, a: (b, v.astype(np.float16), i, a), "values dtype float16 differs from base dtype float32"),
    (lambda b, v, i, a: (b, v[:, :1], i, a), r"values must be \[2, 2\] to match base and index"),
    (lambda b, v, i, a: (b, v, i, 2), "accumulate must be 0 or 1, got 2"),
    (lambda b, v, i, a: (b, v, np.array([0, 18], np.int32), a), r"index values must lie in \[0, 18\)"),
    (lambda b, v, i, a: (b, v, np.array([-1, 3], np.int32), a), r"index values must lie in \[0, 18\)"),
    (lambda b, v, i, a: (b, v, np.array([4, 4], np.int32), a), "index values must be unique"),
]


@pytest.mark.parametrize(("mutate", "message"), SCATTER_ERRORS)
def test_scatter_errors(rng: np.random.Generator, mutate, message: str) -> None:  # noqa: ANN001
    base = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    values = rng.standard_normal((2, 2)).astype(np.float32)
    index = np.array([0, 17], dtype=np.int32)
    with pytest.raises(ValueError, match=message):
        reference.masked_scatter(*mutate(base, values, index, 0))
