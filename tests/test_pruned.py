"""The pruned forward equals the dense-masked forward for any mask; its index tables are sound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import perturbed_model

from m2ae.export.pruned import PrunedM2AE, build_tables
from m2ae.export.reparam import NEIGHBOUR_OFFSETS, fold_branches
from m2ae.model.config import M2AEConfig
from m2ae.model.network import M2AENet, scale_mask

TOL = 1e-4
SMALL = M2AEConfig(width=4, num_scales=3, enc_blocks=(1, 1, 2), dec_blocks=(1, 1), motion_channels=4, mask_channels=4)
#: no blocks at some stages, two scales, a dilated predicted mask
SPARSE = M2AEConfig(
    width=4, num_scales=2, enc_blocks=(0, 2), dec_blocks=(0,), motion_channels=4, mask_channels=4, mask_dilation=1
)


@pytest.fixture(scope="module")
def nets() -> tuple[M2AENet, M2AENet, PrunedM2AE]:
    """(training-form model, folded dense reference, pruned)"""
    model = perturbed_model(SMALL, seed=0)
    return model, fold_branches(model), PrunedM2AE(model)


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
    folded, pruned = fold_branches(model), PrunedM2AE(model)
    image = random_image(2, 28, 36, seed=3)
    with torch.no_grad():
        reference = folded(image, gate="pred")
        restored, mask = pruned(image)
    assert torch.equal(mask, reference.mask)
    assert (restored - reference.restored).abs().max().item() <= TOL
    given = random_mask(2, 28, 36, 0.2, seed=4)
    check_pruned((model, folded, pruned), image, given)


# ---- build_tables ---------------------------------------------------------------------


def expected_tables(mask: np.ndarray) -> dict[str, np.ndarray]:
    """The tables from their definition, pixel by pixel (independent of build_tables)."""
    n, _, height, width = mask.shape
    in_a = mask[:, 0] > 0.5
    in_d = np.zeros_like(in_a)
    for dy, dx in NEIGHBOUR_OFFSETS:
        shifted = np.zeros_like(in_a)
        ys, yd = slice(max(dy, 0), height + min(dy, 0)), slice(max(-dy, 0), height + min(-dy, 0))
        xs, xd = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width + min(-dx, 0))
        shifted[:, yd, xd] = in_a[:, ys, xs]
        in_d |= shifted
    flat_a, flat_d = in_a.reshape(-1), in_d.reshape(-1)
    rank_a = np.cumsum(flat_a) - 1
    rank_d = np.cumsum(flat_d) - 1
    pixels_a, pixels_d = np.flatnonzero(flat_a), np.flatnonzero(flat_d)

    def neighbours(pixels: np.ndarray, member: np.ndarray, rank: np.ndarray, dense_fallback: bool) -> np.ndarray:
        table = np.full((9, len(pixels)), -1, dtype=np.int64)
        for k, p in enumerate(pixels):
            b, rem = divmod(int(p), height * width)
            y, x = divmod(rem, width)
            for t, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
                yy, xx = y + dy, x + dx
                if not (0 <= yy < height and 0 <= xx < width):
                    continue
                q = b * height * width + yy * width + xx
                if member[q]:
                    table[t, k] = rank[q]
                elif dense_fallback:
                    table[t, k] = -2 - q
                else:
                    table[t, k] = -1000  # a neighbour of A outside D: impossible
        return table

    return {
        "index_a": pixels_a,
        "pick_a": (-2 - pixels_a)[None],
        "pick_d": (-2 - pixels_d)[None],
        "d_from_a": neighbours(pixels_d, flat_a, rank_a, True),
        "a_from_d": neighbours(pixels_a, flat_d, rank_d, False),
        "a_from_a": neighbours(pixels_a, flat_a, rank_a, True),
    }


MASK_CASES = {
    "empty": np.zeros((1, 1, 5, 7)),
    "full": np.ones((1, 1, 5, 7)),
    "corner": np.pad(np.ones((1, 1, 1, 1)), ((0, 0), (0, 0), (0, 4), (0, 6))),
    "random": (np.random.default_rng(0).random((2, 1, 6, 5)) < 0.3),
    "batch_empty_full": np.concatenate([np.zeros((1, 1, 4, 6)), np.ones((1, 1, 4, 6))]),
    "edges": np.pad(np.zeros((1, 1, 3, 5)), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=1),
}


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_build_tables_matches_definition(case: str) -> None:
    mask = MASK_CASES[case].astype(np.float32)
    tables = build_tables(torch.from_numpy(mask))
    expected = expected_tables(mask)
    for name, want in expected.items():
        got = getattr(tables, name)
        assert got.dtype == torch.int32, name
        np.testing.assert_array_equal(got.numpy().reshape(want.shape), want, err_msg=name)
        assert got.shape == want.shape, name


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.3, 1.0])
@pytest.mark.parametrize("scale", [0, 1, 2])
def test_build_tables_invariants(fraction: float, scale: int) -> None:
    gen = torch.Generator().manual_seed(int(fraction * 100) + scale)
    full = (torch.rand(2, 1, 36, 44, generator=gen) < fraction).float()
    full[0, 0, 0, 0] = 1.0 if fraction > 0 else 0.0  # a corner pixel when not empty
    mask = scale_mask(full, scale)
    tables = build_tables(mask)
    num_pixels = mask.numel()
    k_a, k_d = tables.index_a.numel(), tables.pick_d.shape[1]
    assert k_a == int(mask.sum().item())
    assert k_a <= k_d <= num_pixels
    index_a = tables.index_a.long()
    assert torch.all(index_a[1:] > index_a[:-1]), "index_a must be strictly increasing"
    assert torch.all(mask.reshape(-1)[index_a] == 1)
    assert torch.equal(tables.pick_a.reshape(-1).long(), -2 - index_a)
    pick_d = -2 - tables.pick_d.reshape(-1).long()
    assert torch.all(pick_d[1:] > pick_d[:-1]) and (k_d == 0 or (pick_d.min() >= 0 and pick_d.max() < num_pixels))
    assert set(index_a.tolist()) <= set(pick_d.tolist())
    for name, tokens in (("d_from_a", k_a), ("a_from_a", k_a), ("a_from_d", k_d)):
        table = getattr(tables, name).long()
        assert table.shape[0] == 9, name
        assert table.shape[1] == (k_d if name == "d_from_a" else k_a), name
        assert torch.all(table < tokens), name
        dense = -2 - table[table <= -2]
        assert torch.all((dense >= 0) & (dense < num_pixels)), name
        # A dense read never addresses a pixel of A: those live in the tokens.
        assert not torch.isin(dense, index_a).any(), name
    # Neighbours of A are all in D or outside the image.
    assert torch.all(tables.a_from_d >= -1)
    # The centre tap of a pixel is itself.
    assert torch.equal(tables.a_from_a[4].long(), torch.arange(k_a))
