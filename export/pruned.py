"""The pixel-pruned forward (DESIGN.md section 2), built on the m2ae custom ops.

Per U-Net scale, with A the masked pixels and D = dilate3x3(A):

* index tables are built once from the scale's mask (NonZero, a 3x3 max-pool, and a
  cumulative sum as the inverse index map) and shared by the encoder and decoder
  blocks of that scale;
* the features of A live as tokens ``X_A`` [C, K_A]; a block gathers its 3x3
  neighbourhoods over D from two sources (tokens inside A, the scale's input map
  elsewhere, 0 outside the image), runs conv1 as a GEMM, modulates with the motion
  features picked at D, gathers its conv2 neighbourhoods from those D tokens, and adds
  the result to ``X_A``: its cost is proportional to K, with no dense buffer;
* one MaskedScatter writes ``X_A`` back into the input map at the end of the stage.

The output projection is a gather-form 3x3 over A and one accumulating scatter into
the input image, so sharp pixels are the input bit for bit. ``PrunedM2AE`` matches
``M2AENet``'s dense-masked forward (fp32, max abs <= 1e-4) for any mask.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2ae.export.reparam import NEIGHBOUR_OFFSETS, deploy_form, gather_weight, pointwise_weight
from m2ae.model.heads import guide_at_scale, hard_mask
from m2ae.model.layers import MaskedResBlock, activation
from m2ae.model.network import M2AENet, scale_mask
from m2ae.trt_plugins.torch_ops import register_torch_ops

register_torch_ops()


def masked_gather(dense: Tensor, tokens: Tensor, table: Tensor) -> Tensor:
    return torch.ops.m2ae.masked_gather(dense, tokens, table)


def masked_scatter(base: Tensor, values: Tensor, index: Tensor, accumulate: int) -> Tensor:
    return torch.ops.m2ae.masked_scatter(base, values, index, accumulate)


class ScaleTables(NamedTuple):
    """Index lists and gather tables of one scale (all int32)."""

    index_a: Tensor  # [K_A] linear pixels of A
    pick_a: Tensor  # [1, K_A] MaskedGather table picking A from a dense map
    pick_d: Tensor  # [1, K_D] likewise for D
    d_from_a: Tensor  # [9, K_D] neighbours of D: A tokens, else dense, -1 outside
    a_from_d: Tensor  # [9, K_A] neighbours of A among D tokens, -1 outside
    a_from_a: Tensor  # [9, K_A] neighbours of A: A tokens, else dense, -1 outside


def _padded_codes(codes: Tensor, height: int, width: int) -> Tensor:
    """[N*H*W] codes -> flat [N*(H+2)*(W+2)] with a -1 border (outside the image)."""
    grid = codes.reshape(-1, height, width)
    return F.pad(grid, (1, 1, 1, 1), value=-1).reshape(-1)


def _neighbour_table(padded_codes: Tensor, padded_positions: Tensor, width: int) -> Tensor:
    """Codes of the 9 neighbours of each position: [9, K]. The border makes every read valid."""
    dy = torch.tensor([o[0] for o in NEIGHBOUR_OFFSETS], dtype=torch.int64)
    dx = torch.tensor([o[1] for o in NEIGHBOUR_OFFSETS], dtype=torch.int64)
    offsets = dy * (width + 2) + dx
    return padded_codes[padded_positions.unsqueeze(0) + offsets.unsqueeze(1)]


def build_tables(mask: Tensor) -> ScaleTables:
    """Tables of one scale from its 0/1 mask [N,1,H,W]."""
    height, width = mask.shape[2], mask.shape[3]
    in_a = mask.reshape(-1) > 0.5
    in_d = F.max_pool2d(mask, 3, stride=1, padding=1).reshape(-1) > 0.5
    index_a = torch.nonzero(in_a).reshape(-1)
    index_d = torch.nonzero(in_d).reshape(-1)
    # Row-major ranks: the k-th masked pixel in linear order is token k.
    rank_a = torch.cumsum(in_a.to(torch.int64), 0) - 1
    rank_d = torch.cumsum(in_d.to(torch.int64), 0) - 1
    pixel = torch.cumsum(torch.ones_like(rank_a), 0) - 1
    dense_code = -2 - pixel
    codes_a = _padded_codes(torch.where(in_a, rank_a, dense_code), height, width)
    codes_d = _padded_codes(torch.where(in_d, rank_d, torch.full_like(rank_d, -1)), height, width)
    inside = _padded_codes(torch.ones_like(rank_a), height, width) > 0
    positions_a = torch.nonzero(inside & (_padded_codes(in_a.to(torch.int64), height, width) > 0)).reshape(-1)
    positions_d = torch.nonzero(inside & (_padded_codes(in_d.to(torch.int64), height, width) > 0)).reshape(-1)
    i32 = torch.int32
    return ScaleTables(
        index_a=index_a.to(i32),
        pick_a=(-2 - index_a).reshape(1, -1).to(i32),
        pick_d=(-2 - index_d).reshape(1, -1).to(i32),
        d_from_a=_neighbour_table(codes_a, positions_d, width).to(i32),
        a_from_d=_neighbour_table(codes_d, positions_a, width).to(i32),
        a_from_a=_neighbour_table(codes_a, positions_a, width).to(i32),
    )


class GatherConv(nn.Module):
    """A 3x3 conv in gather form: ``W [Cout, 9*Cin] @ gather + b``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        weight, bias = gather_weight(conv)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, gathered: Tensor) -> Tensor:
        return torch.matmul(self.weight, gathered) + self.bias


