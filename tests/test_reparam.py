"""Structural reparameterisation is exact: RepVGG folding and the gather form of 3x3 convs."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from m2ae.model.config import M2AEConfig
from m2ae.model.layers import MaskedResBlock, RepConv3x3
from m2ae.model.network import M2AENet
from m2ae.model.reparam import deploy_form, fold_branches

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


@pytest.mark.parametrize("cin, cout", [(4, 4), (3, 5), (6, 2)])
def test_fold_branches_per_conv(cin: int, cout: int) -> None:
    conv = randomise(seeded(cin, lambda: RepConv3x3(cin, cout, rep_branches=True)), seed=cin * 10 + cout)
    assert (conv.bn_id is not None) == (cin == cout)
    x = torch.randn(2, cin, 9, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = conv(x)
        weight, bias = conv.fused_weight_bias()
        folded = F.conv2d(x, weight, bias, padding=1)
    assert expected.abs().max() > 0.1  # the branches do contribute
    assert (folded - expected).abs().max().item() <= TOL


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


def test_fold_gamma_offset_keeps_the_block() -> None:
    block = randomise(seeded(6, lambda: MaskedResBlock(4, 3, rep_branches=False)), seed=6)
    gen = torch.Generator().manual_seed(7)
    x, guide = torch.randn(2, 4, 9, 7, generator=gen), torch.randn(2, 3, 9, 7, generator=gen)
    mask = (torch.rand(2, 1, 9, 7, generator=gen) > 0.5).float()
    with torch.no_grad():
        expected = block(x, guide, mask)
        bias = block.gamma.bias.clone()
        block.fold_gamma_offset()
        folded = block(x, guide, mask)
    assert block.gamma_offset == 0.0 and torch.allclose(block.gamma.bias, bias + 1.0)
    assert (expected - x).abs().max() > 0.1  # the modulated residual does contribute
    assert (folded - expected).abs().max().item() <= TOL


def test_deploy_form_is_the_same_network() -> None:
    model = randomise(seeded(8, lambda: M2AENet(SMALL)), seed=8, scale=0.03)
    deployed = deploy_form(model)
    assert all(b.gamma_offset == 0.0 for b in deployed.modules() if isinstance(b, MaskedResBlock))
    assert all(b.gamma_offset == 1.0 for b in model.modules() if isinstance(b, MaskedResBlock))
    gen = torch.Generator().manual_seed(9)
    image = torch.rand(2, 3, 32, 32, generator=gen)
    gate = (torch.rand(2, 1, 32, 32, generator=gen) > 0.6).float()
    with torch.no_grad():
        ref, out = model(image, gate=gate), deployed(image, gate=gate)
    assert (ref.restored - image).abs().max() > 1e-2
    assert (ref.restored - out.restored).abs().max().item() <= TOL
