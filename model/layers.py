"""Building blocks shared by every preset: RepVGG-style convs and masked residual blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def activation() -> nn.Module:
    return nn.LeakyReLU(0.1)


def _fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BN that follows a bias-free conv into (weight, bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepConv3x3(nn.Module):
    """3x3 conv that trains with RepVGG branches (3x3+BN, 1x1+BN, identity BN).

    In eval mode the branches sum to a single 3x3 conv with bias, which ``fused``
    returns; with ``rep_branches=False`` it is that plain conv from the start.
    """

    def __init__(self, in_channels: int, out_channels: int, rep_branches: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.rep_branches = rep_branches
        if rep_branches:
            self.conv3 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
            self.bn3 = nn.BatchNorm2d(out_channels)
            self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.bn_id = nn.BatchNorm2d(out_channels) if in_channels == out_channels else None
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.rep_branches:
            return self.conv(x)
        y = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        if self.bn_id is not None:
            y = y + self.bn_id(x)
        return y

    def fused_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to this module in eval mode."""
        if not self.rep_branches:
            return self.conv.weight.detach().clone(), self.conv.bias.detach().clone()
        w3, b3 = _fold_bn(self.conv3.weight, self.bn3)
        w1, b1 = _fold_bn(F.pad(self.conv1.weight, [1, 1, 1, 1]), self.bn1)
        weight, bias = w3 + w1, b3 + b1
        if self.bn_id is not None:
            identity = torch.zeros_like(w3)
            identity[torch.arange(self.in_channels), torch.arange(self.in_channels), 1, 1] = 1.0
            wi, bi = _fold_bn(identity, self.bn_id)
            weight, bias = weight + wi, bias + bi
        return weight.detach(), bias.detach()


def centre(x: torch.Tensor, rings: int) -> torch.Tensor:
    """[..., S, S] with ``rings`` outer rings removed."""
    if rings == 0:
        return x
    return x[..., rings : x.shape[-2] - rings, rings : x.shape[-1] - rings]


def plain_conv(layer: nn.Module) -> nn.Conv2d:
    """The ``nn.Conv2d`` that ``layer`` is: itself, or a folded ``RepConv3x3``'s conv."""
    conv = layer.conv if isinstance(layer, RepConv3x3) and not layer.rep_branches else layer
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"needs a plain or folded conv (the deploy form), got {type(layer).__name__}")
    return conv


def valid_conv(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer`` (an ``nn.Conv2d``, or a folded ``RepConv3x3``) without its padding: one
    ring smaller per side for a 3x3 conv, every output pixel computed from real input."""
    conv = plain_conv(layer)
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def _call(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(x)


class MaskedResBlock(nn.Module):
    """``x <- x + m * F(x, g)``, ``F = conv3x3 -> modulate by g -> act -> conv3x3``.

    The modulation is pixel-local (``gamma``/``beta`` are 1x1 convs on the motion
    features ``g``), so the pruned forward can evaluate it from gathered pixels alone.
    """

    def __init__(self, channels: int, guide_channels: int, rep_branches: bool = True) -> None:
        super().__init__()
        self.conv1 = RepConv3x3(channels, channels, rep_branches)
        self.gamma = nn.Conv2d(guide_channels, channels, 1)
        self.beta = nn.Conv2d(guide_channels, channels, 1)
        self.act = activation()
        self.conv2 = RepConv3x3(channels, channels, rep_branches)
        #: the modulation is ``1 + gamma(g)``; ``fold_gamma_offset`` moves the 1 into gamma's bias
        self.gamma_offset = 1.0
        # Start as identity: no modulation and a zero residual branch. With RepVGG
        # branches the BN scales must be zeroed (BN would undo any down-scaled conv init).
        for conv in (self.gamma, self.beta):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        if rep_branches:
            for bn in (self.conv2.bn3, self.conv2.bn1, self.conv2.bn_id):
                if bn is not None:
                    nn.init.zeros_(bn.weight)
        else:
            nn.init.zeros_(self.conv2.conv.weight)
            nn.init.zeros_(self.conv2.conv.bias)

    def residual(self, x: torch.Tensor, guide: torch.Tensor, inside: torch.Tensor | None = None,
                 trim: bool = False) -> torch.Tensor:
        """``F(x, g)``. Two arguments serve the pruned forward on tiles: ``inside`` (1 in
        the image, 0 beyond it) zeroes the hidden map outside the image, as conv2's zero
        padding sees it, when ``x`` is a tile whose halo crosses the image border; ``trim``
        runs the 3x3 convs unpadded (``valid_conv``): a tile's outer ring, which zero
        padding would spoil, is never computed, so each conv runs only where later layers
        still read (the result is 2 rings smaller; the deploy form only)."""
        conv = valid_conv if trim else _call
        ring = 1 if trim else 0
        guide = centre(guide, ring)
        scale = self.gamma(guide) if self.gamma_offset == 0.0 else self.gamma_offset + self.gamma(guide)
        h = self.act(conv(self.conv1, x) * scale + self.beta(guide))
        return conv(self.conv2, h if inside is None else h * centre(inside, ring))

    def forward(self, x: torch.Tensor, guide: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + mask * self.residual(x, guide)

    @torch.no_grad()
    def fold_gamma_offset(self) -> None:
        """Move the modulation's 1 into gamma's bias (exact up to float rounding). The
        exported graph then multiplies two conv outputs directly: ONNX Runtime's CPU
        keeps both in its blocked NCHWc layout, where an ``Add`` of a scalar forced
        a reorder (5-9% of a block's time, measured on tile batches of tiny and base)."""
        self.gamma.bias += self.gamma_offset
        self.gamma_offset = 0.0


class Downsample(nn.Module):
    """Pixel-unshuffle then 1x1: halves H and W, dense and light."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(4 * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.pixel_unshuffle(x, 2))


class Upsample(nn.Module):
    """1x1 then pixel-shuffle: doubles H and W, dense and light.

    The bias is one per output channel, added after the shuffle, so the whole layer
    is exactly a 2x2 stride-2 transposed conv (how the export writes it).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, 4 * out_channels, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.proj(x), 2) + self.bias.reshape(1, -1, 1, 1)