class Pointwise(nn.Module):
    """A 1x1 conv over tokens: ``W [Cout, Cin] @ tokens + b``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        weight, bias = pointwise_weight(conv)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, tokens: Tensor) -> Tensor:
        return torch.matmul(self.weight, tokens) + self.bias


class PrunedBlock(nn.Module):
    """A folded MaskedResBlock evaluated on tokens."""

    def __init__(self, block: MaskedResBlock) -> None:
        super().__init__()
        self.conv1 = GatherConv(block.conv1.conv)
        self.gamma = Pointwise(block.gamma)
        self.beta = Pointwise(block.beta)
        self.act = activation()
        self.conv2 = GatherConv(block.conv2.conv)
        # conv2 reads D tokens only (every neighbour of A is in D or outside the image), so
        # its dense source is a 1-pixel placeholder that no table entry addresses.
        self.register_buffer("no_pixels", torch.zeros(1, block.conv1.conv.out_channels, 1, 1), persistent=False)

    def forward(self, x_in: Tensor, tokens: Tensor, guide_d: Tensor, tables: ScaleTables) -> Tensor:
        h = self.conv1(masked_gather(x_in, tokens, tables.d_from_a))
        h = self.act(h * (1.0 + self.gamma(guide_d)) + self.beta(guide_d))
        return tokens + self.conv2(masked_gather(self.no_pixels.to(h.dtype), h, tables.a_from_d))


class PrunedStage(nn.Module):
    """The masked blocks of one scale: pick tokens, run the blocks, scatter once."""

    def __init__(self, blocks: nn.ModuleList, channels: int, guide_channels: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(PrunedBlock(b) for b in blocks)
        # Picks read the dense map only: their token input is an empty [C, 0] constant.
        self.register_buffer("no_tokens", torch.zeros(channels, 0), persistent=False)
        self.register_buffer("no_guide_tokens", torch.zeros(guide_channels, 0), persistent=False)

    def tokens(self, x_in: Tensor, guide: Tensor, tables: ScaleTables) -> Tensor:
        tokens = masked_gather(x_in, self.no_tokens.to(x_in.dtype), tables.pick_a)
        if not self.blocks:
            return tokens
        guide_d = masked_gather(guide, self.no_guide_tokens.to(guide.dtype), tables.pick_d)
        for block in self.blocks:
            tokens = block(x_in, tokens, guide_d, tables)
        return tokens

    def forward(self, x_in: Tensor, guide: Tensor, tables: ScaleTables) -> Tensor:
        if len(self.blocks) == 0:
            return x_in
        return masked_scatter(x_in, self.tokens(x_in, guide, tables), tables.index_a, 0)


class PrunedM2AE(nn.Module):
    """Inference-only pruned M2AENet; ``forward(image[, mask]) -> (restored, mask)``."""

    def __init__(self, model: M2AENet) -> None:
        super().__init__()
        folded = deploy_form(model)
        self.config = folded.config
        self.mask_head = folded.mask_head
        self.motion = folded.motion
        self.stem = folded.stem
        widths, cg = self.config.widths(), self.config.motion_channels
        self.encoder = nn.ModuleList(PrunedStage(b, widths[s], cg) for s, b in enumerate(folded.encoder))
        self.downs = folded.downs
        self.ups = folded.ups
        self.decoder = nn.ModuleList(PrunedStage(b, widths[s], cg) for s, b in enumerate(folded.decoder))
        self.proj = GatherConv(folded.proj.conv)

    def forward(self, image: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if mask is None:
            mask = hard_mask(self.mask_head(image), self.config.threshold, self.config.mask_dilation)
        guide = self.motion.guide(image)
        tables = [build_tables(scale_mask(mask, s)) for s in range(self.config.num_scales)]
        guides = [guide_at_scale(guide, s) for s in range(self.config.num_scales)]
        x = self.stem(image)
        skips = []
        last = self.config.num_scales - 1
        for s, stage in enumerate(self.encoder):
            x = stage(x, guides[s], tables[s])
            if s < last:
                skips.append(x)
                x = self.downs[s](x)
        for s in reversed(range(len(self.decoder))):
            x = self.ups[s](x) + skips[s]
            if s > 0:
                x = self.decoder[s](x, guides[s], tables[s])
        # Scale 0's decoder stage keeps its tokens: the projection reads them directly.
        tokens = self.decoder[0].tokens(x, guides[0], tables[0])
        delta = self.proj(masked_gather(x, tokens, tables[0].a_from_a))
        restored = masked_scatter(image, delta, tables[0].index_a, 1)
        return restored, mask
