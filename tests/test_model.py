"""M2AENet in PyTorch: shapes of both presets, the pass-through property, the reblur
operator, exact RepVGG folding, config validation and the loss helpers."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from factories import one_torch_thread
from torch import nn

from m2ae.errors import UserError
from m2ae.model.config import PRESETS, M2AEConfig, get_preset
from m2ae.model.heads import blur_probability, dilate, erode, gate_morphology, hard_mask, reblur
from m2ae.model.layers import RepConv3x3
from m2ae.model.losses import LossWeights, fft_l1, m2ae_loss, mask_bce, mask_iou
from m2ae.model.network import GATE_ONES, GATE_PREDICTED, M2AENet
from m2ae.model.reparam import fold_branches


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@torch.no_grad()
def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere (the fresh net's zero projection would hide every bug)
    and random BN statistics, at a scale that keeps activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.5 / fan_in**0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.05)
        elif isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.copy_(0.5 + torch.rand(c, generator=g))
            module.bias.copy_(torch.randn(c, generator=g) * 0.1)
            module.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
    return model


def tiny_net(seed: int = 0) -> M2AENet:
    torch.manual_seed(seed)
    return randomise(M2AENet(get_preset("tiny")), seed + 1)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", [(2, 32, 32), (1, 48, 64), (1, 32, 80)])
@pytest.mark.parametrize("training", [False, True])
def test_tiny_output_shapes(shape: tuple[int, int, int], training: bool) -> None:
    n, h, w = shape
    config = get_preset("tiny")
    assert h % config.multiple == 0 and min(h, w) >= config.min_size
    model = M2AENet(config).train(training)
    with torch.no_grad():
        out = model(torch.rand(n, 3, h, w))
    assert out.restored.shape == (n, 3, h, w)
    assert out.mask_logits.shape == (n, 2, h, w)
    assert out.mask.shape == (n, 1, h, w)
    assert out.trajectory.shape == (n, 2 * config.motion_points, h, w)
    assert all(t.dtype == torch.float32 for t in out)


def test_base_output_shapes_at_small_input() -> None:
    config = get_preset("base")
    assert config.multiple == 8 and config.min_size == 16  # lcm(4, 2**3), two cells
    torch.manual_seed(0)
    model = M2AENet(config).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32))
    assert out.restored.shape == (1, 3, 32, 32)
    assert out.mask_logits.shape == (1, 2, 32, 32)
    assert out.mask.shape == (1, 1, 32, 32)
    assert out.trajectory.shape == (1, 18, 32, 32)
    assert torch.isfinite(out.restored).all()


def test_presets_differ_in_size() -> None:
    tiny = sum(p.numel() for p in M2AENet(get_preset("tiny")).parameters())
    base = sum(p.numel() for p in M2AENet(get_preset("base")).parameters())
    assert base > 10 * tiny


# ----------------------------------------------------------------- pass-through


def soft_gate(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Roughly 40% exact zeros, 30% ones and 30% fractional values in (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.rand(shape, generator=g)
    fraction = torch.rand(shape, generator=g).clamp_min(1e-3)
    return torch.where(pick < 0.4, torch.zeros(shape), torch.where(pick < 0.7, torch.ones(shape), fraction))


def assert_pass_through(blurred: torch.Tensor, restored: torch.Tensor, gate: torch.Tensor) -> None:
    sharp_pixels = (gate == 0).expand_as(blurred)
    assert sharp_pixels.any(), "the gate has no zero to test"
    # Bitwise, not just numerically: compare the raw float32 bit patterns.
    assert torch.equal(restored.view(torch.int32)[sharp_pixels], blurred.view(torch.int32)[sharp_pixels])
    changed = (restored != blurred)[~sharp_pixels].float().mean().item()
    assert changed > 0.9, "the network left the gated pixels alone: the test would not catch a leak"


@pytest.mark.parametrize("training", [False, True])
def test_pass_through_with_soft_gate_tensor(training: bool) -> None:
    model = tiny_net().train(training)
    torch.manual_seed(5)
    blurred = torch.rand(2, 3, 32, 48)
    gate = soft_gate((2, 1, 32, 48), seed=6)
    out = model(blurred, gate=gate)
    assert torch.equal(out.mask, gate)
    assert_pass_through(blurred, out.restored, gate)


@pytest.mark.parametrize("training", [False, True])
def test_pass_through_with_block_gate(training: bool) -> None:
    # A gate that is 0 on whole coarse cells next to 1s: the low-res maxpooled gates
    # of the U-Net are 1 near the border, and still nothing may leak into the 0 region.
    model = tiny_net(3).train(training)
    blurred = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    gate = torch.zeros(1, 1, 32, 32)
    gate[..., 5:19, 9:27] = 1.0
    gate[..., 11, 3] = 0.25
    out = model(blurred, gate=gate)
    assert_pass_through(blurred, out.restored, gate)


@pytest.mark.parametrize("training", [False, True])
def test_gate_of_ones_restores_every_pixel(training: bool) -> None:
    model = tiny_net().train(training)
    blurred = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    out = model(blurred, gate=GATE_ONES)
    assert torch.equal(out.mask, torch.ones(2, 1, 32, 48))
    assert (out.restored != blurred).float().mean().item() > 0.9
    # All-ones gate == the same gate passed as a tensor, in eval mode where it is deterministic.
    if not training:
        again = model(blurred, gate=torch.ones(2, 1, 32, 48))
        assert torch.equal(again.restored, out.restored)


def test_pass_through_with_predicted_gate_in_eval() -> None:
    model = tiny_net().eval()
    blurred = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        p_blur = blur_probability(model(blurred, gate=GATE_ONES).mask_logits)
    # Threshold at the median so about half the pixels are gated whatever the weights.
    model.config = dataclasses.replace(model.config, threshold=float(p_blur.median()))
    with torch.no_grad():
        out = model(blurred, gate=GATE_PREDICTED)
    assert torch.equal(out.mask, (p_blur > model.config.threshold).float())
    assert 0.3 < out.mask.mean().item() < 0.7
    assert_pass_through(blurred, out.restored, out.mask)


def _logits_from_probability(p_blur: torch.Tensor) -> torch.Tensor:
    """Two logits whose softmax gives ``p_blur`` [N,1,H,W] as the blur probability."""
    return torch.cat([torch.zeros_like(p_blur), torch.logit(p_blur.clamp(1e-4, 1 - 1e-4))], dim=1)


def test_mask_opening_removes_specks_and_keeps_blobs() -> None:
    p_blur = torch.full((1, 1, 40, 48), 0.1)
    p_blur[..., 10:22, 14:30] = 0.9  # a blob, 12 x 16
    # 3 rows on the image border: the window stops at the border, which erodes nothing,
    # so it stays (were the outside 0 it would go, as the bar below does)
    p_blur[..., 0:3, 40:48] = 0.9
    p_blur[..., 30, 5] = 0.9  # specks: one pixel, and a bar 3 wide
    p_blur[..., 28:38, 40:43] = 0.9
    logits = _logits_from_probability(p_blur)
    blobs = torch.zeros_like(p_blur)
    blobs[..., 10:22, 14:30] = 1
    blobs[..., 0:3, 40:48] = 1
    assert torch.equal(hard_mask(logits, 0.5, 0), (p_blur > 0.5).float())
    assert torch.equal(hard_mask(logits, 0.5, 0, opening=2), blobs)
    assert torch.equal(hard_mask(logits, 0.5, 1, opening=2), dilate(blobs, 1))
    # radius 1 (a 3x3 window) removes the pixel and keeps the 3-wide bar whole
    opened = hard_mask(logits, 0.5, 0, opening=1)
    assert opened[0, 0, 30, 5] == 0 and opened[0, 0, 28:38, 40:43].all() and opened.sum() == blobs.sum() + 30


def test_gate_morphology_commutes_with_the_threshold() -> None:
    p_blur = torch.rand(2, 1, 33, 41, generator=torch.Generator().manual_seed(8))
    logits = _logits_from_probability(p_blur)
    for opening, dilation in ((0, 0), (1, 0), (2, 1), (3, 2)):
        for threshold in (0.3, 0.5, 0.8):
            expected = hard_mask(logits, threshold, dilation, opening)
            assert torch.equal((gate_morphology(blur_probability(logits), opening, dilation) > threshold).float(),
                               expected), (opening, dilation, threshold)
    assert torch.equal(erode(p_blur, 0), p_blur)
    # erosion is a min over the window clipped to the image
    assert erode(p_blur, 1)[0, 0, 0, 0] == p_blur[0, 0, :2, :2].min()


def test_predicted_gate_uses_the_configured_opening() -> None:
    model = tiny_net().eval()
    blurred = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(blurred, gate=GATE_ONES).mask_logits
    threshold = float(blur_probability(logits).quantile(0.7))
    model.config = dataclasses.replace(model.config, threshold=threshold, mask_opening=1)
    with torch.no_grad():
        out = model(blurred)
    plain = hard_mask(logits, threshold, 0)
    assert torch.equal(out.mask, hard_mask(logits, threshold, 0, opening=1))
    assert 0 < out.mask.sum() < plain.sum()
    assert_pass_through(blurred, out.restored, out.mask)


def test_mask_opening_is_checked_and_old_configs_load_without_it() -> None:
    with pytest.raises(ValueError, match="mask_opening"):
        dataclasses.replace(tiny_net().config, mask_opening=-1)
    data = tiny_net().config.to_dict()
    del data["mask_opening"]
    assert M2AEConfig.from_dict(data).mask_opening == 0


def test_predicted_gate_dilation_matches_hand_dilation() -> None:
    model = tiny_net().eval()
    blurred = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        p_blur = blur_probability(model(blurred, gate=GATE_ONES).mask_logits)
    threshold = float(p_blur.quantile(0.9))
    model.config = dataclasses.replace(model.config, threshold=threshold, mask_dilation=1)
    with torch.no_grad():
        out = model(blurred)
    core = (p_blur[0, 0] > threshold).numpy()
    padded = np.pad(core, 1)
    expected = np.zeros_like(core)
    for dy in range(3):
        for dx in range(3):
            expected |= padded[dy:dy + 32, dx:dx + 32]
    assert expected.sum() > core.sum() > 0
    np.testing.assert_array_equal(out.mask[0, 0].numpy() > 0, expected)
    assert_pass_through(blurred, out.restored, out.mask)


def test_pass_through_with_predicted_gate_in_training() -> None:
    model = tiny_net().train()
    blurred = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(11)
    out = model(blurred, gate=GATE_PREDICTED)
    values = set(out.mask.detach().unique().tolist())
    assert values == {0.0, 1.0}  # hard Gumbel: 0/1 forward, with both present
    assert_pass_through(blurred, out.restored.detach(), out.mask.detach())
    # Straight-through: the gate still carries gradients back to the mask head.
    out.restored.sum().backward()
    head = model.mask_head.logits_conv.weight.grad
    assert head is not None and head.abs().sum() > 0


def test_gumbel_gate_follows_torch_seed() -> None:
    model = tiny_net().train()
    blurred = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    masks = []
    for _ in range(2):
        torch.manual_seed(42)
        masks.append(model(blurred).mask)
    assert torch.equal(masks[0], masks[1])


def test_bad_gate_is_refused() -> None:
    model = M2AENet(get_preset("tiny"))
    blurred = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="gate must be"):
        model(blurred, gate=torch.ones(1, 3, 16, 16))
    with pytest.raises(ValueError, match="gate must be"):
        model(blurred, gate="everything")


def test_fresh_network_is_the_identity() -> None:
    # The zero-initialised projection is what evaluation's identity baseline relies on.
    model = M2AENet(get_preset("tiny")).eval()
    blurred = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(blurred, gate=GATE_ONES).restored, blurred)


# ------------------------------------------------------------------------ reblur


@pytest.mark.parametrize("size", [(17, 23), (32, 32), (1, 9)])
def test_reblur_with_zero_trajectory_is_identity(size: tuple[int, int]) -> None:
    h, w = size
    sharp = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = reblur(sharp, torch.zeros(2, 2 * 5, h, w, dtype=torch.float64))
    assert out.shape == sharp.shape and out.dtype == torch.float64
    assert (out - sharp).abs().max().item() <= 1e-12
    # float32: the pixel -> [-1, 1] -> pixel round trip of grid_sample rounds the sample
    # position by a few ulps of the largest index, so the error grows with the size.
    out32 = reblur(sharp.float(), torch.zeros(2, 10, h, w))
    bound = 4 * max(h, w) * torch.finfo(torch.float32).eps
    assert (out32 - sharp.float()).abs().max().item() <= max(bound, 1e-6)


def test_reblur_samples_at_p_plus_offset() -> None:
    h, w = 12, 15
    sharp = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    trajectory = torch.zeros(1, 2, h, w)
    trajectory[:, 0] = 2.0  # dx
    trajectory[:, 1] = -1.0  # dy
    out = reblur(sharp, trajectory)
    # Border padding clamps the sample position into the image.
    ys = np.clip(np.arange(h) - 1, 0, h - 1)
    xs = np.clip(np.arange(w) + 2, 0, w - 1)
    expected = sharp.numpy()[:, :, ys][:, :, :, xs]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_reblur_averages_the_trajectory_points() -> None:
    h, w = 10, 10
    sharp = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(2))
    trajectory = torch.zeros(1, 4, h, w)
    trajectory[:, 2] = 0.5  # second point: half a pixel to the right
    out = reblur(sharp, trajectory)
    right = torch.cat([sharp[..., 1:], sharp[..., -1:]], dim=-1)
    expected = 0.5 * sharp + 0.5 * (0.5 * sharp + 0.5 * right)
    assert (out - expected).abs().max().item() <= 1e-5


# -------------------------------------------------------------- RepVGG folding


@pytest.mark.parametrize("channels", [(8, 8), (6, 10), (16, 3)])
def test_repconv_folds_exactly(channels: tuple[int, int]) -> None:
    cin, cout = channels
    torch.manual_seed(0)
    module = randomise(RepConv3x3(cin, cout), seed=1).eval()
    assert (module.bn_id is not None) == (cin == cout)
    x = torch.randn(2, cin, 9, 11, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = module(x)
        folded = F.conv2d(x, *module.fused_weight_bias(), padding=1)
    assert (reference - folded).abs().max().item() <= 1e-5


def test_every_repconv_of_a_trained_like_network_folds_exactly() -> None:
    model = tiny_net(7).eval()
    rep_convs = [m for m in model.modules() if isinstance(m, RepConv3x3) and m.rep_branches]
    assert len(rep_convs) == 2 * (sum(model.config.enc_blocks) + sum(model.config.dec_blocks))
    g = torch.Generator().manual_seed(3)
    for module in rep_convs:
        x = torch.randn(1, module.in_channels, 12, 12, generator=g)
        with torch.no_grad():
            folded = F.conv2d(x, *module.fused_weight_bias(), padding=1)
            assert (module(x) - folded).abs().max().item() <= 1e-5


def test_plain_repconv_fuses_to_itself() -> None:
    module = RepConv3x3(4, 5, rep_branches=False)
    weight, bias = module.fused_weight_bias()
    assert torch.equal(weight, module.conv.weight) and torch.equal(bias, module.conv.bias)


@pytest.mark.parametrize("gate", ["ones", "tensor", "pred"])
def test_fold_branches_keeps_the_network_output(gate: str) -> None:
    model = tiny_net(9).eval()
    blurred = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    gate_arg = soft_gate((2, 1, 32, 32), seed=5) if gate == "tensor" else gate
    if gate == "pred":
        with torch.no_grad():
            p_blur = blur_probability(model(blurred, gate=GATE_ONES).mask_logits)
        model.config = dataclasses.replace(model.config, threshold=float(p_blur.median()))
    folded = fold_branches(model)
    assert folded.config.rep_branches is False
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training
    with torch.no_grad():
        ref = model(blurred, gate=gate_arg)
        out = folded(blurred, gate=gate_arg)
    assert torch.equal(out.mask_logits, ref.mask_logits)
    assert torch.equal(out.mask, ref.mask)
    assert torch.equal(out.trajectory, ref.trajectory)
    residual = ref.restored - blurred
    assert residual.abs().max().item() > 1e-2
    rel = (out.restored - ref.restored).abs().max().item() / residual.abs().max().item()
    assert rel <= 1e-4


# ------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"enc_blocks": (1, 1)}, "enc_blocks"),
        ({"enc_blocks": (1, 1, 1, 1)}, "enc_blocks"),
        ({"dec_blocks": (1, 1, 1)}, "dec_blocks"),
        ({"dec_blocks": ()}, "dec_blocks"),
        ({"num_scales": 1, "enc_blocks": (1,), "dec_blocks": ()}, "num_scales"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": -0.2}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
    ],
)
def test_config_rejects_bad_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        M2AEConfig(**overrides)


def test_config_round_trips_through_dict() -> None:
    for config in PRESETS.values():
        data = config.to_dict()
        data["enc_blocks"] = list(data["enc_blocks"])  # as JSON or a checkpoint might hold them
        assert M2AEConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown config keys"):
        M2AEConfig.from_dict({"width": 8, "depth": 3})


def test_multiple_is_what_the_network_needs() -> None:
    for scales, multiple in [(2, 4), (3, 4), (4, 8), (5, 16)]:
        config = M2AEConfig(num_scales=scales, enc_blocks=(1,) * scales, dec_blocks=(1,) * (scales - 1))
        assert config.multiple == multiple and config.min_size == 2 * multiple


def test_unknown_preset_is_a_user_error() -> None:
    with pytest.raises(UserError, match="huge.*tiny, base"):
        get_preset("huge")


# ------------------------------------------------------------------------ losses


def test_mask_iou_matches_hand_count() -> None:
    pred = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1]], dtype=torch.float32)
    target = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.float32)
    assert mask_iou(pred, target) == pytest.approx(3 / 5)
    assert mask_iou(torch.zeros(3, 3), torch.zeros(3, 3)) == 1.0


def test_mask_bce_is_bce_on_p_blur() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 5, generator=g)
    target = (torch.rand(2, 1, 5, 5, generator=g) > 0.5).float()
    p = blur_probability(logits).double()
    t = target.double()
    expected = -(2.0 * t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
    assert mask_bce(logits, target, pos_weight=2.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_total_is_the_weighted_sum() -> None:
    model = tiny_net().train()
    g = torch.Generator().manual_seed(1)
    blurred, sharp = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    gt_mask = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    weights = LossWeights(fft=0.3, reblur=0.7, mask=1.3)
    out = model(blurred, gate=gt_mask)
    terms = m2ae_loss(out, blurred, sharp, gt_mask, weights)
    assert terms.l1.item() == pytest.approx(F.l1_loss(out.restored, sharp).item(), rel=1e-6)
    assert terms.fft.item() == pytest.approx(fft_l1(out.restored, sharp).item(), rel=1e-6)
    expected = terms.l1 + 0.3 * terms.fft + 0.7 * terms.reblur + 1.3 * terms.mask
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    terms.total.backward()
    assert model.motion.trajectory_head.weight.grad.abs().sum() > 0  # the reblur term reaches the analyser
