"""Masked blocks on pixel rows: the pruned forward of a deep scale (tile side 1).

Where channels are many and the map is small (``base``'s bottleneck: 256 channels at
1/8 resolution), a tile's halo costs more than gathering each masked pixel's
neighbours. There the features are kept as rows ``[N*H*W + 1, C]`` (pixel-major, the
last row zero: what a 3x3 conv reads beyond the image), and each 3x3 conv of a block
is one ``Gather`` of 9 neighbour rows per pixel and one ``MatMul`` by the ``[9C, C]``
kernel. A block ``x + m * conv2(act(conv1(x) * gamma(g) + beta(g)))`` evaluates conv1
on the mask dilated by one pixel (what conv2 reads) and conv2 on the mask; conv2 finds
its rows through a rank map (a ``Range`` scattered at the ``NonZero`` ids: no
cumulative sums). Only masked rows change (``ScatterElements``), so sharp pixels keep
their value bit for bit; every op is a standard ONNX op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2ae.model.layers import MaskedResBlock, plain_conv

#: the 3x3 neighbourhood, row-major: the order of a kernel's taps in ``row_kernel``
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def to_rows(dense: Tensor) -> Tensor:
    """[N,C,H,W] -> [N*H*W + 1, C]: pixel-major rows and one zero row last."""
    n, c, h, w = dense.shape
    rows = dense.permute(0, 2, 3, 1).reshape(n * h * w, c)
    return torch.cat([rows, torch.zeros(1, c, dtype=dense.dtype, device=dense.device)])


def from_rows(rows: Tensor, like: Tensor) -> Tensor:
    """``to_rows``'s inverse: the rows (zero row dropped) as a map shaped like ``like``."""
    n, _, h, w = like.shape
    return rows[:-1].reshape(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def masked_pixels(mask: Tensor) -> Tensor:
    """Row ids (``n*H*W + y*W + x``) of the masked pixels of [N,1,H,W], ascending, int64."""
    return torch.nonzero(mask.reshape(-1) > 0.5).reshape(-1)


def neighbour_rows(pixels: Tensor, like: Tensor) -> Tensor:
    """[K, 9]: the rows of each pixel's 3x3 neighbourhood; beyond the image, the zero row."""
    _, _, height, width = like.shape
    outside = like.shape[0] * height * width
    inner = pixels % (height * width)
    y, x = inner // width, inner % width
    taps = []
    for dy, dx in _OFFSETS:
        inside = (y + dy >= 0) & (y + dy < height) & (x + dx >= 0) & (x + dx < width)
        taps.append(torch.where(inside, pixels + dy * width + dx, torch.full_like(pixels, outside)))
    return torch.stack(taps, dim=1)


def row_kernel(layer: nn.Module) -> tuple[Tensor, Tensor]:
    """A 3x3 conv as ``([9*Cin, Cout], bias)`` for rows gathered in ``_OFFSETS`` order."""
    conv = plain_conv(layer)
    out_channels, in_channels = conv.weight.shape[:2]
    return conv.weight.permute(2, 3, 1, 0).reshape(9 * in_channels, out_channels), conv.bias


def row_conv(rows: Tensor, neighbours: Tensor, layer: nn.Module) -> Tensor:
    """``layer`` (a 3x3 conv) at the pixels whose neighbour rows are ``neighbours`` [K, 9]."""
    weight, bias = row_kernel(layer)
    return rows[neighbours.reshape(-1)].reshape(neighbours.shape[0], weight.shape[0]) @ weight + bias


def row_pointwise(rows: Tensor, layer: nn.Conv2d) -> Tensor:
    """A 1x1 conv on rows [K, Cin] -> [K, Cout]."""
    return rows @ layer.weight.reshape(layer.weight.shape[0], -1).t() + layer.bias


class RowStage(nn.Module):
    """The masked blocks of one scale on pixel rows: ``(x, guide, mask) -> x`` on dense maps,
    equal to running the blocks densely under ``mask``."""

    def __init__(self, blocks: nn.ModuleList, scale: int) -> None:
        super().__init__()
        self.blocks = blocks
        self.scale = scale

    def forward(self, x: Tensor, guide: Tensor, mask: Tensor) -> Tensor:
        changed = masked_pixels(mask)
        # conv1 runs where conv2 reads: the mask dilated by one pixel.
        read = masked_pixels(F.max_pool2d(mask, 3, stride=1, padding=1))
        read_taps = neighbour_rows(read, mask)
        # rank[p] = 1 + p's place among the read pixels, 0 (the zero row of h) elsewhere.
        rank = torch.zeros(mask.numel() + 1, dtype=torch.long, device=x.device).scatter(
            0, read, torch.arange(1, read.shape[0] + 1, device=x.device))
        change_taps = rank[neighbour_rows(changed, mask)]
        guide_read = to_rows(guide)[read]
        rows = to_rows(x)
        for block in self.blocks:
            rows = rows.scatter(0, changed.unsqueeze(1).expand(-1, rows.shape[1]),
                                rows[changed] + self._residual(block, rows, read_taps, change_taps, guide_read))
        return from_rows(rows, x)

    @staticmethod
    def _residual(block: MaskedResBlock, rows: Tensor, read_taps: Tensor, change_taps: Tensor,
                  guide_read: Tensor) -> Tensor:
        scale = row_pointwise(guide_read, block.gamma)
        if block.gamma_offset != 0.0:
            scale = scale + block.gamma_offset
        hidden = block.act(row_conv(rows, read_taps, block.conv1) * scale + row_pointwise(guide_read, block.beta))
        hidden = torch.cat([torch.zeros(1, hidden.shape[1], dtype=hidden.dtype, device=hidden.device), hidden])
        return row_conv(hidden, change_taps, block.conv2)
