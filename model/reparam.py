"""Structural reparameterisation: every rewrite is exact (up to float rounding).

1. ``fold_branches``: every RepVGG training block (3x3+BN, 1x1+BN, identity BN)
   becomes one 3x3 conv with bias; the result is the same network with
   ``rep_branches=False``.
2. ``deploy_form``: the pixel-(un)shuffles of the heads and of the U-Net's down/up
   layers become strided convs and transposed convs, and each block's modulation
   ``1 + gamma(g)`` becomes ``gamma(g)`` with the 1 in gamma's bias.
3. ``stem_then_down``: the stem (3x3) followed by the first down layer (2x2 stride 2),
   with nothing between them, is one 4x4 stride-2 conv; the pruned forward uses it
   where the full-resolution stem map itself is never needed.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from m2ae.model.heads import HEAD_STRIDE, HeadStem, head_features
from m2ae.model.layers import Downsample, MaskedResBlock, RepConv3x3, Upsample
from m2ae.model.network import M2AENet


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
        self.detail = stem.detail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(head_features(x, self.detail))


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
def stem_then_down(stem: nn.Conv2d, down: StridedDownsample) -> nn.Conv2d:
    """``down(stem(x))`` as one conv: kernel 4, stride 2, padding 1.

    Output pixel y of the down layer reads stem pixels 2y + d (d in 0, 1), each of which
    reads image pixels 2y + d + k - 1 (k in 0..2): image offsets a = d + k in 0..3 around
    2y - 1. The stem's zero padding is the composite's; the down layer, stride 2 over
    even sizes, never reads beyond the image.
    """
    if stem.kernel_size != (3, 3) or stem.padding != (1, 1) or stem.stride != (1, 1) or stem.groups != 1:
        raise ValueError(f"stem_then_down needs a plain 3x3 stem with padding 1, got {stem}")
    inner = down.conv
    weight = torch.zeros(inner.out_channels, stem.in_channels, 4, 4, dtype=stem.weight.dtype)
    for dy in range(2):
        for dx in range(2):
            # [o, c] x [c, i, 3, 3] -> the 3x3 window that down tap (dy, dx) sees, shifted by it.
            weight[:, :, dy : dy + 3, dx : dx + 3] += torch.einsum("oc,cikl->oikl", inner.weight[:, :, dy, dx], stem.weight)
    composite = nn.Conv2d(stem.in_channels, inner.out_channels, 4, stride=2, padding=1)
    composite.weight.data.copy_(weight)
    composite.bias.data.copy_(inner.bias + inner.weight.sum(dim=(2, 3)) @ stem.bias)
    return composite


@torch.no_grad()
def deploy_form(model: M2AENet) -> M2AENet:
    """The network as it is exported: branches folded, and the shuffles of the heads and
    of the U-Net's down/up layers written as strided (transposed) convs. Same function,
    fewer memory-bound transposes on every backend.

    A network already in this form is returned as it is, so a caller that deploys once
    (the exporter) can hand the result on to ``DenseGraph`` or ``PrunedM2AE``, which
    deploy what they get.
    """
    if isinstance(model.motion.stem, StridedHeadStem):
        return model
    deployed = fold_branches(model)
    if isinstance(deployed.mask_head.stem, HeadStem):  # the conv head has no unshuffle to rewrite
        deployed.mask_head.stem = StridedHeadStem(deployed.mask_head.stem)
    deployed.motion.stem = StridedHeadStem(deployed.motion.stem)
    deployed.downs = nn.ModuleList(StridedDownsample(d) for d in deployed.downs)
    deployed.ups = nn.ModuleList(TransposedUpsample(u) for u in deployed.ups)
    for block in deployed.modules():
        if isinstance(block, MaskedResBlock):
            block.fold_gamma_offset()
    return deployed.eval()
