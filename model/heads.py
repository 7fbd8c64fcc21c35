"""The two light heads at 1/4 resolution: the blur-mask predictor and the motion analyser."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2ae.model.config import MASK_STEMS
from m2ae.model.layers import activation

HEAD_STRIDE = 4
#: (box size, gain) of each high-pass detail layer a head sees beside the image
FINE_DETAIL: tuple[tuple[int, float], ...] = ((3, 8.0),)
#: the context mask head adds a coarser band: blur removes the fine band only, so the
#: ratio of the two tells "smooth because blurred" from "smooth because flat"
MULTISCALE_DETAIL: tuple[tuple[int, float], ...] = ((3, 8.0), (7, 4.0))


def head_features(x: torch.Tensor, detail: tuple[tuple[int, float], ...] = FINE_DETAIL) -> torch.Tensor:
    """The heads' full-resolution input: the centred image and its high-pass detail layers.

    Blur is a loss of high frequencies: handing the light heads the detail layers
    explicitly (fixed box high-passes, amplified to the scale of the image) is what lets
    a few small convs tell blurred from sharp texture within a short training run.
    """
    layers = [2.0 * x - 1.0]
    for size, gain in detail:
        layers.append(gain * (x - F.avg_pool2d(x, size, stride=1, padding=size // 2, count_include_pad=False)))
    return torch.cat(layers, dim=1)


class HeadStem(nn.Module):
    """First layer of both heads: a 3x3 conv over the stride-4 (pixel-unshuffled) view."""

    def __init__(self, in_channels: int, channels: int, detail: tuple[tuple[int, float], ...] = FINE_DETAIL) -> None:
        super().__init__()
        self.detail = detail
        self.conv = nn.Conv2d((1 + len(detail)) * in_channels * HEAD_STRIDE**2, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pixel_unshuffle(head_features(x, self.detail), HEAD_STRIDE))


def context_branch(in_channels: int, channels: int, levels: int) -> nn.Sequential:
    """The mask heads' coarse branch: per level a stride-2 3x3 conv and a 3x3 conv, each activated."""
    layers: list[nn.Module] = []
    for _ in range(levels):
        layers += [nn.Conv2d(in_channels, channels, 3, stride=2, padding=1), activation(),
                   nn.Conv2d(channels, channels, 3, padding=1), activation()]
        in_channels = channels
    return nn.Sequential(*layers)


