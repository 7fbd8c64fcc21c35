"""The pixel-pruned forward (docs/design.md section 2): block-sparse tiles.

Per U-Net scale s, the scale's mask ``m_s`` is cut into square tiles of side ``t_s``;
a tile is active when any of its pixels is masked. Each group of masked blocks

* gathers its active tiles once, with a halo of two pixels per block (each block is two
  3x3 convs), out of its input map, its mask and the motion guide (``MaskedGather``);
  an in-image indicator comes from the tile ids;
* runs its blocks on that batch of tiles as ordinary convs. A block's residual is still
  gated per pixel, ``x + m * F(x, g)``, so sharp pixels inside an active tile keep
  their value bit for bit; the rings its zero padding spoils at the tile's edge lie in
  the halo, never in the centre;
* writes the tile centres back once (``MaskedScatter``).

Only the scale-0 tiles reach the output, so scale 0 and the decoder's scale 1 build no
feature map at all (``PrunedBody``): they run on those tiles, and the last stage writes
``blurred + m * proj(x)`` into the image; pixels outside active tiles are the input
untouched. With a scale-1 tile of half the scale-0 side, the encoder's scale 1 runs on
the scale-0 tiles too, from their down layer: no gather of its own. The motion guide
(1/4 resolution) is gathered there and upsampled on the tiles (``upsampled_gather``):
no full-resolution guide is built. Tile ids come from a max-pool of the mask and
``NonZero``: no cumulative sums, no zero-size constants.

``PrunedM2AE`` also applies the two shortcuts the exported graph takes: an all-sharp
frame skips the body, and a frame whose active-tile share at scale 0 exceeds
``dense_above`` runs the dense body (cheaper there). Both give the same result as the
dense-masked forward: ``PrunedM2AE`` matches ``M2AENet`` (fp32, max abs <= 1e-4) for
any mask.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m2ae import __version__
from m2ae.model.checkpoint import LoadedCheckpoint
from m2ae.model.heads import HEAD_STRIDE, guide_at_scale, hard_mask
from m2ae.model.layers import centre, valid_conv
from m2ae.model.network import M2AENet, scale_mask
from m2ae.model.pixel_rows import RowStage
from m2ae.model.receptive_field import receptive_field
from m2ae.model.reparam import deploy_form, stem_then_down
from m2ae.model_info import ModelInfo
from m2ae.trt_plugins.torch_ops import register_torch_ops

register_torch_ops()

#: halo pixels per masked block: two 3x3 convs
BLOCK_HALO = 2


@dataclass(frozen=True)
class PruningConfig:
    """How the pruned forward cuts the work.

    ``tiles`` holds the tile side per U-Net scale (the last entry repeats for deeper
    scales); a scale-1 side of half the scale-0 side runs the scale-1 encoder on the
    scale-0 tiles (``PrunedBody``), and a side of 1 at a scale >= 1 runs it on pixel rows
    (``RowStage``). ``dense_above`` is the share of active scale-0 tiles
    above which the dense body runs instead: measured per backend (``m2ae bench``),
    stored in the exported model's metadata. The defaults are the ``tiny`` preset's.
    """

    tiles: tuple[int, ...] = (32, 16, 16)
    dense_above: float = 0.35
    #: most blocks a stage at scale >= 1 runs between one gather and one scatter: each
    #: block widens the halo by 2, which costs more than a gather on a small deep map
    blocks_per_gather: int = 2

    def __post_init__(self) -> None:
        if not self.tiles or any(t < 1 for t in self.tiles):
            raise ValueError(f"tile sides must be positive, got {self.tiles}")
        if self.blocks_per_gather < 1:
            raise ValueError(f"blocks_per_gather must be at least 1, got {self.blocks_per_gather}")
        if not 0.0 <= self.dense_above <= 1.0:
            raise ValueError(f"dense_above must lie in [0, 1], got {self.dense_above}")

    def tile(self, scale: int) -> int:
        return self.tiles[min(scale, len(self.tiles) - 1)]


#: Per preset, chosen with ONNX Runtime on 2 CPU threads (`m2ae bench --dense-above 1`):
#: tiny at 1024^2, base at 512^2, where a deep 4-block bottleneck pays for a gather per block.
#: tiny's fused scale 1 (16 = 32/2) took 0.93x the time of 32 at 10% blur (1 thread); for
#: base, whose two scale-1 blocks widen the scale-0 halo from 11 to 13, it did not pay.
#: base's pixel rows at scales 2 and 3 (128 and 256 channels) took 0.77x the time of tiles
#: of 8 there (2 threads); at tiny's 32 and 64 channels rows lose to tiles.
PRESET_PRUNING: dict[str, PruningConfig] = {
    "tiny": PruningConfig(),
    "base": PruningConfig(tiles=(48, 16, 1, 1), dense_above=0.45, blocks_per_gather=1),
}


@dataclass(frozen=True)
class PruningOptions:
    """What a user set of a ``PruningConfig``; the rest comes from the model's preset."""

    tiles: tuple[int, ...] | None = None
    dense_above: float | None = None
    blocks_per_gather: int | None = None

    def resolve(self, preset: str) -> PruningConfig:
        """The preset's ``PruningConfig`` (tiny's for custom models) with these options over it."""
        base = PRESET_PRUNING.get(preset, PRESET_PRUNING["tiny"])
        chosen = {name: value for name, value in vars(self).items() if value is not None}
        return dataclasses.replace(base, **chosen)


