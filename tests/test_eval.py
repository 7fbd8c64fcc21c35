"""Evaluation metrics and the ``m2ae train`` / ``m2ae eval`` command line."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from factories import one_torch_thread
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from m2ae.cli import main
from m2ae.errors import UserError
from m2ae.model.checkpoint import save_checkpoint
from m2ae.model.config import get_preset
from m2ae.model.evaluate import EvalResult, evaluate, masked_psnr, restore
from m2ae.model.network import M2AENet

METRIC_KEYS = {"psnr", "psnr_blurred", "psnr_masked", "psnr_masked_blurred", "ssim", "ssim_blurred",
               "mask_iou", "mask_precision", "mask_recall", "num_images"}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def hand_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10.0 * math.log10(1.0 / float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def make_samples(rng: np.random.Generator, count: int, h: int = 32, w: int = 32,
                 with_mask: bool = True) -> list[dict[str, np.ndarray | None]]:
    """Pairs that differ only inside a random box, which is their mask."""
    samples = []
    for _ in range(count):
        sharp = rng.random((3, h, w), dtype=np.float32)
        mask = np.zeros((1, h, w), dtype=np.float32)
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        mask[:, top:top + h // 3, left:left + w // 3] = 1.0
        noise = rng.normal(0.0, 0.1, size=sharp.shape).astype(np.float32)
        blurred = np.clip(sharp + noise * mask, 0.0, 1.0).astype(np.float32)
        samples.append({"blurred": blurred, "sharp": sharp, "mask": mask if with_mask else None})
    return samples


def randomised_tiny(seed: int) -> M2AENet:
    torch.manual_seed(seed)
    model = M2AENet(get_preset("tiny"))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0.0, 0.3 / module.weight[0].numel() ** 0.5)
    return model.eval()


def force_mask(model: M2AENet, blurred: bool) -> M2AENet:
    """Make the mask head predict every pixel blurred (or every pixel sharp)."""
    last = model.mask_head.logits_conv
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 10.0] if blurred else [10.0, 0.0]))
    return model


def wake_blocks(model: M2AENet) -> M2AENet:
    """A fresh block's last BN scales are 0 (its residual is nothing): set every BN scale
    to 0.5 so the body, and the guide it takes, change the output."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(0.5)
    return model


# ----------------------------------------------------------------- metrics


def test_masked_psnr_matches_hand_computation(rng: np.random.Generator) -> None:
    pred = rng.random((3, 7, 9)).astype(np.float32)
    target = rng.random((3, 7, 9)).astype(np.float32)
    mask = rng.random((7, 9)) > 0.6
    diff = pred.astype(np.float64) - target
    mse = sum(diff[c, y, x] ** 2 for c in range(3) for y in range(7) for x in range(9) if mask[y, x])
    mse /= 3 * mask.sum()
    assert masked_psnr(pred, target, mask) == pytest.approx(10 * math.log10(1 / mse), rel=1e-9)
    assert masked_psnr(pred, target, np.ones((7, 9), bool)) == pytest.approx(hand_psnr(pred, target), rel=1e-9)
    # Pixels outside the mask do not count, however wrong they are.
    wrong_outside = np.where(mask[None], pred, 1.0 - pred)
    assert masked_psnr(wrong_outside, target, mask) == masked_psnr(pred, target, mask)
    assert masked_psnr(target, target, mask) == math.inf


def test_eval_result_has_the_documented_keys() -> None:
    result = EvalResult(30.0, 25.0, 28.0, 20.0, 0.9, 0.8, 0.5, 0.6, 0.7, 4, 3)
    data = json.loads(json.dumps(result.to_dict()))
    assert METRIC_KEYS <= set(data)
    assert data["psnr"] == 30.0 and data["num_images"] == 4


def test_evaluate_an_identity_model(rng: np.random.Generator) -> None:
    # A fresh M2AENet has a zero output projection: restored == blurred exactly.
    samples = make_samples(rng, 3)
    result = evaluate(M2AENet(get_preset("tiny")), samples, progress=False)
    assert result.num_images == 3 and result.num_masked_images == 3
    assert result.psnr == result.psnr_blurred
    assert result.ssim == result.ssim_blurred
    assert result.psnr_masked == result.psnr_masked_blurred
    expected_blurred = np.mean([hand_psnr(s["sharp"], s["blurred"]) for s in samples])
    expected_masked = np.mean([masked_psnr(s["blurred"], s["sharp"], s["mask"][0] > 0) for s in samples])
    assert result.psnr_blurred == pytest.approx(expected_blurred, rel=1e-6)
    assert result.psnr_masked_blurred == pytest.approx(expected_masked, rel=1e-9)
    # Only the box differs, so the masked PSNR is the harder (lower) number.
    assert result.psnr_masked_blurred < result.psnr_blurred
    expected_ssim = np.mean([structural_similarity(s["sharp"], s["blurred"], channel_axis=0, data_range=1.0)
                             for s in samples])
    assert result.ssim_blurred == pytest.approx(expected_ssim, rel=1e-6)


