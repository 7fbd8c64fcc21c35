"""Forced blur masks for benchmarks: a few random blobs covering a requested fraction.

``blob_mask`` draws 1 to 4 random ellipses (centre, axes, angle from ``seed``) and grows
them together, by one common scale factor, until their union covers the requested
fraction of the image. The growth is done in one step: every pixel gets the smallest
scale at which some ellipse reaches it, and the ``round(ratio * H * W)`` pixels with the
smallest scale are the mask, so the covered fraction is exact up to one pixel.
"""

from __future__ import annotations

import numpy as np

from m2ae.errors import UserError

MAX_BLOBS = 4


def blob_mask(height: int, width: int, ratio: float, seed: int) -> np.ndarray:
    """float32 [1,1,H,W] of 0/1 with ``round(ratio*H*W)`` ones; ``ratio`` is a fraction in [0, 1]."""
    if height < 1 or width < 1:
        raise UserError(f"mask size {height}x{width}: both sides must be positive")
    if not 0.0 <= ratio <= 1.0:
        raise UserError(f"blur ratio {ratio}: must lie in [0, 1]")
    total = height * width
    target = int(round(ratio * total))
    mask = np.zeros(total, dtype=np.float32)
    if target == total:
        mask[:] = 1.0
    elif target > 0:
        reach = _blob_reach(height, width, np.random.default_rng(seed)).ravel()
        # Stable order: ties (equal reach) resolve the same way for the same seed.
        mask[np.argsort(reach, kind="stable")[:target]] = 1.0
    return mask.reshape(1, 1, height, width)


def _blob_reach(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """[H,W]: the smallest scale factor at which one of the random ellipses covers each pixel."""
    count = int(rng.integers(1, MAX_BLOBS + 1))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    reach = np.full((height, width), np.inf)
    for _ in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        # Axes relative to the image, so blobs look alike at every resolution.
        a = rng.uniform(0.1, 0.3) * max(height, width)
        b = a * rng.uniform(0.4, 1.0)
        angle = rng.uniform(0, np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        u = (xs - cx) * cos + (ys - cy) * sin
        v = -(xs - cx) * sin + (ys - cy) * cos
        np.minimum(reach, np.hypot(u / a, v / b), out=reach)
    return reach
