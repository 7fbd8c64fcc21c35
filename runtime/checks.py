"""Checks shared by every engine: one clear message per kind of bad input, and no NaN/Inf output."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from m2ae.errors import UserError
from m2ae.graph_io import OUTPUT_MASK, OUTPUT_RESTORED

if TYPE_CHECKING:  # base imports this module
    from m2ae.runtime.base import EngineOutputs


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


def _all_finite(array: np.ndarray) -> bool:
    flat = array.ravel()
    # One dot product costs a third of np.isfinite(...).all() and NaN/Inf survive it; finite values
    # large enough to overflow it are rechecked exactly (and its overflow warning kept quiet).
    with np.errstate(all="ignore"):
        square_sum = flat @ flat
    return bool(np.isfinite(square_sum)) or bool(np.isfinite(array).all())


def check_finite_outputs(outputs: EngineOutputs, where: str | os.PathLike) -> EngineOutputs:
    """Return ``outputs``, or raise UserError when ``restored`` or the mask holds NaN or Inf.

    A non-finite pixel is a broken model or an overflowing precision, never a result to
    save or time. ``where`` names the model in the message.
    """
    for name, array in ((OUTPUT_RESTORED, outputs.restored), (OUTPUT_MASK, outputs.mask)):
        if not _all_finite(array):
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise UserError(
                f"{where}: output {name!r} holds {bad} NaN/Inf value(s) of {array.size}: the model's weights are "
                "broken or its precision overflows; try its fp32 export, or re-export from a checkpoint that "
                "`m2ae eval` accepts"
            )
    return outputs