def test_evaluate_scores_the_restored_image(rng: np.random.Generator) -> None:
    model = force_mask(randomised_tiny(3), True)
    samples = make_samples(rng, 2)
    result = evaluate(model, samples, progress=False)
    expected = []
    for s in samples:
        with torch.no_grad():
            restored = model(torch.from_numpy(s["blurred"])[None]).restored[0].numpy()
        expected.append(hand_psnr(np.clip(restored, 0, 1), s["sharp"]))
    assert result.psnr == pytest.approx(np.mean(expected), rel=1e-6)
    assert result.psnr != result.psnr_blurred


def test_mask_iou_against_forced_predictions(rng: np.random.Generator) -> None:
    samples = make_samples(rng, 3)
    gt_pixels = sum(int(s["mask"].sum()) for s in samples)
    all_blurred = evaluate(force_mask(M2AENet(get_preset("tiny")), True), samples, progress=False)
    assert all_blurred.mask_iou == pytest.approx(gt_pixels / (3 * 32 * 32))
    assert all_blurred.mask_precision == pytest.approx(gt_pixels / (3 * 32 * 32))
    assert all_blurred.mask_recall == 1.0
    all_sharp = evaluate(force_mask(M2AENet(get_preset("tiny")), False), samples, progress=False)
    assert all_sharp.mask_iou == 0.0 and all_sharp.mask_recall == 0.0
    assert all_sharp.mask_precision == 1.0  # nothing predicted, so no false alarm
    for s in samples:
        s["mask"] = np.zeros_like(s["mask"])
    empty = evaluate(force_mask(M2AENet(get_preset("tiny")), False), samples, progress=False)
    assert empty.mask_iou == 1.0  # nothing blurred, nothing predicted: agreement
    assert empty.num_masked_images == 0 and math.isnan(empty.psnr_masked)


def test_zero_guide_changes_only_what_the_guide_drives(rng: np.random.Generator) -> None:
    model = force_mask(randomised_tiny(4), True)
    wake_blocks(model)
    samples = make_samples(rng, 2)
    guided = evaluate(model, samples, progress=False)
    unguided = evaluate(model, samples, progress=False, zero_guide=True)
    assert unguided.psnr != guided.psnr
    assert unguided.mask_iou == guided.mask_iou and unguided.psnr_blurred == guided.psnr_blurred
    with torch.no_grad():
        image = torch.from_numpy(samples[0]["blurred"])[None]
        gate = torch.ones(1, 1, 32, 32)
        expected = model.restore(image, gate, torch.zeros_like(model.motion.guide(image)))[0].numpy()
    restored, _ = restore(model, samples[0]["blurred"], zero_guide=True)
    np.testing.assert_allclose(restored, np.clip(expected, 0, 1), atol=1e-6)


def test_annotated_gate_restores_under_the_annotated_mask(rng: np.random.Generator) -> None:
    """The ablation gates the body with each pair's own mask, odd sizes included: the
    restored image equals the body run under that mask, and is the input outside it."""
    model = force_mask(randomised_tiny(5), True)  # its own mask would cover everything
    wake_blocks(model)
    samples = make_samples(rng, 2, h=30, w=21)
    result = evaluate(model, samples, progress=False, annotated_gate=True)
    assert result.mask_iou == 1.0 and result.mask_precision == 1.0 and result.mask_recall == 1.0
    assert result.psnr != evaluate(model, samples, progress=False).psnr
    mask = samples[0]["mask"][0] > 0.5
    restored, gate = restore(model, samples[0]["blurred"], gate_mask=mask)
    assert np.array_equal(gate, mask)
    blurred = samples[0]["blurred"]
    assert np.array_equal(restored[:, ~mask], blurred[:, ~mask])
    assert np.abs(restored[:, mask] - blurred[:, mask]).max() > 1e-3
    with pytest.raises(UserError, match="annotated-mask"):
        evaluate(model, make_samples(rng, 1, with_mask=False), progress=False, annotated_gate=True)