class ConvMaskHead(nn.Module):
    """The conv mask head (``mask_stem="conv"``): learned filters at full resolution first.

    Blur shows as missing fine-detail energy over a neighbourhood. A 3x3 conv and its
    activation at full resolution measure that energy before any downsampling averages
    it away (``HeadStem`` can only mix each 4x4 block's pixels linearly); two stride-2
    convs bring it to 1/4, two more convs follow, and ``context`` levels of a coarse
    branch (a stride-2 conv and a conv each, 4/3 the channels) are added back through a
    1x1 conv. Trained alone (224k training crops, 14 CPU minutes), it reached
    held-out mask IoU 0.33 against 0.27 for the plain unshuffle head (docs/training.md,
    section 2). With 24 channels and 2 levels: about 2.3k MACs per pixel.
    """

    def __init__(self, in_channels: int, channels: int, context: int = 0) -> None:
        super().__init__()
        self.context_levels = context
        coarse = channels * 4 // 3
        self.stem = nn.Sequential(
            nn.Conv2d((1 + len(FINE_DETAIL)) * in_channels, max(1, channels // 2), 3, padding=1),
            activation(),
            nn.Conv2d(max(1, channels // 2), max(1, channels * 2 // 3), 3, stride=2, padding=1),
            activation(),
            nn.Conv2d(max(1, channels * 2 // 3), channels, 3, stride=2, padding=1),
            activation(),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(),
        )
        self.context = context_branch(channels, coarse, context)
        self.context_proj = nn.Conv2d(coarse, channels, 1) if context else None
        self.logits = nn.Conv2d(channels, 2, 1)
        self.act = activation()

    @property
    def logits_conv(self) -> nn.Conv2d:
        """The last layer: the 1x1 conv that writes the two logits."""
        return self.logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(head_features(x, FINE_DETAIL))
        if self.context_proj is not None:
            coarse = self.context_proj(self.context(features))
            features = self.act(features + F.interpolate(coarse, scale_factor=2**self.context_levels, mode="bilinear",
                                                          align_corners=False))
        return F.interpolate(self.logits(features), scale_factor=HEAD_STRIDE, mode="bilinear", align_corners=False)


def mask_head(in_channels: int, channels: int, context: int, stem: str) -> nn.Module:
    """The mask head a config asks for: ``BlurMaskHead`` (stem "unshuffle") or ``ConvMaskHead`` ("conv")."""
    if stem not in MASK_STEMS:
        raise ValueError(f"mask stem must be one of {MASK_STEMS}, got {stem!r}")
    if stem == "conv":
        return ConvMaskHead(in_channels, channels, context)
    return BlurMaskHead(in_channels, channels, context)


class BlurMaskHead(nn.Module):
    """Two logits (sharp, blurred) per pixel, from a stride-4 view, upsampled bilinearly.

    ``context`` > 0 builds the context head: two detail bands, two convs at 1/4, and a
    branch that halves the map ``context`` times (a stride-2 conv and a conv per level)
    and is added back bilinearly. Telling a blurred object from smooth texture needs
    more than the 20 pixels the plain head sees: on the held-out set (head trained
    alone, 2500 steps) the context head reached mask IoU 0.27 against 0.17.
    ``context`` = 0 is the plain head of the first shipped checkpoint.
    """

    def __init__(self, in_channels: int, channels: int, context: int = 0) -> None:
        super().__init__()
        self.context_levels = context
        if context == 0:
            self.stem = HeadStem(in_channels, channels)
            self.body = nn.Sequential(
                activation(),
                nn.Conv2d(channels, channels, 3, padding=1),
                activation(),
                nn.Conv2d(channels, 2, 1),
            )
            return
        self.stem = HeadStem(in_channels, channels, MULTISCALE_DETAIL)
        self.body = nn.Sequential(
            activation(),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(),
        )
        self.context = context_branch(channels, channels, context)
        self.logits = nn.Conv2d(channels, 2, 1)

    @property
    def logits_conv(self) -> nn.Conv2d:
        """The last layer: the 1x1 conv that writes the two logits."""
        return self.body[-1] if self.context_levels == 0 else self.logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x)
        if self.context_levels == 0:
            logits = self.body(features)
        else:
            coarse = F.interpolate(self.context(features), scale_factor=2**self.context_levels, mode="bilinear",
                                   align_corners=False)
            logits = self.logits(self.body(features) + coarse)
        return F.interpolate(logits, scale_factor=HEAD_STRIDE, mode="bilinear", align_corners=False)


def blur_probability(logits: torch.Tensor) -> torch.Tensor:
    """p_blur [N,1,H,W] from the head's two logits."""
    return torch.softmax(logits, dim=1)[:, 1:2]


def hard_mask(logits: torch.Tensor, threshold: float, dilation: int, opening: int = 0) -> torch.Tensor:
    """The inference gate: ``p_blur > threshold``, opened by ``opening`` pixels, then dilated
    by ``dilation`` pixels, as 0/1 float (``gate_morphology`` of the thresholded map)."""
    return gate_morphology((blur_probability(logits) > threshold).to(logits.dtype), opening, dilation)


def gate_morphology(maps: torch.Tensor, opening: int, dilation: int) -> torch.Tensor:
    """``maps`` opened by ``opening`` pixels (eroded, then dilated), then dilated by ``dilation``.

    Flat erosion and dilation commute with a threshold, so this applied to p_blur and
    then thresholded gives the same mask as ``hard_mask`` (``calibrate_threshold`` uses that).
    The two dilations are one max-pool of radius ``opening + dilation``.
    """
    return dilate(erode(maps, opening), opening + dilation)


def erode(maps: torch.Tensor, pixels: int) -> torch.Tensor:
    """Min over a (2*pixels+1)^2 window of [N,C,H,W] maps, the window clipped to the image
    (the image border erodes nothing); identity for pixels == 0."""
    if pixels <= 0:
        return maps
    return -F.max_pool2d(-maps, 2 * pixels + 1, stride=1, padding=pixels)


def dilate(maps: torch.Tensor, pixels: int) -> torch.Tensor:
    """Max over a (2*pixels+1)^2 window of [N,C,H,W] maps; identity for pixels == 0."""
    if pixels <= 0:
        return maps
    return F.max_pool2d(maps, 2 * pixels + 1, stride=1, padding=pixels)


class MotionAnalyser(nn.Module):
    """Intra-frame motion at 1/4 resolution: guide features and a T-point trajectory.

    The trajectory holds, per pixel, T (dx, dy) offsets in full-resolution pixels:
    where the scene at that pixel was during the exposure. ``reblur`` averages the
    sharp image sampled along it.
    """

    def __init__(self, in_channels: int, channels: int, points: int, max_displacement: float) -> None:
        super().__init__()
        self.points = points
        self.max_displacement = max_displacement
        self.stem = HeadStem(in_channels, channels)
        self.features = nn.Sequential(
            activation(),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(),
        )
        self.trajectory_head = nn.Conv2d(channels, 2 * points, 3, padding=1)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """Guide features [N,Cg,H/4,W/4]: all inference needs (the trajectory serves the loss)."""
        return self.features(self.stem(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (guide features [N,Cg,H/4,W/4], trajectory [N,2T,H,W])."""
        guide = self.guide(x)
        offsets = torch.tanh(self.trajectory_head(guide)) * self.max_displacement
        trajectory = F.interpolate(offsets, scale_factor=HEAD_STRIDE, mode="bilinear", align_corners=False)
        return guide, trajectory


def guide_at_scale(guide: torch.Tensor, scale: int) -> torch.Tensor:
    """Resample the 1/4-resolution guide features to U-Net scale ``scale`` (1/2**scale)."""
    factor = 2.0 ** (2 - scale)
    if factor > 1:
        return F.interpolate(guide, scale_factor=factor, mode="bilinear", align_corners=False)
    if factor < 1:
        return F.avg_pool2d(guide, int(1 / factor))
    return guide


def reblur(sharp: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """Blur ``sharp`` [N,C,H,W] along ``trajectory`` [N,2T,H,W]: mean over T warps.

    Offsets are (dx, dy) pairs in pixels; each warp samples ``sharp`` at p + offset
    (bilinear, border padding). A zero trajectory gives back ``sharp``.
    """
    n, _, h, w = sharp.shape
    points = trajectory.shape[1] // 2
    ys = torch.arange(h, dtype=sharp.dtype, device=sharp.device)
    xs = torch.arange(w, dtype=sharp.dtype, device=sharp.device)
    base_y, base_x = torch.meshgrid(ys, xs, indexing="ij")
    offsets = trajectory.reshape(n, points, 2, h, w)
    # align_corners=True maps pixel index i to -1 + 2i/(size-1).
    grid_x = (base_x + offsets[:, :, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    grid_y = (base_y + offsets[:, :, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([grid_x, grid_y], dim=-1).reshape(n * points, h, w, 2)
    frames = sharp.repeat_interleave(points, dim=0)
    warped = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return warped.reshape(n, points, -1, h, w).mean(dim=1)
