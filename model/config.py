"""M2AENet configurations: presets are plain dataclasses over the same code."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from m2ae.errors import UserError

#: the mask head's first layers (``M2AEConfig.mask_stem``; built by ``m2ae.model.heads.BlurMaskHead``)
MASK_STEMS: tuple[str, ...] = ("unshuffle", "conv")

#: Bytes a training step takes per input pixel and unit of ``train_step_bytes``: measured
#: 76 (tiny) and 70 (base) on the CPU; set a little low, so only steps that cannot fit are refused.
TRAIN_BYTES_PER_UNIT = 64


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_int(name: str, value: Any, minimum: int) -> None:
    # bool is an int to Python, but never a size.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer, {minimum} or more"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class M2AEConfig:
    """Shape of an M2AENet. ``width * 2**s`` channels at scale ``s`` of ``num_scales``."""

    preset: str = "custom"
    in_channels: int = 3
    width: int = 16
    num_scales: int = 3
    #: masked residual blocks per scale on the way down (the last one is the bottleneck)
    enc_blocks: tuple[int, ...] = (1, 1, 2)
    #: masked residual blocks per scale on the way up (all scales but the bottom one)
    dec_blocks: tuple[int, ...] = (1, 1)
    #: trajectory points T predicted by the motion analyser (2T offset channels)
    motion_points: int = 5
    motion_channels: int = 8
    mask_channels: int = 8
    #: levels of the mask head's coarse context branch (each halves its 1/4-resolution
    #: map); 0 is the plain head, which sees about 20 pixels around each pixel
    mask_context: int = 0
    #: the mask head's first layers: "unshuffle" (a 3x3 conv over the pixel-unshuffled
    #: stride-4 view, the first shipped head) or "conv" (a full-resolution 3x3 conv, then
    #: two stride-2 convs: blur is measured before it is downsampled)
    mask_stem: str = "unshuffle"
    #: largest trajectory offset, in full-resolution pixels
    max_displacement: float = 16.0
    #: inference mask: p_blur > threshold, then dilated by this many pixels
    threshold: float = 0.5
    mask_dilation: int = 0
    #: before the dilation, the mask is opened by this many pixels (eroded, then dilated):
    #: marks narrower than 2 * mask_opening + 1 go. The head's false alarms are scattered
    #: specks, each of which wakes a whole tile of the pruned body; 0 keeps every mark
    mask_opening: int = 0
    #: RepVGG-style 1x1 and identity branches with BN in training (folded for export)
    rep_branches: bool = True

    def __post_init__(self) -> None:
        # Checkpoints carry their config as plain data: a wrong value must name its field here,
        # not surface as a shape error deep inside the network's constructor.
        if not isinstance(self.preset, str):
            raise ValueError(f"preset must be a name, got {self.preset!r}")
        for name in ("in_channels", "width", "motion_points", "motion_channels", "mask_channels"):
            _require_int(name, getattr(self, name), 1)
        _require_int("num_scales", self.num_scales, 2)
        _require_int("mask_dilation", self.mask_dilation, 0)
        _require_int("mask_opening", self.mask_opening, 0)
        _require_int("mask_context", self.mask_context, 0)
        for name, count in (("enc_blocks", self.num_scales), ("dec_blocks", self.num_scales - 1)):
            blocks = getattr(self, name)
            if not isinstance(blocks, tuple) or len(blocks) != count:
                raise ValueError(f"{name} needs {count} entries, got {blocks!r}")
            for block_count in blocks:
                _require_int(name, block_count, 0)
        if self.mask_stem not in MASK_STEMS:
            raise ValueError(f"mask_stem must be one of {', '.join(MASK_STEMS)}, got {self.mask_stem!r}")
        if not _is_real(self.max_displacement) or not 0.0 < self.max_displacement < math.inf:
            raise ValueError(f"max_displacement must be a positive number of pixels, got {self.max_displacement!r}")
        if not _is_real(self.threshold) or not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold!r}")
        if not isinstance(self.rep_branches, bool):
            raise ValueError(f"rep_branches must be true or false, got {self.rep_branches!r}")

    def widths(self) -> list[int]:
        return [self.width * 2**s for s in range(self.num_scales)]

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this (the heads' stride 4, the mask head's context
        levels and the U-Net's downsampling), so every strided grid lines up with the image."""
        return math.lcm(4 * 2**self.mask_context, 2 ** (self.num_scales - 1))

    @property
    def min_size(self) -> int:
        """Smallest H or W the network accepts: every head sees at least a 2x2 map."""
        return 2 * self.multiple

    def train_step_bytes(self, batch_size: int, crop: int) -> int:
        """Estimated memory of one training step on ``batch_size`` crops of ``crop`` pixels.

        The activations kept for the backward pass dominate: per input pixel, the
        channels of every masked block times its scale's share of the pixels.
        """
        units = sum(
            (self.enc_blocks[s] + (self.dec_blocks[s] if s < self.num_scales - 1 else 0)) * self.width / 2**s
            for s in range(self.num_scales)
        )
        return int(TRAIN_BYTES_PER_UNIT * units * batch_size * crop * crop)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "M2AEConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        values = dict(data)
        for key in ("enc_blocks", "dec_blocks"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


PRESETS: dict[str, M2AEConfig] = {
    # Tests and CPU demos: trains in minutes on a CPU.
    "tiny": M2AEConfig(preset="tiny"),
    # Paper-scale model.
    "base": M2AEConfig(
        preset="base",
        width=32,
        num_scales=4,
        enc_blocks=(2, 2, 2, 4),
        dec_blocks=(2, 2, 2),
        motion_points=9,
        motion_channels=16,
        mask_channels=16,
    ),
}


def get_preset(name: str) -> M2AEConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