def test_annotated_gate_dilation_widens_the_gate_by_a_square(rng: np.random.Generator) -> None:
    """With a dilation of k pixels the gate is the annotated mask grown by a (2k+1)^2
    square: the restorer then works on the sharp ring around the box too, and the mask
    scores score that gate (recall 1, precision below 1)."""
    model = wake_blocks(force_mask(randomised_tiny(6), True))
    samples = make_samples(rng, 2, h=33, w=27)
    result = evaluate(model, samples, progress=False, annotated_gate=True, annotated_dilation=2)
    assert result.mask_recall == 1.0 and result.mask_precision < 1.0
    assert result.psnr != evaluate(model, samples, progress=False, annotated_gate=True).psnr
    mask = samples[0]["mask"][0] > 0.5
    ys, xs = np.nonzero(mask)
    grown = np.zeros_like(mask)
    grown[max(ys.min() - 2, 0):ys.max() + 3, max(xs.min() - 2, 0):xs.max() + 3] = True
    restored, gate = restore(model, samples[0]["blurred"], gate_mask=grown)
    single = evaluate(model, samples[:1], progress=False, annotated_gate=True, annotated_dilation=2)
    assert single.mask_precision == pytest.approx(mask.sum() / grown.sum())
    assert single.psnr == pytest.approx(peak_signal_noise_ratio(samples[0]["sharp"], restored, data_range=1.0))
    blurred = samples[0]["blurred"]
    assert np.array_equal(restored[:, ~grown], blurred[:, ~grown])
    assert np.abs(restored[:, grown & ~mask] - blurred[:, grown & ~mask]).max() > 1e-3


def test_annotated_gate_dilation_is_refused_when_it_means_nothing(rng: np.random.Generator) -> None:
    model = randomised_tiny(7)
    samples = make_samples(rng, 1)
    with pytest.raises(UserError, match="dilation"):
        evaluate(model, samples, progress=False, annotated_gate=True, annotated_dilation=-1)
    with pytest.raises(UserError, match="annotated-mask ablation"):
        evaluate(model, samples, progress=False, annotated_dilation=2)


def test_samples_without_masks_leave_masked_metrics_undefined(rng: np.random.Generator) -> None:
    result = evaluate(M2AENet(get_preset("tiny")), make_samples(rng, 2, with_mask=False), progress=False)
    assert result.num_images == 2 and result.num_masked_images == 0
    assert math.isnan(result.psnr_masked) and math.isnan(result.psnr_masked_blurred)
    assert math.isnan(result.mask_iou)
    assert math.isfinite(result.psnr)


def test_evaluate_pads_odd_sizes(rng: np.random.Generator) -> None:
    model = randomised_tiny(1)
    samples = make_samples(rng, 1, h=30, w=21)
    restored, mask = restore(model, samples[0]["blurred"])
    assert restored.shape == (3, 30, 21) and mask.shape == (30, 21) and mask.dtype == bool
    assert restored.min() >= 0.0 and restored.max() <= 1.0
    result = evaluate(model, samples, progress=False)
    assert math.isfinite(result.psnr) and result.num_images == 1


def test_evaluate_refuses_an_empty_set() -> None:
    with pytest.raises(ValueError, match="no images"):
        evaluate(M2AENet(get_preset("tiny")), [], progress=False)


# ---------------------------------------------------------------------- CLI


