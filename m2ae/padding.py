"""Pad images to the network's multiple and crop results back (numpy, NCHW or CHW)."""

from __future__ import annotations

import numpy as np


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    return round_up(height, multiple), round_up(width, multiple)


def pad_to_multiple(array: np.ndarray, multiple: int, mode: str = "reflect") -> np.ndarray:
    """Pad the last two axes at the bottom/right up to multiples of ``multiple``.

    Reflection keeps image statistics at the border (a zero border would look like an
    edge to the blur-mask head); masks should use ``mode="constant"``.
    """
    height, width = array.shape[-2:]
    target_h, target_w = padded_size(height, width, multiple)
    if (target_h, target_w) == (height, width):
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, target_h - height), (0, target_w - width)]
    if mode == "reflect" and (target_h - height >= height or target_w - width >= width):
        mode = "edge"  # reflection needs more pixels than the pad width
    return np.pad(array, pad, mode=mode)


def crop_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    return array[..., :height, :width]
