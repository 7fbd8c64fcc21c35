"""The I/O contract of every exported graph and engine (docs/design.md section 4).

Inputs: ``image`` float32 [N,3,H,W] in [0, 1] and, for ``*_maskin_*`` exports,
``mask`` float32 [N,1,H,W] (1 = blurred). Outputs: ``restored`` float32 [N,3,H,W] and
``blur_mask`` float32 [N,1,H,W], the hard 0/1 mask the network used. H and W are
multiples of the ``m2ae.multiple`` recorded in the model's metadata.
"""

from __future__ import annotations

from pathlib import Path

from m2ae.errors import UserError

INPUT_IMAGE = "image"
INPUT_MASK = "mask"
OUTPUT_RESTORED = "restored"
OUTPUT_MASK = "blur_mask"


def metadata_int(metadata: dict[str, str], key: str, default: int, source: Path) -> int:
    """A positive integer entry (``m2ae.multiple``, ``m2ae.min_size``) of a model's metadata."""
    value = metadata.get(key, str(default))
    remedy = "the file was altered or not written by m2ae: make it again (`m2ae export`, for engines `m2ae build`)"
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: metadata {key}={value!r} is not an integer; {remedy}") from None
    if number < 1:
        raise UserError(f"{source}: metadata {key}={value!r} must be positive; {remedy}")
    return number
