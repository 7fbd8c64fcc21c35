"""The pruned forward equals the dense-masked forward for any mask, on every path it takes
(skip, tiles, dense), for any tiling; its tile ids and in-image indicators are sound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import perturbed_model

from m2ae.model.config import M2AEConfig
from m2ae.model.heads import guide_at_scale
from m2ae.model.network import M2AENet
from m2ae.model.pixel_rows import RowStage
from m2ae.model.pruned import (
    DenseGraph,
    PrunedBody,
    PrunedM2AE,
    PruningConfig,
    active_tiles,
    masked_gather,
    tile_inside,
    tile_occupancy,
    upsampled_gather,
)
from m2ae.model.reparam import deploy_form, fold_branches

TOL = 1e-4
#: the tiled body for every non-empty mask (no switch to the dense body)
TILES_ALWAYS = PruningConfig(dense_above=1.0)
SMALL = M2AEConfig(width=4, num_scales=3, enc_blocks=(1, 1, 2), dec_blocks=(1, 1), motion_channels=4, mask_channels=4)
#: no blocks at some stages, two scales, a dilated predicted mask
SPARSE = M2AEConfig(
    width=4, num_scales=2, enc_blocks=(0, 2), dec_blocks=(0,), motion_channels=4, mask_channels=4, mask_dilation=1
)


@pytest.fixture(scope="module")
def nets() -> tuple[M2AENet, M2AENet, PrunedM2AE]:
    """(training-form model, folded dense reference, pruned on tiles whatever the mask)"""
    model = perturbed_model(SMALL, seed=0)
    return model, fold_branches(model), PrunedM2AE(model, TILES_ALWAYS)


def random_image(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def random_mask(n: int, height: int, width: int, fraction: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, height, width, generator=gen) < fraction).float()


def edge_mask(height: int, width: int, where: str) -> torch.Tensor:
    mask = torch.zeros(1, 1, height, width)
    if where == "corners":
        mask[..., 0, 0] = mask[..., 0, -1] = mask[..., -1, 0] = mask[..., -1, -1] = 1.0
    elif where == "top":
        mask[..., 0, :] = 1.0
    elif where == "bottom":
        mask[..., -1, :] = 1.0
    elif where == "left":
        mask[..., :, 0] = 1.0
    elif where == "right":
        mask[..., :, -1] = 1.0
    elif where == "frame":
        mask[..., :2, :] = mask[..., -2:, :] = mask[..., :, :2] = mask[..., :, -2:] = 1.0
    return mask


def check_pruned(nets: tuple[M2AENet, M2AENet, PrunedM2AE], image: torch.Tensor, mask: torch.Tensor) -> None:
    model, folded, pruned = nets
    with torch.no_grad():
        reference = folded(image, gate=mask)
        restored, used = pruned(image, mask)
        unfolded = model(image, gate=mask).restored
    assert torch.equal(used, mask)
    assert restored.shape == image.shape
    assert (restored - reference.restored).abs().max().item() <= TOL
    assert (restored - unfolded).abs().max().item() <= TOL
    sharp = (mask == 0).expand_as(image)
    assert torch.equal(restored[sharp], image[sharp]), "sharp pixels must pass through bit for bit"
    if mask.any():
        # The check is meaningful: the network changes the masked pixels noticeably.
        assert (restored - image).abs().max() > 1e-2


@pytest.mark.parametrize("height, width", [(32, 32), (36, 44), (20, 52)])
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 1.0])
def test_pruned_matches_dense_random_masks(nets, height: int, width: int, fraction: float) -> None:
    image = random_image(1, height, width, seed=height + width)
    mask = random_mask(1, height, width, fraction, seed=int(fraction * 100) + width)
    check_pruned(nets, image, mask)


@pytest.mark.parametrize("y, x", [(0, 0), (17, 21), (35, 43), (0, 43), (35, 0), (8, 8)])
def test_pruned_matches_dense_one_pixel(nets, y: int, x: int) -> None:
    mask = torch.zeros(1, 1, 36, 44)
    mask[..., y, x] = 1.0
    check_pruned(nets, random_image(1, 36, 44, seed=y * 50 + x), mask)


@pytest.mark.parametrize("where", ["corners", "top", "bottom", "left", "right", "frame"])
def test_pruned_matches_dense_border_masks(nets, where: str) -> None:
    check_pruned(nets, random_image(1, 36, 44, seed=7), edge_mask(36, 44, where))


def test_pruned_matches_dense_batch_of_two(nets) -> None:
    image = random_image(2, 36, 44, seed=9)
    different = torch.cat([random_mask(1, 36, 44, 0.1, seed=1), random_mask(1, 36, 44, 0.4, seed=2)])
    check_pruned(nets, image, different)
    empty_full = torch.cat([torch.zeros(1, 1, 36, 44), torch.ones(1, 1, 36, 44)])
    check_pruned(nets, image, empty_full)
    check_pruned(nets, image, empty_full.flip(0))
    # Batch entries do not leak into each other: each equals its own single-image run.
    _, _, pruned = nets
    with torch.no_grad():
        batched, _ = pruned(image, different)
        for i in range(2):
            single, _ = pruned(image[i : i + 1], different[i : i + 1])
            assert (batched[i : i + 1] - single).abs().max().item() <= TOL


@pytest.mark.parametrize("shape", [(1, 32, 32), (2, 36, 44), (1, 20, 52)])
def test_pruned_matches_dense_predicted_mask(nets, shape: tuple[int, int, int]) -> None:
    model, folded, pruned = nets
    image = random_image(*shape, seed=sum(shape))
    with torch.no_grad():
        reference = folded(image, gate="pred")
        restored, mask = pruned(image)
    assert 0.0 < mask.mean().item() < 1.0, "the predicted mask should be neither empty nor full"
    assert torch.equal(mask, reference.mask)
    assert (restored - reference.restored).abs().max().item() <= TOL
    sharp = (mask == 0).expand_as(image)
    assert torch.equal(restored[sharp], image[sharp])


def test_pruned_sparse_config_predicted_and_given_masks() -> None:
    """Stages without blocks, two scales, and a dilated predicted mask."""
    model = perturbed_model(SPARSE, seed=1)
    folded, pruned = fold_branches(model), PrunedM2AE(model, TILES_ALWAYS)
    image = random_image(2, 28, 36, seed=3)
    with torch.no_grad():
        reference = folded(image, gate="pred")
        restored, mask = pruned(image)
    assert torch.equal(mask, reference.mask)
    assert (restored - reference.restored).abs().max().item() <= TOL
    given = random_mask(2, 28, 36, 0.2, seed=4)
    check_pruned((model, folded, pruned), image, given)


@pytest.mark.parametrize("tiles", [(4,), (4, 4, 2), (8, 4), (12, 16, 3), (32,), (64, 6), (8, 2, 5), (12, 6, 3), (16, 8, 8), (8, 4, 1), (4, 1)])
def test_pruned_matches_dense_for_any_tiling(nets, tiles: tuple[int, ...]) -> None:
    """Tiles smaller than the halo, larger than the map, not dividing H or W: all exact."""
    model, folded, _ = nets
    pruned = PrunedM2AE(model, PruningConfig(tiles=tiles, dense_above=1.0))
    image = random_image(2, 36, 44, seed=len(tiles))
    mask = random_mask(2, 36, 44, 0.03, seed=5)
    mask[1, 0, -1, -1] = 1.0  # a corner pixel, inside a partial tile for most sides
    check_pruned((model, folded, pruned), image, mask)


#: the base preset's shape (four scales, several blocks per stage) at test width
DEEP = M2AEConfig(width=4, num_scales=4, enc_blocks=(2, 2, 2, 4), dec_blocks=(2, 2, 2), motion_channels=4,
                  mask_channels=4)


@pytest.mark.parametrize("blocks_per_gather", [1, 3])
@pytest.mark.parametrize("tiles", [(16, 8, 8, 4), (8, 4, 2), (16, 8, 8, 1), (16, 8, 1)])
def test_pruned_matches_dense_with_several_blocks_per_stage(blocks_per_gather: int, tiles: tuple[int, ...]) -> None:
    """Each block trims its own rings: stages of several blocks, gathered together or one
    by one, still give the dense result, at borders and in a batch of two."""
    model = perturbed_model(DEEP, seed=2)
    pruned = PrunedM2AE(model, PruningConfig(tiles=tiles, dense_above=1.0, blocks_per_gather=blocks_per_gather))
    image = random_image(2, 48, 40, seed=11)
    mask = torch.cat([random_mask(1, 48, 40, 0.02, seed=6), edge_mask(48, 40, "frame")])
    check_pruned((model, fold_branches(model), pruned), image, mask)


def test_scale0_tile_that_does_not_halve_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        PrunedBody(deploy_form(perturbed_model(SMALL, seed=0)), PruningConfig(tiles=(6,)))
    with pytest.raises(ValueError, match="multiple of 2"):
        PrunedBody(deploy_form(perturbed_model(SPARSE, seed=0)), PruningConfig(tiles=(5,)))
    PrunedBody(deploy_form(perturbed_model(SPARSE, seed=0)), PruningConfig(tiles=(6,)))


def test_odd_scale1_tile_is_refused() -> None:
    """Scale 1 reads the 1/4-resolution guide through tiles of half its side."""
    with pytest.raises(ValueError, match="scale-1 tile side must be even"):
        PrunedBody(deploy_form(perturbed_model(SMALL, seed=0)), PruningConfig(tiles=(8, 3)))


def test_a_deployed_network_is_taken_as_it_is(nets) -> None:
    """The exporter deploys once and hands the result on: neither graph deploys it again,
    and each computes what it computes from the training-form network."""
    model, _, pruned = nets
    deployed = deploy_form(model)
    assert deploy_form(deployed) is deployed
    assert DenseGraph(deployed).model is deployed
    image, mask = random_image(1, 32, 40, seed=12), random_mask(1, 32, 40, 0.05, seed=12)
    with torch.no_grad():
        for taken, trained in ((DenseGraph(deployed), DenseGraph(model)), (PrunedM2AE(deployed, TILES_ALWAYS), pruned)):
            for gate in (mask, None):
                assert all(torch.equal(a, b) for a, b in zip(taken(image, gate), trained(image, gate)))


@pytest.mark.parametrize(("tiles", "dense_above"), [((), 0.5), ((0,), 0.5), ((16,), -0.1), ((16,), 1.5)])
def test_pruning_config_rejects_bad_values(tiles: tuple[int, ...], dense_above: float) -> None:
    with pytest.raises(ValueError):
        PruningConfig(tiles=tiles, dense_above=dense_above)


def test_forward_takes_skip_tiles_and_dense_paths(nets, monkeypatch: pytest.MonkeyPatch) -> None:
    """All sharp: no body runs and the image comes back. Above ``dense_above``: the dense
    body. Otherwise: the tiled body. Every path equals the dense-masked forward."""
    model, folded, _ = nets
    pruned = PrunedM2AE(model, PruningConfig(tiles=(8,), dense_above=0.5))
    calls: list[str] = []
    for name in ("pruned", "dense"):
        body = getattr(pruned, name)
        monkeypatch.setattr(body, "forward", lambda *a, _f=body.forward, _n=name: calls.append(_n) or _f(*a))
    image = random_image(1, 32, 32, seed=11)
    cases = {"skip": torch.zeros(1, 1, 32, 32), "pruned": torch.zeros(1, 1, 32, 32), "dense": torch.zeros(1, 1, 32, 32)}
    cases["pruned"][..., 3:6, 3:20] = 1.0  # 3 of 16 tiles
    cases["dense"][..., 3:6, :] = 1.0  # 4 tiles...
    cases["dense"][..., 20:30, 2:30] = 1.0  # ...and 8 more: 12 of 16 > 0.5
    for expected, mask in cases.items():
        calls.clear()
        check_pruned((model, folded, pruned), image, mask)
        assert calls == ([] if expected == "skip" else [expected])
    with torch.no_grad():
        restored, _ = pruned(image, cases["skip"])
    assert torch.equal(restored, image)


# ---- tile ids and in-image indicators ---------------------------------------------------


def expected_tile_ids(mask: np.ndarray, tile: int) -> np.ndarray:
    """Active tile ids from the definition, cell by cell."""
    n, _, height, width = mask.shape
    rows, cols = -(-height // tile), -(-width // tile)
    ids = [
        b * rows * cols + ty * cols + tx
        for b in range(n) for ty in range(rows) for tx in range(cols)
        if mask[b, 0, ty * tile : (ty + 1) * tile, tx * tile : (tx + 1) * tile].any()
    ]
    return np.array(ids, dtype=np.int64)


MASK_CASES = {
    "empty": np.zeros((1, 1, 5, 7)),
    "full": np.ones((1, 1, 5, 7)),
    "corner": np.pad(np.ones((1, 1, 1, 1)), ((0, 0), (0, 0), (0, 4), (0, 6))),
    "far_corner": np.pad(np.ones((1, 1, 1, 1)), ((0, 0), (0, 0), (4, 0), (6, 0))),
    "random": (np.random.default_rng(0).random((2, 1, 6, 5)) < 0.3),
    "batch_empty_full": np.concatenate([np.zeros((1, 1, 4, 6)), np.ones((1, 1, 4, 6))]),
    "edges": np.pad(np.zeros((1, 1, 3, 5)), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=1),
}


@pytest.mark.parametrize("tile", [1, 2, 3, 8])
@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_active_tiles_match_definition(case: str, tile: int) -> None:
    mask = MASK_CASES[case].astype(np.float32)
    got = active_tiles(torch.from_numpy(mask), tile)
    assert got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), expected_tile_ids(mask, tile))
    rows, cols = -(-mask.shape[2] // tile), -(-mask.shape[3] // tile)
    occupancy = float(tile_occupancy(torch.from_numpy(mask), tile))
    assert occupancy == pytest.approx(len(got) / (mask.shape[0] * rows * cols))


@pytest.mark.parametrize(("height", "width", "tile", "halo"), [(5, 7, 2, 1), (16, 16, 8, 3), (9, 4, 4, 0), (3, 3, 1, 5)])
def test_tile_inside_matches_definition(height: int, width: int, tile: int, halo: int) -> None:
    rows, cols = -(-height // tile), -(-width // tile)
    ids = torch.arange(2 * rows * cols, dtype=torch.int32)
    like = torch.zeros(2, 1, height, width)
    got = tile_inside(ids, like, tile, halo)
    size = tile + 2 * halo
    assert got.shape == (len(ids), 1, size, size)
    for b in range(len(ids)):
        ty, tx = (b % (rows * cols)) // cols, b % cols
        for i in range(size):
            for j in range(size):
                y, x = ty * tile - halo + i, tx * tile - halo + j
                assert got[b, 0, i, j].item() == float(0 <= y < height and 0 <= x < width)


@pytest.mark.parametrize(("height", "width", "tile", "halo", "scale"),
                         [(64, 64, 32, 7, 0), (36, 52, 8, 4, 0), (96, 80, 48, 11, 0), (20, 20, 16, 3, 1),
                          (40, 72, 16, 4, 1), (12, 8, 4, 9, 1)])
def test_upsampled_gather_matches_the_gather_of_the_upsampled_guide(height: int, width: int, tile: int, halo: int,
                                                                     scale: int) -> None:
    """Equal inside the image, whole tiles and partial ones at the far edges alike, a
    halo wider than the tile included; beyond the image the values are not used."""
    factor = 2 ** (2 - scale)
    coarse = torch.randn(2, 3, height // 4, width // 4, generator=torch.Generator().manual_seed(height + tile))
    fine = guide_at_scale(coarse, scale)
    rows, cols = -(-fine.shape[2] // tile), -(-fine.shape[3] // tile)
    ids = torch.arange(2 * rows * cols, dtype=torch.int32)[::3].contiguous()
    expected = masked_gather(fine, ids, tile, halo)
    got = upsampled_gather(coarse, ids, tile, halo, factor)
    assert got.shape == expected.shape
    inside = tile_inside(ids, fine, tile, halo)
    assert inside.sum() > 0
    assert ((got - expected) * inside).abs().max().item() <= 1e-6


ROW_MASKS = {
    "empty": torch.zeros(2, 1, 7, 9),
    "full": torch.ones(2, 1, 7, 9),
    "one pixel": torch.zeros(2, 1, 7, 9).index_put_((torch.tensor([1]), torch.tensor([0]), torch.tensor([3]),
                                                     torch.tensor([4])), torch.tensor(1.0)),
    "corners": edge_mask(7, 9, "corners").repeat(2, 1, 1, 1),
    "frame": torch.cat([edge_mask(7, 9, "frame"), torch.zeros(1, 1, 7, 9)]),
    "speckled": random_mask(2, 7, 9, 0.3, seed=8),
}


@pytest.mark.parametrize("case", sorted(ROW_MASKS))
def test_row_stage_matches_the_dense_blocks(case: str) -> None:
    """Pixel rows give each block's dense result under any mask: none, all, one pixel, the
    image border, odd sizes, a batch of two whose images differ."""
    deployed = deploy_form(perturbed_model(DEEP, seed=4))
    blocks, mask = deployed.encoder[3], ROW_MASKS[case]
    channels, guide_channels = blocks[0].conv1.out_channels, blocks[0].gamma.in_channels
    gen = torch.Generator().manual_seed(len(case))
    x = torch.randn(2, channels, 7, 9, generator=gen)
    guide = torch.randn(2, guide_channels, 7, 9, generator=gen)
    expected = x
    with torch.no_grad():
        for block in blocks:
            expected = block(expected, guide, mask)
        got = RowStage(blocks, scale=3)(x, guide, mask)
    assert (got - expected).abs().max().item() <= TOL
    assert torch.equal(got[mask.expand_as(x) == 0], x[mask.expand_as(x) == 0])
