"""Structural reparameterisation: every rewrite is exact (up to float rounding).

1. ``fold_branches``: every RepVGG training block (3x3+BN, 1x1+BN, identity BN)
   becomes one 3x3 conv with bias; the result is the same network with
   ``rep_branches=False``.
2. ``gather_form``: a 3x3 conv at one pixel is a GEMM over its 9 gathered neighbours,
   ``W.permute(0, 2, 3, 1).reshape(Cout, 9 * Cin)``; neighbour ``t = 3 * (dy + 1) + (dx + 1)``
   occupies rows ``t * Cin .. t * Cin + Cin - 1`` of MaskedGather's output.
3. ``deploy_form``: the pixel-(un)shuffles of the heads and of the U-Net's down/up
   layers become strided convs and transposed convs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from m2ae.model.heads import HEAD_STRIDE, HeadStem, head_features
from m2ae.model.layers import Downsample, RepConv3x3, Upsample
from m2ae.model.network import M2AENet

#: (dy, dx) of gather row t, the order of the 3x3 kernel's taps
NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@torch.no_grad()
def fold_branches(model: M2AENet) -> M2AENet:
    """A copy of ``model`` (in eval mode) with every RepConv3x3 folded into one conv."""
    folded = M2AENet(dataclasses.replace(model.config, rep_branches=False)).eval()
    rep_convs = {name: m for name, m in model.named_modules() if isinstance(m, RepConv3x3)}
    state = {
        key: value
        for key, value in model.state_dict().items()
        if not any(key.startswith(f"{name}.") for name in rep_convs)
    }
    for name, module in rep_convs.items():
        weight, bias = module.fused_weight_bias()
        state[f"{name}.conv.weight"], state[f"{name}.conv.bias"] = weight, bias
    folded.load_state_dict(state)
    return folded


def gather_weight(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [Cout, 9*Cin], b [Cout, 1]) of a 3x3 conv in gather form."""
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
        raise ValueError(f"gather form needs a plain 3x3 conv with padding 1, got {conv}")
    weight = conv.weight.detach().permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    return weight.contiguous(), bias.reshape(-1, 1).clone()


def pointwise_weight(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [Cout, Cin], b [Cout, 1]) of a 1x1 conv, for GEMMs over tokens."""
    if conv.kernel_size != (1, 1):
        raise ValueError(f"expected a 1x1 conv, got {conv}")
    weight = conv.weight.detach().reshape(conv.out_channels, conv.in_channels)
    return weight.clone(), conv.bias.detach().reshape(-1, 1).clone()


class StridedHeadStem(nn.Module):
    """HeadStem as one conv: a 3x3 conv over the stride-4 view is a 12x12 stride-4 conv
    with padding 4 over the full-resolution features (no pixel-unshuffle transpose)."""

    def __init__(self, stem: HeadStem) -> None:
        super().__init__()
        conv = stem.conv
        stride = HEAD_STRIDE
        cin = conv.in_channels // stride**2
        weight = conv.weight.detach().reshape(conv.out_channels, cin, stride, stride, 3, 3)
        # [o, c, i, j, ky, kx] -> [o, c, ky, i, kx, j]: row 4*ky + i, column 4*kx + j
        weight = weight.permute(0, 1, 4, 2, 5, 3).reshape(conv.out_channels, cin, 3 * stride, 3 * stride)
        self.conv = nn.Conv2d(cin, conv.out_channels, 3 * stride, stride=stride, padding=stride)
        self.conv.weight.data.copy_(weight)
        self.conv.bias.data.copy_(conv.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(head_features(x))


class StridedDownsample(nn.Module):
    """Pixel-unshuffle + 1x1 as one 2x2 stride-2 conv."""

    def __init__(self, down: Downsample) -> None:
        super().__init__()
        proj = down.proj
        cin = proj.in_channels // 4
        self.conv = nn.Conv2d(cin, proj.out_channels, 2, stride=2)
        self.conv.weight.data.copy_(proj.weight.detach().reshape(proj.out_channels, cin, 2, 2))
        self.conv.bias.data.copy_(proj.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TransposedUpsample(nn.Module):
    """1x1 + pixel-shuffle (+ per-channel bias) as one 2x2 stride-2 transposed conv."""

    def __init__(self, up: Upsample) -> None:
        super().__init__()
        proj = up.proj
        cout = proj.out_channels // 4
        weight = proj.weight.detach().reshape(cout, 2, 2, proj.in_channels).permute(3, 0, 1, 2)
        self.conv = nn.ConvTranspose2d(proj.in_channels, cout, 2, stride=2)
        self.conv.weight.data.copy_(weight)
        self.conv.bias.data.copy_(up.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@torch.no_grad()
def deploy_form(model: M2AENet) -> M2AENet:
    """The network as it is exported: branches folded, and the shuffles of the heads and
    of the U-Net's down/up layers written as strided (transposed) convs. Same function,
    fewer memory-bound transposes on every backend."""
    deployed = fold_branches(model)
    deployed.mask_head.stem = StridedHeadStem(deployed.mask_head.stem)
    deployed.motion.stem = StridedHeadStem(deployed.motion.stem)
    deployed.downs = nn.ModuleList(StridedDownsample(d) for d in deployed.downs)
    deployed.ups = nn.ModuleList(TransposedUpsample(u) for u in deployed.ups)
    return deployed.eval()
