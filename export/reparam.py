"""Structural reparameterisation: both rewrites are exact.

1. ``fold_branches``: every RepVGG training block (3x3+BN, 1x1+BN, identity BN)
   becomes one 3x3 conv with bias; the result is the same network with
   ``rep_branches=False``.
2. ``gather_form``: a 3x3 conv at one pixel is a GEMM over its 9 gathered neighbours,
   ``W.permute(0, 2, 3, 1).reshape(Cout, 9 * Cin)``; neighbour ``t = 3 * (dy + 1) + (dx + 1)``
   occupies rows ``t * Cin .. t * Cin + Cin - 1`` of MaskedGather's output.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from m2ae.model.layers import RepConv3x3
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
        weight, bias = module.eval().fused_weight_bias()
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
