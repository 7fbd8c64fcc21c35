"""Numpy reference of MaskedGather and MaskedScatter: the definition of both ops.

MaskedGather(dense [N,C,H,W], tokens [C,Kt], table [T,K] int32) -> out [T*C, K]:
    v = table[t, k]
    out[t*C + c, k] = tokens[c, v]              if v >= 0
                    = dense.flat_pixel(-2 - v)[c] if v <= -2   (p = n*H*W + h*W + w)
                    = 0                          if v == -1

MaskedScatter(base [N,C,H,W], values [C,K], index [K] int32, accumulate) -> out:
    out = base, then out at linear pixel index[k] = values[:, k] (accumulate=0)
    or += values[:, k] (accumulate=1). Indices are unique.

Host-side implementations validate shapes and index ranges and raise ValueError
with a message that says what is wrong.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float16)


def _check_float(name: str, array: np.ndarray) -> None:
    if array.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float16, got {array.dtype}")


def _check_index(name: str, array: np.ndarray) -> None:
    if array.dtype != np.int32:
        raise ValueError(f"{name} must be int32, got {array.dtype}")


def masked_gather(dense: np.ndarray, tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Two-source gather: tokens for ``v >= 0``, dense pixels for ``v <= -2``, 0 for -1."""
    _check_float("dense", dense)
    _check_index("table", table)
    if dense.ndim != 4:
        raise ValueError(f"dense must be [N,C,H,W], got shape {dense.shape}")
    if tokens.ndim != 2 or table.ndim != 2:
        raise ValueError(f"tokens must be [C,Kt] and table [T,K], got {tokens.shape} and {table.shape}")
    if tokens.dtype != dense.dtype:
        raise ValueError(f"tokens dtype {tokens.dtype} differs from dense dtype {dense.dtype}")
    n, c, h, w = dense.shape
    if tokens.shape[0] != c:
        raise ValueError(f"tokens have {tokens.shape[0]} channels, dense has {c}")
    kt = tokens.shape[1]
    num_pixels = n * h * w
    t, k = table.shape
    if table.size:
        # v <= -2 addresses pixel -2 - v, so the smallest valid v is -1 - num_pixels.
        bad = (table >= kt) | (table.astype(np.int64) < -1 - num_pixels)
        if bad.any():
            v = int(table[bad][0])
            raise ValueError(
                f"table value {v} out of range: tokens hold {kt} columns and dense holds {num_pixels} pixels"
            )
    pixels = dense.transpose(1, 0, 2, 3).reshape(c, num_pixels)
    out = np.zeros((t, c, k), dtype=dense.dtype)
    from_tokens = table >= 0
    from_dense = table <= -2
    for ti in range(t):
        cols_t = np.nonzero(from_tokens[ti])[0]
        cols_d = np.nonzero(from_dense[ti])[0]
        out[ti][:, cols_t] = tokens[:, table[ti, cols_t]]
        out[ti][:, cols_d] = pixels[:, -2 - table[ti, cols_d].astype(np.int64)]
    return out.reshape(t * c, k)


def masked_scatter(base: np.ndarray, values: np.ndarray, index: np.ndarray, accumulate: int = 0) -> np.ndarray:
    """Write (or add) ``values[:, k]`` at linear pixel ``index[k]`` of a copy of ``base``."""
    _check_float("base", base)
    _check_index("index", index)
    if base.ndim != 4:
        raise ValueError(f"base must be [N,C,H,W], got shape {base.shape}")
    if values.ndim != 2 or index.ndim != 1:
        raise ValueError(f"values must be [C,K] and index [K], got {values.shape} and {index.shape}")
    if values.dtype != base.dtype:
        raise ValueError(f"values dtype {values.dtype} differs from base dtype {base.dtype}")
    n, c, h, w = base.shape
    if values.shape != (c, index.shape[0]):
        raise ValueError(f"values must be [{c}, {index.shape[0]}] to match base and index, got {values.shape}")
    if accumulate not in (0, 1):
        raise ValueError(f"accumulate must be 0 or 1, got {accumulate}")
    num_pixels = n * h * w
    if index.size and (index.min() < 0 or index.max() >= num_pixels):
        raise ValueError(f"index values must lie in [0, {num_pixels}), got [{index.min()}, {index.max()}]")
    if np.unique(index).size != index.size:
        raise ValueError("index values must be unique")
    pixels = base.transpose(1, 0, 2, 3).reshape(c, num_pixels).copy()
    if accumulate:
        pixels[:, index] += values
    else:
        pixels[:, index] = values
    return pixels.reshape(c, n, h, w).transpose(1, 0, 2, 3).copy()