def masked_gather(dense: Tensor, tiles: Tensor, tile: int, halo: int) -> Tensor:
    return torch.ops.m2ae.masked_gather(dense, tiles, tile, halo)


def masked_scatter(base: Tensor, values: Tensor, tiles: Tensor) -> Tensor:
    return torch.ops.m2ae.masked_scatter(base, values, tiles)


def tile_map(mask: Tensor, tile: int) -> Tensor:
    """[N,1,rows,cols] 0/1: which tiles of side ``tile`` hold a masked pixel."""
    return F.max_pool2d(mask, tile, stride=tile, ceil_mode=True)


def active_tiles(mask: Tensor, tile: int) -> Tensor:
    """Ids of the active tiles (``n * rows * cols + ty * cols + tx``), int32, ascending."""
    return torch.nonzero(tile_map(mask, tile).reshape(-1) > 0.5).reshape(-1).to(torch.int32)


def _inside_axis(cell: Tensor, tile: int, halo: int, limit: Tensor) -> Tensor:
    """[B, S] bool: which of the tile's S positions along one axis lie in [0, limit)."""
    positions = cell.unsqueeze(1) * tile - halo + torch.arange(tile + 2 * halo, device=cell.device)
    return (positions >= 0) & (positions < limit)


def tile_cells(tiles: Tensor, like: Tensor, tile: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(image, ty, tx) of each tile id (int64) and the grid's ``rows`` and ``cols``, on the tile
    grid of ``like`` [N,C,H,W]; its sizes are read as tensors so the exported graph keeps
    H and W dynamic."""
    rows = (like.shape[2] + tile - 1) // tile
    cols = (like.shape[3] + tile - 1) // tile
    ids = tiles.long()
    return ids // (rows * cols), (ids // cols) % rows, ids % cols, rows, cols


def tile_inside(tiles: Tensor, like: Tensor, tile: int, halo: int) -> Tensor:
    """[B, 1, S, S] float: 1 where a gathered tile pixel lies inside the image ``like`` [N,C,H,W].

    Computed from the tile ids alone (no gather).
    """
    _, ty, tx, _, _ = tile_cells(tiles, like, tile)
    inside_y = _inside_axis(ty, tile, halo, like.shape[2])
    inside_x = _inside_axis(tx, tile, halo, like.shape[3])
    return (inside_y.unsqueeze(2) & inside_x.unsqueeze(1)).unsqueeze(1).to(like.dtype)


def _coarse_halo(tile: int, halo: int, factor: int) -> int:
    """Coarse pixels beyond a tile (side ``tile // factor`` at the coarse scale) that a
    ``factor``-times bilinear upsampling (half-pixel) reads for the tile and ``halo``."""
    first = math.floor((0.5 - halo) / factor - 0.5)
    last = math.floor((tile + halo - 0.5) / factor - 0.5) + 1
    return max(-first, last - (tile // factor - 1), 0)


def upsampled_gather(coarse: Tensor, tiles: Tensor, tile: int, halo: int, factor: int) -> Tensor:
    """``masked_gather(upsample(coarse), tiles, tile, halo)``, computed at the coarse scale.

    ``upsample`` is the bilinear (half-pixel) resize by ``factor`` that ``guide_at_scale``
    does, which clamps at the image border. The coarse map is edge-padded by whole tiles
    (so that clamp becomes real pixels and the tile grid stays aligned: the ids move by the
    padding), the coarse tiles are gathered with the halo the resize reads, upsampled,
    and cropped. Equal to the dense form inside the image up to float rounding; beyond
    the image the values differ (the dense gather zero-fills), and no masked block reads
    them there (its hidden map is zeroed outside the image and its mask is 0). This moves
    1/factor^2 of the data: the full-resolution guide is never built.
    """
    coarse_tile = tile // factor
    coarse_halo = _coarse_halo(tile, halo, factor)
    pad_tiles = -(-coarse_halo // coarse_tile)
    padded = F.pad(coarse, [pad_tiles * coarse_tile] * 4, mode="replicate")
    image, ty, tx, rows, cols = tile_cells(tiles, coarse, coarse_tile)
    padded_cols = cols + 2 * pad_tiles
    moved = (image * (rows + 2 * pad_tiles) + ty + pad_tiles) * padded_cols + tx + pad_tiles
    window = masked_gather(padded, moved.to(torch.int32), coarse_tile, coarse_halo)
    fine = F.interpolate(window, scale_factor=float(factor), mode="bilinear", align_corners=False)
    start, size = factor * coarse_halo - halo, tile + 2 * halo
    return fine[..., start : start + size, start : start + size]


class GuideTiles:
    """The motion guide as each scale's tiles read it.

    The guide lives at 1/4 resolution (``HEAD_STRIDE``); scales 0 and 1 read it upsampled,
    so their tiles come from ``upsampled_gather`` of the 1/4 map; deeper scales gather
    from ``guide_at_scale`` maps built once.
    """

    def __init__(self, guide: Tensor, num_scales: int) -> None:
        self.coarse_scale = int(math.log2(HEAD_STRIDE))
        self.coarse = guide
        self.deep = {s: guide_at_scale(guide, s) for s in range(self.coarse_scale, num_scales)}

    def gather(self, scale: int, tiles: Tensor, tile: int, halo: int) -> Tensor:
        if scale in self.deep:
            return masked_gather(self.deep[scale], tiles, tile, halo)
        return upsampled_gather(self.coarse, tiles, tile, halo, 2 ** (self.coarse_scale - scale))

    def dense(self, scale: int) -> Tensor:
        """The whole guide map at ``scale`` (what a ``RowStage`` reads)."""
        return self.deep[scale] if scale in self.deep else guide_at_scale(self.coarse, scale)


def run_blocks(blocks: nn.ModuleList, x: Tensor, mask: Tensor, guide: Tensor, inside: Tensor) -> Tensor:
    """Masked residual blocks on a batch of tiles (features 0 beyond the image).

    Each block crops the two rings its convs spoil as it goes (``residual(trim=True)``),
    so every conv runs on just the extent later layers still read: the result is
    ``BLOCK_HALO * len(blocks)`` rings smaller than ``x``.
    """
    for block in blocks:
        x = centre(x, BLOCK_HALO) + centre(mask, BLOCK_HALO) * block.residual(x, guide, inside, trim=True)
        mask, guide, inside = (centre(t, BLOCK_HALO) for t in (mask, guide, inside))
    return x


class TileStage(nn.Module):
    """The masked blocks of one scale >= 1, in groups of at most ``blocks_per_gather``:
    each group gathers the active tiles, runs, and scatters once."""

    def __init__(self, blocks: nn.ModuleList, scale: int, tile: int, blocks_per_gather: int) -> None:
        super().__init__()
        self.groups = nn.ModuleList(
            nn.ModuleList(blocks[i : i + blocks_per_gather]) for i in range(0, len(blocks), blocks_per_gather)
        )
        self.scale = scale
        self.tile = tile

    def forward(self, x: Tensor, guides: GuideTiles, mask: Tensor, tiles: Tensor) -> Tensor:
        for group in self.groups:
            halo = BLOCK_HALO * len(group)
            x_t, m_t = (masked_gather(dense, tiles, self.tile, halo) for dense in (x, mask))
            g_t = guides.gather(self.scale, tiles, self.tile, halo)
            inside = tile_inside(tiles, mask, self.tile, halo)
            x = masked_scatter(x, run_blocks(group, x_t, m_t, g_t, inside), tiles)
        return x


class PrunedBody(nn.Module):
    """The restoration body on active tiles: ``(image, mask) -> restored``.

    Scales >= 1 keep dense maps and run their stages as ``TileStage``s. Scale 0 builds
    no full-resolution feature map at all, since the output changes only inside
    scale-0 tiles:

    * its encoder stage runs on image tiles with a halo wide enough for everything
      scale 0 does later: stem, encoder blocks, and a ring of exact features (kept aside
      as the skip: the last stage's halo; and, doubled, the fused scale-1 encoder's
      halo). The scale-1 map starts as ``stem_then_down(image)`` (one 4x4 stride-2 conv)
      with the down layer of the updated tile centres written over it;
    * with ``fused_scale1`` (scale-1 tile side = half the scale-0 side), the scale-1
      encoder runs on the down layer of those tiles, ring included, before that write:
      its active tiles are the scale-0 ones (``m_1`` is a max-pool of ``m_0``), its mask
      tiles a max-pool of the scale-0 mask tiles, so it gathers only its guide;
    * its decoder stage runs on the skip tiles plus the up layer (a 2x2 stride-2
      transposed conv, one scale-1 pixel per output pixel) of the matching scale-1
      tiles (half the side and half the halo), then the 3x3 output projection, and
      writes ``blurred + m * proj(x)`` into the image.
    """

    def __init__(self, deployed: M2AENet, pruning: PruningConfig) -> None:
        super().__init__()
        config = deployed.config
        self.num_scales = config.num_scales
        self.tiles = [pruning.tile(s) for s in range(config.num_scales)]
        # Scale-0 tiles are halved at scale 1, and (with a scale-1 decoder stage) again at scale 2.
        step = 2 if self.num_scales == 2 else 4
        if self.tiles[0] % step:
            raise ValueError(f"the scale-0 tile side must be a multiple of {step} (it is halved at each deeper "
                             f"scale that the output tiles reach), got {self.tiles[0]}")
        if self.tiles[1] % 2 and self.tiles[1] != 1:
            raise ValueError(f"the scale-1 tile side must be even (its guide tiles are gathered at half that side "
                             f"and upsampled) or 1 (pixel rows), got {self.tiles[1]}")
        self.motion = deployed.motion
        self.stem = deployed.stem
        self.stem_down = stem_then_down(deployed.stem, deployed.downs[0])
        self.downs = deployed.downs
        self.ups = deployed.ups
        self.first_blocks = deployed.encoder[0]
        self.last_blocks = deployed.decoder[0]
        group = pruning.blocks_per_gather
        # Scale 1 at half the scale-0 side runs on the scale-0 tiles: its input tiles are the
        # down layer of the scale-0 tiles (their ring included), so it needs no gather.
        self.fused_scale1 = 2 * self.tiles[1] == self.tiles[0]
        first_stage = 2 if self.fused_scale1 else 1
        self.encoder = nn.ModuleList(
            self._stage(deployed.encoder[s], s, group) for s in range(first_stage, self.num_scales)
        )
        self.scale1_encoder = deployed.encoder[1] if self.fused_scale1 else nn.ModuleList()
        # Decoder stages at scales >= 2 keep dense maps; scale 1's runs on the output tiles.
        self.decoder = nn.ModuleList(
            self._stage(deployed.decoder[s], s, group) for s in range(2, self.num_scales - 1)
        )
        self.scale1_blocks = deployed.decoder[1] if self.num_scales > 2 else nn.ModuleList()
        self.proj = deployed.proj
        # The last stage's blocks and the 3x3 projection, rounded up to whole scale-1 pixels.
        self.last_halo = _even(BLOCK_HALO * len(self.last_blocks) + 1)
        # The scale-1 encoder's halo, in scale-1 pixels, when it runs on the scale-0 tiles.
        self.scale1_encoder_halo = BLOCK_HALO * len(self.scale1_encoder)
        # The ring of exact scale-0 features the first stage leaves: the last stage's halo
        # (the skip) and, doubled, the fused scale-1 encoder's.
        self.first_ring = max(self.last_halo, 2 * self.scale1_encoder_halo)
        # The first stage's tiles serve everything at scale 0: stem (1) + its blocks + that ring.
        self.first_halo = 1 + BLOCK_HALO * len(self.first_blocks) + self.first_ring
        # Scale 1's output tiles: what the last stage's up layer reads, plus scale 1's blocks.
        self.scale1_halo = _even(self.last_halo // 2 + BLOCK_HALO * len(self.scale1_blocks))

    def _stage(self, blocks: nn.ModuleList, scale: int, blocks_per_gather: int) -> nn.Module:
        """The blocks of a scale >= 1 with their own tiles: pixel rows for a tile side of 1."""
        if self.tiles[scale] == 1:
            return RowStage(blocks, scale)
        return TileStage(blocks, scale, self.tiles[scale], blocks_per_gather)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        masks = [scale_mask(mask, s) for s in range(self.num_scales)]
        guides = GuideTiles(self.motion.guide(image), self.num_scales)
        tiles = {s: active_tiles(masks[s], self.tiles[s]) for s in range(self.num_scales)
                 if (s != 1 or not self.fused_scale1) and (s == 0 or self.tiles[s] > 1)}

        def run(stage: nn.Module, x: Tensor) -> Tensor:
            if isinstance(stage, RowStage):
                return stage(x, guides.dense(stage.scale), masks[stage.scale])
            return stage(x, guides, masks[stage.scale], tiles[stage.scale])

        tile0, halo0, last_halo, ring = self.tiles[0], self.first_halo, self.last_halo, self.first_ring

        def gather0(dense: Tensor) -> Tensor:
            return masked_gather(dense, tiles[0], tile0, halo0)

        # Scale 0, encoder: image tiles -> stem -> blocks. Beyond the image the stem's
        # bias is no zero padding: ``inside`` restores it; the blocks keep it (m is 0 there).
        # x0 keeps an exact ring of ``ring`` pixels; the stem's spoilt ring goes at once.
        blurred, m0, g0 = gather0(image), gather0(masks[0]), guides.gather(0, tiles[0], tile0, halo0)
        inside0 = tile_inside(tiles[0], mask, tile0, halo0)
        stem = valid_conv(self.stem, blurred) * centre(inside0, 1)
        x0 = run_blocks(self.first_blocks, stem, *(centre(t, 1) for t in (m0, g0, inside0)))
        if self.fused_scale1:
            # Scale 1, encoder, on the scale-0 tiles: the down layer of x0 and its ring.
            enc_halo = self.scale1_encoder_halo
            enc_inside = tile_inside(tiles[0], masks[1], tile0 // 2, enc_halo)
            enc_x = self.downs[0](centre(x0, ring - 2 * enc_halo)) * enc_inside
            enc_m = F.max_pool2d(centre(m0, halo0 - 2 * enc_halo), 2)
            enc_x = run_blocks(self.scale1_encoder, enc_x, enc_m, guides.gather(1, tiles[0], tile0 // 2, enc_halo),
                               enc_inside)
            x = masked_scatter(self.stem_down(image), enc_x, tiles[0])
        else:
            x = masked_scatter(self.stem_down(image), self.downs[0](centre(x0, ring)), tiles[0])
        skips = []
        for stage in self.encoder:
            if stage.scale > 1:
                skips.append(x)
                x = self.downs[stage.scale - 1](x)
            x = run(stage, x)
        for s in reversed(range(2, self.num_scales - 1)):
            x = run(self.decoder[s - 2], self.ups[s](x) + skips[s - 1])

        # Scale 1 on the output tiles (side tile0/2): only they reach the output.
        if self.num_scales == 2:
            x1 = masked_gather(x, tiles[0], tile0 // 2, last_halo // 2)
        else:
            halo1 = self.scale1_halo

            def gather1(dense: Tensor) -> Tensor:
                return masked_gather(dense, tiles[0], tile0 // 2, halo1)

            inside1 = tile_inside(tiles[0], masks[1], tile0 // 2, halo1)
            up = self.ups[1](masked_gather(x, tiles[0], tile0 // 4, halo1 // 2))
            x1 = run_blocks(self.scale1_blocks, (up + gather1(skips[0])) * inside1, gather1(masks[1]),
                            guides.gather(1, tiles[0], tile0 // 2, halo1), inside1)
            x1 = centre(x1, halo1 - BLOCK_HALO * len(self.scale1_blocks) - last_halo // 2)

        # Scale 0, decoder: skip tiles + up layer of the scale-1 tiles -> blocks -> projection.
        rings = halo0 - last_halo
        inside, m = centre(inside0, rings), centre(m0, rings)
        x = (self.ups[0](x1) + centre(x0, ring - last_halo)) * inside
        x = run_blocks(self.last_blocks, x, m, centre(g0, rings), inside)
        delta = centre(valid_conv(self.proj, x), last_halo - BLOCK_HALO * len(self.last_blocks) - 1)
        return masked_scatter(image, centre(blurred, halo0) + centre(m, last_halo) * delta, tiles[0])


def _even(halo: int) -> int:
    """``halo`` rounded up to even: a halo of whole pixels one scale deeper."""
    return halo + halo % 2


class DenseBody(nn.Module):
    """The dense-masked body of the deployed network: ``(image, mask) -> restored``."""

    def __init__(self, deployed: M2AENet) -> None:
        super().__init__()
        self.model = deployed

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.model.restore(image, mask, self.model.motion.guide(image))


class DenseGraph(nn.Module):
    """The folded dense-masked network with the export I/O: (image[, mask]) -> (restored, mask).

    ``model`` is the trained network or already its ``deploy_form``."""

    def __init__(self, model: M2AENet) -> None:
        super().__init__()
        self.model = deploy_form(model)

    def forward(self, image: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self.model(image, gate="pred" if mask is None else mask)
        return out.restored, out.mask


class MaskHead(nn.Module):
    """The inference mask of the deployed network: ``image -> mask`` (0/1, [N,1,H,W])."""

    def __init__(self, deployed: M2AENet) -> None:
        super().__init__()
        self.mask_head = deployed.mask_head
        self.threshold = deployed.config.threshold
        self.dilation = deployed.config.mask_dilation
        self.opening = deployed.config.mask_opening

    def forward(self, image: Tensor) -> Tensor:
        return hard_mask(self.mask_head(image), self.threshold, self.dilation, self.opening)


def tile_occupancy(mask: Tensor, tile: int) -> Tensor:
    """Share of scale-0 tiles holding a masked pixel: what the pruned body's cost follows."""
    return tile_map(mask, tile).mean()


class PrunedM2AE(nn.Module):
    """Inference-only pruned M2AENet; ``forward(image[, mask]) -> (restored, mask)``.

    ``model`` is the trained network or already its ``deploy_form``."""

    def __init__(self, model: M2AENet, pruning: PruningConfig | None = None) -> None:
        super().__init__()
        deployed = deploy_form(model)
        self.config = deployed.config
        self.pruning = pruning or PruningOptions().resolve(self.config.preset)
        self.mask_head = MaskHead(deployed)
        self.pruned = PrunedBody(deployed, self.pruning)
        self.dense = DenseBody(deployed)

    def forward(self, image: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if mask is None:
            mask = self.mask_head(image)
        if not bool(mask.any()):
            return image.clone(), mask
        if float(tile_occupancy(mask, self.pruning.tile(0))) > self.pruning.dense_above:
            return self.dense(image, mask), mask
        return self.pruned(image, mask), mask


def checkpoint_info(loaded: LoadedCheckpoint, variant: str, pruning: PruningConfig | None, precision: str = "fp32",
                    mask_input: bool = False, opset: int | None = None) -> ModelInfo:
    """What a model made from ``loaded`` records about itself: the ONNX export's metadata
    (``variant`` plugin/portable/dense) and the torch engine's (pruned/dense) alike.
    ``pruning`` is None for the dense variant."""
    config = loaded.config
    return ModelInfo(
        multiple=config.multiple,
        min_size=config.min_size,
        variant=variant,
        precision=precision,
        mask_input=mask_input,
        preset=config.preset,
        # the halo tiled inference needs (m2ae.runtime.tiling), known without the checkpoint
        receptive_field=receptive_field(config),
        threshold=config.threshold,
        mask_dilation=config.mask_dilation,
        mask_opening=config.mask_opening,
        opset=opset,
        tiles=None if pruning is None else tuple(pruning.tile(s) for s in range(config.num_scales)),
        dense_above=None if pruning is None else pruning.dense_above,
        blocks_per_gather=None if pruning is None else pruning.blocks_per_gather,
        version=__version__,
        checkpoint=loaded.path.name,
        checkpoint_sha256=loaded.sha256,
    )
