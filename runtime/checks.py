"""Input validation shared by every engine: one clear message per kind of mistake."""

from __future__ import annotations

import numpy as np


def check_inputs(image: np.ndarray, mask: np.ndarray | None, takes_mask: bool, multiple: int, min_size: int) -> None:
    """Raise ValueError unless ``image`` (and ``mask``) fit the model."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [N,3,H,W], got shape {list(image.shape)}")
    height, width = image.shape[2:]
    if height % multiple or width % multiple:
        raise ValueError(f"image H and W must be multiples of {multiple}, got {height}x{width}; pad first")
    if min(height, width) < min_size:
        raise ValueError(f"image must be at least {min_size}x{min_size}, got {height}x{width}")
    if takes_mask:
        if mask is None:
            raise ValueError("this model takes a mask input: pass mask [N,1,H,W]")
        if tuple(mask.shape) != (image.shape[0], 1, height, width):
            raise ValueError(f"mask must be [{image.shape[0]},1,{height},{width}], got {list(mask.shape)}")
    elif mask is not None:
        raise ValueError("this model predicts its own mask; export with --mask-input to pass one")