@pytest.mark.parametrize("command", ["train", "eval"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: m2ae {command}")
    for option in {"train": ("--resume", "--preset", "--ckpt-every", "--out"),
                   "eval": ("--checkpoint", "--json", "--num-images", "--size")}[command]:
        assert option in out


def fresh_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = M2AENet(get_preset("tiny"))
    return save_checkpoint(path, {"config": model.config.to_dict(), "step": 0, "model": model.state_dict()})


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def test_cli_eval_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = fresh_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "reports" / "metrics.json"
    rc = main(["eval", "--checkpoint", str(checkpoint), "--num-images", "2", "--size", "64",
               "--json", str(out), "--no-progress"])
    assert rc == 0
    data = strict_json(out.read_text())
    assert METRIC_KEYS <= set(data)
    assert data["num_images"] == 2
    assert data["psnr"] == data["psnr_blurred"]  # the fresh network is the identity
    assert 0.0 <= data["mask_iou"] <= 1.0
    assert strict_json(capsys.readouterr().out) == data
    assert os.listdir(out.parent) == ["metrics.json"]


def test_cli_eval_annotated_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["eval", "--checkpoint", str(fresh_checkpoint(tmp_path / "tiny.pt")), "--num-images", "2",
               "--size", "64", "--annotated-mask", "--no-progress"])
    assert rc == 0
    data = strict_json(capsys.readouterr().out)
    assert data["mask_iou"] == 1.0 and data["mask_precision"] == 1.0


def test_cli_eval_annotated_mask_dilation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(fresh_checkpoint(tmp_path / "tiny.pt"))
    rc = main(["eval", "--checkpoint", ckpt, "--num-images", "2", "--size", "64", "--annotated-mask",
               "--annotated-mask-dilation", "2", "--no-progress"])
    assert rc == 0
    data = strict_json(capsys.readouterr().out)
    assert data["mask_recall"] == 1.0 and data["mask_precision"] < 1.0
    for extra in (["--annotated-mask-dilation", "2"], ["--annotated-mask", "--annotated-mask-dilation", "-1"]):
        assert main(["eval", "--checkpoint", ckpt, "--num-images", "1", "--size", "32", "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--annotated-mask-dilation" in err[0], err


def test_cli_train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    rc = main(["train", "--out", str(run), "--steps", "2", "--batch-size", "1", "--crop", "32",
               "--ckpt-every", "1", "--no-progress"])
    assert rc == 0
    assert "trained to step 2" in capsys.readouterr().out
    assert sorted(os.listdir(run)) == ["final.pt", "last.pt", "val"]
    rc = main(["eval", "--checkpoint", str(run / "final.pt"), "--num-images", "1", "--size", "32",
               "--no-progress"])
    assert rc == 0
    assert strict_json(capsys.readouterr().out)["num_images"] == 1
    rc = main(["train", "--out", str(run), "--steps", "2", "--resume", "--no-progress"])
    assert rc == 2
    assert "already reached step 2" in capsys.readouterr().err


def test_cli_eval_json_has_null_for_undefined_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pairs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        sharp = rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)
        Image.fromarray(sharp).save(folder / f"{name}_sharp.png")
        Image.fromarray(255 - sharp).save(folder / f"{name}_blur.png")
    out = tmp_path / "metrics.json"
    rc = main(["eval", "--checkpoint", str(fresh_checkpoint(tmp_path / "ck.pt")), "--data", str(folder),
               "--json", str(out), "--no-progress"])
    assert rc == 0
    data = strict_json(out.read_text())
    assert data["num_images"] == 2
    assert data["psnr_masked"] is None and data["mask_iou"] is None
    assert isinstance(data["psnr"], float)


def _bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pt"
    path.write_bytes(np.random.default_rng(62).bytes(4096))
    return path


BAD_COMMANDS = {
    "missing checkpoint": (["eval", "--checkpoint", "{tmp}/nope.pt"], "nope.pt"),
    "corrupt checkpoint": (["eval", "--checkpoint", "{bad}"], "garbage.pt"),
    "zero images": (["eval", "--checkpoint", "{good}", "--num-images", "0"], "--num-images"),
    "negative images": (["eval", "--checkpoint", "{good}", "--num-images", "-3"], "--num-images"),
    "tiny size": (["eval", "--checkpoint", "{good}", "--size", "4"], "size"),
    "missing folder": (["eval", "--checkpoint", "{good}", "--data", "{tmp}/nowhere"], "nowhere"),
    "zero steps": (["train", "--out", "{tmp}/run", "--steps", "0"], "--steps"),
    "unknown preset": (["train", "--out", "{tmp}/run", "--preset", "huge"], "huge"),
    "resume nothing": (["train", "--out", "{tmp}/run", "--resume"], "last.pt"),
    "existing run": (["train", "--out", "{tmp}/existing"], "--resume"),
    "crop not a multiple": (["train", "--out", "{tmp}/run", "--crop", "30"], "--crop 30"),
    "crop too small for base": (["train", "--out", "{tmp}/run", "--preset", "base", "--crop", "12"], "--crop 12"),
    "out is a file": (["train", "--out", "{good}"], "not a folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_COMMANDS))
def test_cli_bad_input_exits_2_with_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, needle = BAD_COMMANDS[case]
    good = fresh_checkpoint(tmp_path / "good.pt")
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "last.pt").write_bytes(good.read_bytes())
    values = {"tmp": tmp_path, "good": good, "bad": _bad_file(tmp_path)}
    argv = [arg.format(**values) for arg in argv]
    json_out = tmp_path / "metrics.json"
    if argv[0] == "eval":
        argv += ["--json", str(json_out)]
    rc = main(argv + ["--no-progress"])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"m2ae {argv[0]}: error: ")
    assert needle in lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert not json_out.exists()
