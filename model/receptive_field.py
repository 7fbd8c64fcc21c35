"""The receptive field of M2AENet, derived from its layer structure.

Tiled inference (``m2ae.runtime.tiling``) cuts an image into overlapping windows and
keeps only each window's centre: the result equals whole-image inference when every
kept pixel lies at least the receptive field away from a window edge that is not an
image edge. This module computes that distance from a config, layer by layer, in the
order ``M2AENet.forward`` runs them; ``tests/test_tiling.py`` checks it against the
furthest output change one perturbed input pixel causes in the dense model.

A :class:`Footprint` bounds which input pixels a feature pixel depends on. Pixel ``j``
of a map at stride ``s`` depends on input rows ``[s*j - before, s*j + s - 1 + after]``
(columns alike: every layer is square). Strided layers that only regroup pixels
(pixel-unshuffle, non-overlapping pools) keep ``before``/``after``: the ``s``-pixel block
is part of the stride. The network has no global operation (no global pooling, no
normalisation over the image: BN is folded into convs and uses running statistics), so
the footprint is finite and tiling is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from m2ae.model.config import M2AEConfig
from m2ae.model.heads import HEAD_STRIDE, MULTISCALE_DETAIL


@dataclass(frozen=True)
class Footprint:
    """Input rows ``[stride*j - before, stride*j + stride - 1 + after]`` feed pixel ``j``."""

    stride: int = 1
    before: int = 0
    after: int = 0

    def conv(self, kernel: int) -> Footprint:
        """A ``kernel`` x ``kernel`` stride-1 conv (or pool) with 'same' padding at this stride."""
        reach = self.stride * (kernel // 2)
        return Footprint(self.stride, self.before + reach, self.after + reach)

    def downsample(self, factor: int) -> Footprint:
        """Pixel-unshuffle or a ``factor`` x ``factor`` stride-``factor`` pool: the block joins the stride."""
        return Footprint(self.stride * factor, self.before, self.after)

    def shuffle(self, factor: int) -> Footprint:
        """Pixel-shuffle (or the 2x2 stride-2 transposed conv it exports as): sub-pixel ``k``
        of a coarse pixel sits ``k`` fine pixels from the coarse block's start."""
        fine = self.stride // factor
        spread = fine * (factor - 1)
        return Footprint(fine, self.before + spread, self.after + spread)

    def bilinear(self, factor: int) -> Footprint:
        """``F.interpolate(scale_factor=factor, mode="bilinear", align_corners=False)``.

        Fine pixel ``factor*J + k`` samples coarse coordinate ``J + (k + 0.5)/factor - 0.5``:
        coarse pixels ``floor`` of it and the next one when the fraction is nonzero.
        """
        fine = self.stride // factor
        before = after = 0
        for k in range(factor):
            source = (k + 0.5) / factor - 0.5
            low = math.floor(source)
            high = low + 1 if source > low else low
            # fine pixel j = factor*J + k sits at fine*j = stride*J + fine*k
            before = max(before, self.before + fine * k - self.stride * low)
            after = max(after, self.after + self.stride * high + self.stride - fine - fine * k)
        return Footprint(fine, before, after)

    def union(self, *others: Footprint) -> Footprint:
        """What an elementwise op (add, multiply, concat) of maps at the same stride depends on."""
        for other in others:
            if other.stride != self.stride:
                raise ValueError(f"cannot combine maps at strides {self.stride} and {other.stride}")
        every = (self, *others)
        return Footprint(self.stride, max(f.before for f in every), max(f.after for f in every))

    @property
    def radius(self) -> int:
        return max(self.before, self.after)


def _head_stem(detail_box: int = 3) -> Footprint:
    """``HeadStem``: box high-pass detail layers (the widest sets the reach), pixel-unshuffle
    by 4, 3x3 conv."""
    return Footprint().conv(detail_box).downsample(HEAD_STRIDE).conv(3)


def mask_logits_footprint(config: M2AEConfig) -> Footprint:
    """The mask head's logits. ``BlurMaskHead``: stem, convs at stride 4 (and the context
    branch: a stride-2 conv, bounded as a 3x3 conv then a 2x block, and a 3x3 conv per
    level, bilinear back up), 1x1 conv, bilinear back to full resolution.
    ``ConvMaskHead``: a 3x3 conv on the detail layers, two stride-2 convs, two 3x3 convs,
    then the same context branch and the 1x1 convs."""
    if config.mask_stem == "conv":
        stem = Footprint().conv(3).conv(3).conv(3).downsample(2).conv(3).downsample(2).conv(3).conv(3)
        body = stem
    elif config.mask_context == 0:
        return _head_stem().conv(3).conv(1).bilinear(HEAD_STRIDE)
    else:
        stem = _head_stem(max(size for size, _ in MULTISCALE_DETAIL))
        body = stem.conv(3).conv(3)
    if config.mask_context == 0:
        return body.conv(1).bilinear(HEAD_STRIDE)
    coarse = stem
    for _ in range(config.mask_context):
        coarse = coarse.conv(3).downsample(2).conv(3)
    coarse = coarse.bilinear(2**config.mask_context)
    return body.union(coarse).conv(1).bilinear(HEAD_STRIDE)


def mask_footprint(config: M2AEConfig) -> Footprint:
    """The inference gate: the logits' softmax, a threshold, an opening of ``mask_opening``
    pixels (a min-pool, then a max-pool), then ``mask_dilation`` pixels of max-pool."""
    opening = config.mask_opening
    return mask_logits_footprint(config).conv(2 * opening + 1).conv(2 * (opening + config.mask_dilation) + 1)


def guide_footprint(config: M2AEConfig, scale: int) -> Footprint:
    """The motion guide at U-Net scale ``scale`` (``guide_at_scale`` of ``MotionAnalyser.guide``)."""
    guide = _head_stem().conv(3)  # stride 4
    factor = HEAD_STRIDE // 2**scale
    if factor > 1:
        return guide.bilinear(factor)
    if factor < 1:
        return guide.downsample(2**scale // HEAD_STRIDE)
    return guide


def _block(x: Footprint, guide: Footprint, mask: Footprint) -> Footprint:
    """``x + m * conv2(act(conv1(x) * (1 + gamma(g)) + beta(g)))``, gamma and beta 1x1."""
    hidden = x.conv(3).union(guide)
    return x.union(mask, hidden.conv(3))


def restored_footprint(config: M2AEConfig) -> Footprint:
    """The output ``restored``, following ``M2AENet.forward`` and ``M2AENet.restore``."""
    mask = mask_footprint(config)
    masks = [mask.downsample(2**s) if s else mask for s in range(config.num_scales)]
    guides = [guide_footprint(config, s) for s in range(config.num_scales)]
    x = Footprint().conv(3)  # stem
    skips = []
    for s in range(config.num_scales):
        for _ in range(config.enc_blocks[s]):
            x = _block(x, guides[s], masks[s])
        if s < config.num_scales - 1:
            skips.append(x)
            x = x.downsample(2).conv(1)
    for s in reversed(range(config.num_scales - 1)):
        x = x.conv(1).shuffle(2).union(skips[s])
        for _ in range(config.dec_blocks[s]):
            x = _block(x, guides[s], masks[s])
    return Footprint().union(mask, x.conv(3))


def receptive_field(config: M2AEConfig) -> int:
    """Largest distance, in pixels along H or W, between an output pixel (restored image
    or mask) and an input pixel that can change it."""
    return max(restored_footprint(config).radius, mask_footprint(config).radius)
