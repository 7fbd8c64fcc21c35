"""Structural reparameterisation is exact: RepVGG folding and the gather form of 3x3 convs."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from m2ae.export.reparam import NEIGHBOUR_OFFSETS, fold_branches, gather_weight, pointwise_weight
from m2ae.model.config import M2AEConfig
from m2ae.model.layers import RepConv3x3
from m2ae.model.network import M2AENet
from m2ae.trt_plugins import reference
from m2ae.trt_plugins.torch_ops import masked_gather

TOL = 1e-5
SMALL = M2AEConfig(width=4, num_scales=3, enc_blocks=(1, 1, 2), dec_blocks=(1, 1), motion_channels=4, mask_channels=4)


def seeded(seed: int, factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` with its default init drawn from a fixed seed (global RNG left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


@torch.no_grad()
def randomise(module: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    """Perturb every parameter and every BN's running stats, so no branch is trivial."""
    gen = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.add_(scale * torch.randn(param.shape, generator=gen))
    for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.copy_(scale * torch.randn(bn.running_mean.shape, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=gen))
    return module.eval()


def zero_padded_table(n: int, height: int, width: int) -> np.ndarray:
    """[9, N*H*W] neighbours of every pixel as dense codes ``-2 - p``, -1 outside the image.

    Built independently of ``export.pruned.build_tables``, straight from the definition.
    """
    table = np.full((9, n * height * width), -1, dtype=np.int32)
    for t, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        for b in range(n):
            for y in range(height):
                for x in range(width):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < height and 0 <= xx < width:
                        table[t, b * height * width + y * width + x] = -2 - (b * height * width + yy * width + xx)
    return table


@pytest.mark.parametrize("cin, cout", [(4, 4), (3, 5), (6, 2)])
def test_fold_branches_per_conv(cin: int, cout: int) -> None:
    conv = randomise(seeded(cin, lambda: RepConv3x3(cin, cout, rep_branches=True)), seed=cin * 10 + cout)
    assert (conv.bn_id is not None) == (cin == cout)
    x = torch.randn(2, cin, 9, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = conv(x)
        weight, bias = conv.fused_weight_bias()
        folded = F.conv2d(x, weight, bias, padding=1)
        fused_module = conv.fused()(x)
    assert expected.abs().max() > 0.1  # the branches do contribute
    assert (folded - expected).abs().max().item() <= TOL
    assert (fused_module - expected).abs().max().item() <= TOL


def test_fold_branches_whole_network() -> None:
    # Moderate perturbation: values stay O(1), so 1e-5 is an absolute bound that means something.
    model = randomise(seeded(3, lambda: M2AENet(SMALL)), seed=3, scale=0.03)
    folded = fold_branches(model)
    assert not folded.config.rep_branches
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(2, 3, 20, 28, generator=gen)
    gate = (torch.rand(2, 1, 20, 28, generator=gen) > 0.6).float()
    with torch.no_grad():
        for g in (gate, "ones", "pred"):
            ref, out = model(image, gate=g), folded(image, gate=g)
            assert torch.equal(ref.mask, out.mask)
            assert ref.restored.abs().max() < 50
            assert (ref.restored - out.restored).abs().max().item() <= TOL
            if g is gate:
                # The output depends on the folded convs, not only on the input.
                assert (ref.restored - image).abs().max() > 1e-2


def test_fold_branches_leaves_the_source_untouched() -> None:
    model = randomise(seeded(5, lambda: M2AENet(SMALL)), seed=5)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_branches(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("n, height, width", [(1, 5, 7), (2, 4, 4), (1, 1, 6), (1, 9, 1), (2, 3, 5)])
@pytest.mark.parametrize("cin, cout", [(3, 4), (5, 2)])
def test_gather_form_equals_conv_everywhere(n: int, height: int, width: int, cin: int, cout: int) -> None:
    gen = torch.Generator().manual_seed(n * 100 + height * 10 + width + cin)
    conv = seeded(0, lambda: nn.Conv2d(cin, cout, 3, padding=1))
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    dense = torch.randn(n, cin, height, width, generator=gen)
    table_np = zero_padded_table(n, height, width)
    table = torch.from_numpy(table_np)
    weight, bias = gather_weight(conv)
    assert weight.shape == (cout, 9 * cin) and bias.shape == (cout, 1)
    gathered = masked_gather(dense, torch.zeros(cin, 0), table)
    np.testing.assert_array_equal(
        gathered.numpy(), reference.masked_gather(dense.numpy(), np.zeros((cin, 0), np.float32), table_np)
    )
    out = weight @ gathered + bias  # [Cout, N*H*W]
    with torch.no_grad():
        expected = conv(dense).permute(1, 0, 2, 3).reshape(cout, -1)
    assert (out - expected).abs().max().item() <= TOL


def test_gather_form_reads_tokens_like_dense_pixels() -> None:
    """Neighbours held as tokens (v >= 0) give the same conv as reading them from the map."""
    gen = torch.Generator().manual_seed(11)
    conv = seeded(1, lambda: nn.Conv2d(3, 4, 3, padding=1))
    dense = torch.randn(1, 3, 6, 5, generator=gen)
    table = torch.from_numpy(zero_padded_table(1, 6, 5))
    # Move pixels 0..9 (incl. the top-left corner) into tokens, with the dense map zeroed there.
    tokens = dense.reshape(3, -1)[:, :10].clone()
    hollow = dense.clone().reshape(3, -1)
    hollow[:, :10] = 0.0
    hollow = hollow.reshape(1, 3, 6, 5)
    token_table = torch.where((table <= -2) & (-2 - table < 10), -2 - table, table)
    weight, bias = gather_weight(conv)
    out = weight @ masked_gather(hollow, tokens, token_table) + bias
    with torch.no_grad():
        expected = conv(dense).reshape(4, -1)
    assert (out - expected).abs().max().item() <= TOL


def test_gather_and_pointwise_weight_reject_other_convs() -> None:
    with pytest.raises(ValueError):
        gather_weight(nn.Conv2d(3, 4, 3, padding=0))
    with pytest.raises(ValueError):
        gather_weight(nn.Conv2d(3, 4, 1))
    with pytest.raises(ValueError):
        pointwise_weight(nn.Conv2d(3, 4, 3, padding=1))
    conv = seeded(2, lambda: nn.Conv2d(3, 4, 1))
    weight, bias = pointwise_weight(conv)
    x = torch.randn(1, 3, 2, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = conv(x).reshape(4, -1)
    assert ((weight @ x.reshape(3, -1) + bias) - expected).abs().max().item() <= TOL
