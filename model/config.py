"""M2AENet configurations: presets are plain dataclasses over the same code."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from m2ae.errors import UserError


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
    #: largest trajectory offset, in full-resolution pixels
    max_displacement: float = 16.0
    #: inference mask: p_blur > threshold, then dilated by this many pixels
    threshold: float = 0.5
    mask_dilation: int = 0
    #: RepVGG-style 1x1 and identity branches with BN in training (folded for export)
    rep_branches: bool = True

    def __post_init__(self) -> None:
        if self.num_scales < 2:
            raise ValueError(f"num_scales must be at least 2, got {self.num_scales}")
        if len(self.enc_blocks) != self.num_scales:
            raise ValueError(f"enc_blocks needs {self.num_scales} entries, got {self.enc_blocks}")
        if len(self.dec_blocks) != self.num_scales - 1:
            raise ValueError(f"dec_blocks needs {self.num_scales - 1} entries, got {self.dec_blocks}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")

    def widths(self) -> list[int]:
        return [self.width * 2**s for s in range(self.num_scales)]

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this (stride-4 heads and the U-Net's downsampling)."""
        return math.lcm(4, 2 ** (self.num_scales - 1))

    @property
    def min_size(self) -> int:
        """Smallest H or W the network accepts: every head sees at least a 2x2 map."""
        return 2 * self.multiple

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
