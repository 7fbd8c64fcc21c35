"""M2AENet: blur-mask head, motion analyser, and a U-Net of masked residual blocks.

This is the dense-masked forward, the reference the pruned forward of
``m2ae.model.pruned`` must match: every block computes everywhere and the gate keeps
its result only at masked pixels, so where the gate is 0 the output is the input.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from m2ae.model.config import M2AEConfig
from m2ae.model.heads import MotionAnalyser, guide_at_scale, hard_mask, mask_head
from m2ae.model.layers import Downsample, MaskedResBlock, RepConv3x3, Upsample

GATE_PREDICTED = "pred"
GATE_ONES = "ones"


class M2AEOutput(NamedTuple):
    restored: torch.Tensor  # [N,3,H,W]
    mask_logits: torch.Tensor  # [N,2,H,W]: (sharp, blurred)
    mask: torch.Tensor  # [N,1,H,W]: the gate used
    trajectory: torch.Tensor  # [N,2T,H,W]


def scale_mask(mask: torch.Tensor, scale: int) -> torch.Tensor:
    """``m_s = maxpool(m, 2**s)``: a cell is masked when any of its pixels is."""
    return mask if scale == 0 else F.max_pool2d(mask, 2**scale)


class M2AENet(nn.Module):
    def __init__(self, config: M2AEConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths()
        cg = config.motion_channels
        rep = config.rep_branches
        self.mask_head = mask_head(config.in_channels, config.mask_channels, config.mask_context, config.mask_stem)
        self.motion = MotionAnalyser(config.in_channels, cg, config.motion_points, config.max_displacement)
        self.stem = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            nn.ModuleList(MaskedResBlock(widths[s], cg, rep) for _ in range(config.enc_blocks[s]))
            for s in range(config.num_scales)
        )
        self.downs = nn.ModuleList(Downsample(widths[s], widths[s + 1]) for s in range(config.num_scales - 1))
        self.ups = nn.ModuleList(Upsample(widths[s + 1], widths[s]) for s in range(config.num_scales - 1))
        self.decoder = nn.ModuleList(
            nn.ModuleList(MaskedResBlock(widths[s], cg, rep) for _ in range(config.dec_blocks[s]))
            for s in range(config.num_scales - 1)
        )
        self.proj = RepConv3x3(widths[0], config.in_channels, rep_branches=False)
        nn.init.zeros_(self.proj.conv.weight)
        nn.init.zeros_(self.proj.conv.bias)

    def gate(self, logits: torch.Tensor, gate: torch.Tensor | str, tau: float = 1.0) -> torch.Tensor:
        """The [N,1,H,W] gate: given, all ones, or predicted (Gumbel in training)."""
        if isinstance(gate, torch.Tensor):
            if gate.shape != (logits.shape[0], 1, *logits.shape[2:]):
                raise ValueError(f"gate must be [N,1,H,W] = {[logits.shape[0], 1, *logits.shape[2:]]}, got {list(gate.shape)}")
            return gate.to(logits.dtype)
        if gate == GATE_ONES:
            return torch.ones_like(logits[:, :1])
        if gate != GATE_PREDICTED:
            raise ValueError(f"gate must be a tensor, {GATE_PREDICTED!r} or {GATE_ONES!r}, got {gate!r}")
        if self.training:
            # Hard Gumbel-softmax, straight-through: 0/1 forward, soft gradients back.
            return F.gumbel_softmax(logits, tau=tau, hard=True, dim=1)[:, 1:2]
        return hard_mask(logits, self.config.threshold, self.config.mask_dilation, self.config.mask_opening)

    def forward(self, blurred: torch.Tensor, gate: torch.Tensor | str = GATE_PREDICTED, tau: float = 1.0) -> M2AEOutput:
        logits = self.mask_head(blurred)
        mask = self.gate(logits, gate, tau)
        guide, trajectory = self.motion(blurred)
        return M2AEOutput(self.restore(blurred, mask, guide), logits, mask, trajectory)

    def restore(self, blurred: torch.Tensor, mask: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The body: the U-Net of masked blocks under ``mask``, guided by the motion features."""
        x = self.stem(blurred)
        skips = []
        for s, blocks in enumerate(self.encoder):
            m_s, g_s = scale_mask(mask, s), guide_at_scale(guide, s)
            for block in blocks:
                x = block(x, g_s, m_s)
            if s < len(self.downs):
                skips.append(x)
                x = self.downs[s](x)
        for s in reversed(range(len(self.decoder))):
            x = self.ups[s](x) + skips[s]
            m_s, g_s = scale_mask(mask, s), guide_at_scale(guide, s)
            for block in self.decoder[s]:
                x = block(x, g_s, m_s)
        return blurred + mask * self.proj(x)
