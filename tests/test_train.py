"""Training and checkpoints: a CPU smoke run, atomic weights-only checkpoints with a
clear error for every bad file, and bit-exact resume after a kill."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import shutil
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from factories import one_torch_thread
from PIL import Image

import m2ae.model.checkpoint as checkpoint_module
from m2ae.errors import UserError
from m2ae.imageio import read_image
from m2ae.model.checkpoint import FORMAT, load_checkpoint, resolve_checkpoint, save_checkpoint, shipped_path
from m2ae.model.config import get_preset
from m2ae.model.data.synthetic import SyntheticConfig
from m2ae.model.evaluate import STRIP_GAP
from m2ae.model.gates import GateAugment, random_boxes, training_gate, with_prediction
from m2ae.model.heads import ConvMaskHead
from m2ae.model.losses import LossWeights
from m2ae.model.network import GATE_ONES, M2AENet
from m2ae.model.train import FINAL, LAST, TrainConfig, learning_rate, make_source, teacher_forcing_probability, train


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def small_run(out: Path, **overrides) -> TrainConfig:
    values = dict(preset="tiny", steps=6, out=str(out), batch_size=2, crop=32, warmup_steps=2,
                  val_every=1000, val_images=1, ckpt_every=3, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def run(config: TrainConfig, **kwargs) -> tuple[list[tuple[int, float]], object]:
    losses: list[tuple[int, float]] = []
    result = train(config, progress=False, on_step=lambda step, loss: losses.append((step, loss)), **kwargs)
    return losses, result


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def checkpoint_state(model: M2AENet, step: int = 7) -> dict:
    return {"config": model.config.to_dict(), "step": step, "model": model.state_dict()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 2 steps trained to the end (last.pt and final.pt)."""
    out = tmp_path_factory.mktemp("finished")
    with one_torch_thread():
        train(small_run(out, steps=2, ckpt_every=1), progress=False)
    return out


# ----------------------------------------------------------------- smoke run


@pytest.mark.slow
def test_training_smoke_run_lowers_the_loss(tmp_path: Path) -> None:
    # 60 steps: the mask BCE (weight 0.5) dominates the first steps and falls slowest.
    losses, result = run(small_run(tmp_path, steps=60, warmup_steps=5, ckpt_every=1000))
    assert [step for step, _ in losses] == list(range(60))
    values = np.array([loss for _, loss in losses])
    assert np.isfinite(values).all()
    assert values[-5:].mean() < 0.85 * values[:5].mean()
    assert result.step == 60
    assert result.final_checkpoint == tmp_path / FINAL and result.final_checkpoint.is_file()
    assert weights(tmp_path / LAST).keys() == weights(tmp_path / FINAL).keys()
    assert result.validation is not None and result.validation.num_images == 1
    loaded = load_checkpoint(tmp_path / FINAL, expect_preset="tiny")
    assert loaded.step == 60
    assert sorted(os.listdir(tmp_path)) == [FINAL, LAST, "val"]
    # One validation (the last step) writes one strip: a row of 5 panels per sample.
    strips = sorted((tmp_path / "val").iterdir())
    assert [p.name for p in strips] == ["step_000060.png"]
    strip = read_image(strips[0])
    assert strip.shape[0] == 128 and strip.shape[1] == 5 * 128 + 4 * STRIP_GAP


def test_sharp_gates_cover_the_mask_and_more() -> None:
    torch.manual_seed(0)
    mask = torch.zeros(4, 1, 64, 64)
    mask[:, :, 20:30, 20:30] = 1.0
    always = GateAugment(probability=1.0)
    grown = [training_gate(mask, always) for _ in range(8)]
    for gate in grown:
        assert torch.all(gate >= mask)  # never drops a blurred pixel
        assert set(gate.unique().tolist()) <= {0.0, 1.0}
    assert any(bool((gate > mask).any()) for gate in grown)  # and adds sharp ones
    assert training_gate(mask, GateAugment(probability=0.0)) is mask
    boxes = random_boxes(torch.Size([64, 1, 48, 40]), 3)
    per_image = boxes.flatten(1).sum(1)
    assert per_image.max() <= 3 * 24 * 20 and (per_image == 0).any() and (per_image > 0).any()


def test_predicted_gates_unite_the_mask_with_the_inference_mask() -> None:
    torch.manual_seed(0)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 2:6, 2:6] = 1.0
    predicted = torch.zeros_like(mask)
    predicted[:, :, 4:12, 8:14] = 1.0
    gate = with_prediction(mask, lambda: predicted, GateAugment(predicted=1.0))
    assert torch.equal(gate, torch.maximum(mask, predicted))
    # Off by default: no extra head pass and no random number drawn, so older recipes
    # replay bit for bit.
    state = torch.get_rng_state()
    called: list[bool] = []
    assert with_prediction(mask, lambda: called.append(True) or predicted, GateAugment()) is mask
    assert not called and torch.equal(torch.get_rng_state(), state)
    # At 0.5 about half of the gates grow.
    grown = sum(not torch.equal(with_prediction(mask, lambda: predicted, GateAugment(predicted=0.5)), mask)
                for _ in range(200))
    assert 60 < grown < 140


def test_cli_defaults_match_the_dataclasses() -> None:
    from m2ae.model import commands

    assert commands.DEFAULT_REBLUR_WEIGHT == LossWeights().reblur
    assert commands.DEFAULT_SHARP_GATES == GateAugment().probability
    assert commands.DEFAULT_PREDICTED_GATES == GateAugment().predicted
    assert commands.DEFAULT_MOVING_OBJECTS == TrainConfig().moving_objects == SyntheticConfig().max_objects
    assert commands.DEFAULT_OBJECT_SIZE == TrainConfig().object_size == SyntheticConfig().object_scale


def test_bad_gate_and_loss_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="--sharp-gates"):
        GateAugment(probability=1.5)
    with pytest.raises(UserError, match="--predicted-gates"):
        GateAugment(predicted=-0.1)
    with pytest.raises(UserError, match="--reblur-weight"):
        TrainConfig(loss=LossWeights(reblur=-1.0))


def test_schedules_are_the_documented_shapes() -> None:
    config = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, teacher_forcing=0.3)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 9) == pytest.approx(1e-3)
    assert learning_rate(config, 10) == pytest.approx(1e-3)
    assert learning_rate(config, 100) == pytest.approx(1e-5)
    assert all(learning_rate(config, s) >= learning_rate(config, s + 1) for s in range(10, 100))
    assert teacher_forcing_probability(config, 0) == 1.0
    assert teacher_forcing_probability(config, 15) == pytest.approx(0.5)
    assert teacher_forcing_probability(config, 30) == 0.0
    assert teacher_forcing_probability(TrainConfig(teacher_forcing=0.0), 0) == 0.0


@pytest.mark.parametrize("option", ["steps", "batch_size", "crop", "val_every", "ckpt_every"])
def test_train_config_refuses_non_positive_values(option: str) -> None:
    with pytest.raises(UserError, match=f"--{option.replace('_', '-')}"):
        TrainConfig(**{option: 0})


# -------------------------------------------------------------- checkpoints


def randomised_tiny(seed: int = 0) -> M2AENet:
    torch.manual_seed(seed)
    model = M2AENet(get_preset("tiny"))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) * 0.5 + 0.75)
            elif tensor.is_floating_point():
                # Zero-mean: all-positive weights grow through the U-Net until they overflow.
                tensor.copy_((torch.rand_like(tensor) - 0.5) * 0.2)
    return model.eval()


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = randomised_tiny()
    path = save_checkpoint(tmp_path / "ck.pt", checkpoint_state(model, step=7))
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]  # no temp file left behind
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.step == 7 and loaded.path == path
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.state["format"] == FORMAT
    assert not loaded.model.training
    assert_same_weights(loaded.model.state_dict(), model.state_dict())
    blurred = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a, b = model(blurred, gate=GATE_ONES), loaded.model(blurred, gate=GATE_ONES)
    assert torch.isfinite(a.restored).all() and torch.isfinite(a.mask_logits).all()
    assert torch.equal(a.restored, b.restored) and torch.equal(a.mask_logits, b.mask_logits)
    assert not torch.equal(a.restored, blurred)  # the weights really do something


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ck.pt", checkpoint_state(randomised_tiny(0)))
    before = path.read_bytes()
    # An object torch.save cannot pickle: the write fails after it started.
    with pytest.raises(Exception):
        save_checkpoint(path, {**checkpoint_state(randomised_tiny(1)), "extra": lambda: None})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]
    save_checkpoint(path, checkpoint_state(randomised_tiny(1), step=9))
    assert load_checkpoint(path).step == 9
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]


def _touch(path: str) -> None:
    Path(path).touch()


class _Payload:
    """Unpickling this (without weights_only) would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_loading_refuses_arbitrary_objects(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "executed"
    state = {**checkpoint_state(M2AENet(get_preset("tiny"))), "format": FORMAT, "hook": _Payload(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def _corrupt(kind: str, tmp_path: Path) -> Path:
    tiny = M2AENet(get_preset("tiny"))
    good = save_checkpoint(tmp_path / "good.pt", checkpoint_state(tiny))
    path = tmp_path / f"{kind}.pt"
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    if kind.startswith("random"):
        # Seeds whose bytes make the weights-only unpickler raise UnpicklingError,
        # IndexError, UnicodeDecodeError and KeyError (torch 2.x): all must be caught.
        path.write_bytes(np.random.default_rng(int(kind.split("_")[1])).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip_garbage":
        path.write_bytes(b"PK\x03\x04" + rng.bytes(2000))
    elif kind.startswith("truncated"):
        data = good.read_bytes()
        keep = {"truncated_half": len(data) // 2, "truncated_end": len(data) - 10, "truncated_head": 200}[kind]
        path.write_bytes(data[:keep])
    elif kind == "not_m2ae":
        torch.save({"state_dict": tiny.state_dict()}, path)
    elif kind == "not_a_dict":
        torch.save([torch.zeros(3)], path)
    elif kind == "other_preset_weights":
        base = M2AENet(get_preset("base"))
        save_checkpoint(path, {"config": tiny.config.to_dict(), "step": 0, "model": base.state_dict()})
    elif kind == "missing_weight":
        state = tiny.state_dict()
        state.pop(next(iter(state)))
        save_checkpoint(path, {"config": tiny.config.to_dict(), "step": 0, "model": state})
    elif kind == "model_not_a_dict":
        save_checkpoint(path, {"config": tiny.config.to_dict(), "step": 0, "model": torch.zeros(3)})
    elif kind == "no_model":
        save_checkpoint(path, {"config": tiny.config.to_dict(), "step": 0})
    elif kind == "no_config":
        save_checkpoint(path, {"step": 0, "model": tiny.state_dict()})
    elif kind == "bad_config_value":
        save_checkpoint(path, {"config": {**tiny.config.to_dict(), "threshold": 2.0}, "step": 0,
                               "model": tiny.state_dict()})
    elif kind == "bad_config_key":
        save_checkpoint(path, {"config": {**tiny.config.to_dict(), "depth": 3}, "step": 0,
                               "model": tiny.state_dict()})
    elif kind == "config_not_a_dict":
        save_checkpoint(path, {"config": "tiny", "step": 0, "model": tiny.state_dict()})
    elif kind == "bad_step":
        save_checkpoint(path, {"config": tiny.config.to_dict(), "step": "late", "model": tiny.state_dict()})
    else:
        raise AssertionError(kind)
    return path


BAD_CHECKPOINTS = [
    "random_0", "random_17", "random_54", "random_62", "empty", "zip_garbage",
    "truncated_half", "truncated_end", "truncated_head", "not_m2ae", "not_a_dict",
    "other_preset_weights", "missing_weight", "model_not_a_dict", "no_model", "no_config",
    "bad_config_value", "bad_config_key", "config_not_a_dict", "bad_step",
]


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_every_bad_checkpoint_is_a_one_line_user_error(tmp_path: Path, kind: str) -> None:
    path = _corrupt(kind, tmp_path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message and len(message) < 400


def test_expected_preset_is_checked(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ck.pt", checkpoint_state(M2AENet(get_preset("tiny"))))
    assert load_checkpoint(path, expect_preset="tiny").config.preset == "tiny"
    with pytest.raises(UserError, match="'tiny', not 'base'"):
        load_checkpoint(path, expect_preset="base")


def test_missing_checkpoint_paths_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such checkpoint file.*shipped checkpoints: tiny"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="no such checkpoint file"):
        load_checkpoint(tmp_path)  # a folder


def test_shipped_name_resolves_to_the_package_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shipped_path("tiny").parent == Path(checkpoint_module.__file__).parent / "weights"
    fake = tmp_path / "weights" / "tiny.pt"
    monkeypatch.setattr(checkpoint_module, "shipped_path", lambda name: tmp_path / "weights" / f"{name}.pt")
    with pytest.raises(UserError, match="shipped 'tiny' checkpoint is missing"):
        resolve_checkpoint("tiny")
    save_checkpoint(fake, checkpoint_state(M2AENet(get_preset("tiny"))))
    assert resolve_checkpoint("tiny") == fake
    assert load_checkpoint("tiny").path == fake
    # A file called "tiny" in the working folder does not shadow the shipped name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_bytes(b"junk")
    assert resolve_checkpoint("tiny") == fake
    assert resolve_checkpoint("./tiny") == Path("tiny")


def test_shipped_tiny_checkpoint_loads() -> None:
    # A missing file is the packaging regression this test is for (package-data weights/*.pt).
    assert shipped_path("tiny").is_file(), f"{shipped_path('tiny')} is not installed"
    assert shipped_path("tiny").stat().st_size < 10 * 2**20
    loaded = load_checkpoint("tiny", expect_preset="tiny")
    # The preset's shape, with the mask threshold training calibrated and the README
    # recipe's mask opening (its last run sets --mask-opening 2).
    preset = get_preset("tiny")
    assert dataclasses.replace(loaded.config, threshold=preset.threshold, mask_opening=preset.mask_opening) == preset
    assert loaded.config.mask_opening == 2
    assert 0.0 < loaded.config.threshold < 1.0
    assert not loaded.model.training
    with torch.no_grad():
        out = loaded.model(torch.rand(1, 3, 32, 32))
    assert out.restored.shape == (1, 3, 32, 32) and torch.isfinite(out.restored).all()


# -------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple[int, float]], dict[str, torch.Tensor]]:
    """6 steps in one go, checkpoints at 3 and 6: the reference for the resume tests."""
    out = tmp_path_factory.mktemp("straight")
    with one_torch_thread():
        losses, result = run(small_run(out))
    assert result.step == 6
    return losses, weights(out / FINAL)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [3, 4, 5])
def test_resume_after_a_kill_is_bit_exact(tmp_path: Path, straight_run, kill_after: int) -> None:
    reference_losses, reference_weights = straight_run
    config = small_run(tmp_path)
    first, killed = run(config, stop_after=kill_after)
    assert killed.step == kill_after and killed.final_checkpoint is None
    assert not (tmp_path / FINAL).exists()
    checkpointed = kill_after // config.ckpt_every * config.ckpt_every
    assert torch.load(tmp_path / LAST, weights_only=True)["step"] == checkpointed
    assert first == reference_losses[:kill_after]

    second, resumed = run(config, resume=True)
    # Steps after the last checkpoint are redone, none is skipped, and each sees the same
    # data and noise as in the straight run.
    assert [step for step, _ in second] == list(range(checkpointed, 6))
    assert second == reference_losses[checkpointed:]
    assert resumed.step == 6 and resumed.final_checkpoint == tmp_path / FINAL
    assert_same_weights(weights(tmp_path / FINAL), reference_weights)
    assert_same_weights(weights(tmp_path / LAST), reference_weights)


def test_resume_without_a_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--resume: no checkpoint"):
        train(small_run(tmp_path / "empty"), resume=True, progress=False)


def test_resume_of_a_finished_run_is_a_user_error(finished_run: Path) -> None:
    with pytest.raises(UserError, match="already reached step 2"):
        train(small_run(finished_run, steps=2), resume=True, progress=False)


def test_resume_with_another_preset_is_a_user_error(finished_run: Path) -> None:
    with pytest.raises(UserError, match="preset 'tiny', not 'base'"):
        train(small_run(finished_run, preset="base", steps=4), resume=True, progress=False)


@pytest.mark.parametrize(("change", "named"), [({"seed": 1}, "--seed 0 -> 1"), ({"crop": 64}, "--crop 32 -> 64"),
                                              ({"batch_size": 3}, "--batch-size 2 -> 3")])
def test_resume_with_other_data_settings_is_a_user_error(finished_run: Path, change: dict, named: str) -> None:
    # Another seed, crop or batch would silently continue a different run.
    with pytest.raises(UserError, match=named):
        train(small_run(finished_run, steps=4, ckpt_every=1, **change), resume=True, progress=False)


def test_resume_may_train_longer_and_report_at_another_pace(tmp_path: Path) -> None:
    train(small_run(tmp_path, steps=1, ckpt_every=1), progress=False)
    result = train(small_run(tmp_path, steps=2, ckpt_every=2, val_every=500), resume=True, progress=False)
    assert result.step == 2
    assert "scaler" in torch.load(tmp_path / LAST, weights_only=True)


def test_fresh_run_into_an_existing_run_is_a_user_error(finished_run: Path) -> None:
    before = (finished_run / LAST).read_bytes()
    with pytest.raises(UserError, match="--resume"):
        train(small_run(finished_run, steps=4), progress=False)
    assert (finished_run / LAST).read_bytes() == before


@pytest.mark.parametrize("kind", ["random_62", "truncated_half", "not_m2ae", "other_preset_weights", "no_config"])
def test_resume_from_a_bad_last_checkpoint_is_a_user_error(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(_corrupt(kind, tmp_path), out / LAST)
    with pytest.raises(UserError) as info:
        train(small_run(out), resume=True, progress=False)
    assert str(out / LAST) in str(info.value) and "\n" not in str(info.value)


def test_resume_from_a_weights_only_checkpoint_is_a_user_error(finished_run: Path, tmp_path: Path) -> None:
    # final.pt holds weights only (no optimizer state): it cannot continue a run.
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(finished_run / FINAL, out / LAST)
    with pytest.raises(UserError, match=LAST):
        train(small_run(out, steps=4), resume=True, progress=False)


def test_mask_context_trains_the_context_head(tmp_path: Path) -> None:
    train(small_run(tmp_path, steps=2, ckpt_every=2, mask_context=2), progress=False)
    loaded = load_checkpoint(tmp_path / FINAL, expect_preset="tiny")
    assert loaded.config.mask_context == 2 and loaded.config.multiple == 16
    assert loaded.model.mask_head.context_levels == 2
    with pytest.raises(UserError, match="--mask-context -1"):
        train(small_run(tmp_path / "bad", mask_context=-1), progress=False)


def test_mask_stem_and_still_objects_reach_the_network_and_the_data(tmp_path: Path) -> None:
    train(small_run(tmp_path, steps=1, ckpt_every=1, mask_stem="conv", still_objects=2), progress=False)
    loaded = load_checkpoint(tmp_path / FINAL, expect_preset="tiny")
    assert loaded.config.mask_stem == "conv"
    assert isinstance(loaded.model.mask_head, ConvMaskHead)
    source = make_source(small_run(tmp_path, still_objects=2, recolour=True, defocus=0.25, procedural=0.5))
    assert source.config.still_objects == 2 and source.config.recolour and source.config.defocus == 0.25
    assert source.config.procedural == 0.5
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(folder / "a.png")
    assert make_source(small_run(tmp_path, pictures=str(folder))).config.pictures == (str(folder / "a.png"),)
    with pytest.raises(UserError, match="--pictures applies to --data synthetic"):
        small_run(tmp_path / "bad", data=str(tmp_path), pictures=str(folder))
    for flag in ("defocus", "procedural"):
        with pytest.raises(UserError, match=f"--{flag} must lie in"):
            small_run(tmp_path / "bad", **{flag: 2.0})
        with pytest.raises(UserError, match=f"--{flag} applies to --data synthetic"):
            small_run(tmp_path / "bad", data=str(tmp_path), **{flag: 0.5})
    with pytest.raises(UserError, match="--still-objects must be 0 or more"):
        small_run(tmp_path / "bad", still_objects=-1)
    with pytest.raises(UserError, match="--still-objects applies to --data synthetic"):
        small_run(tmp_path / "bad", data=str(tmp_path), still_objects=1)
    with pytest.raises(UserError, match="--recolour applies to --data synthetic"):
        small_run(tmp_path / "bad", data=str(tmp_path), recolour=True)


def test_busier_scenes_reach_the_data_and_blur_more_of_each_crop(tmp_path: Path) -> None:
    # The point of the two flags: a larger blurred share per crop, so more restoration signal per step.
    plain = make_source(small_run(tmp_path, crop=96))
    busy = make_source(small_run(tmp_path, crop=96, moving_objects=8, object_size=(0.3, 0.6)))
    assert busy.config.max_objects == 8 and busy.config.object_scale == (0.3, 0.6)
    assert plain.config.max_objects == 3 and plain.config.object_scale == (0.2, 0.5)
    share = {name: float(torch.cat([src.batch(step, 0, 1)["mask"] for step in range(4)]).mean())
             for name, src in (("plain", plain), ("busy", busy))}
    assert share["busy"] > 1.5 * share["plain"]
    for bad, message in (({"moving_objects": 0}, "--moving-objects must be 1 or more"),
                         ({"object_size": (0.6, 0.3)}, "--object-size must be two fractions"),
                         ({"object_size": (0.0, 0.5)}, "--object-size must be two fractions"),
                         ({"data": str(tmp_path), "moving_objects": 5}, "--moving-objects applies to --data synthetic"),
                         ({"data": str(tmp_path), "object_size": (0.3, 0.6)}, "--object-size applies to --data synthetic")):
        with pytest.raises(UserError, match=message):
            small_run(tmp_path / "bad", **bad)


def test_object_size_flag_is_parsed_or_refused_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    from m2ae.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "x", "--moving-objects", "8", "--object-size", "0.3,0.6"])
    assert args.moving_objects == 8 and args.object_size == (0.3, 0.6)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--object-size", "0.3"])
    assert "expected two fractions LO,HI" in capsys.readouterr().err


# ------------------------------------------------------------------ fine-tune


def test_init_fine_tunes_from_a_checkpoint(finished_run: Path, tmp_path: Path) -> None:
    start = load_checkpoint(finished_run / FINAL)
    # A first step at a negligible rate leaves the weights where the checkpoint had them,
    # not where the run's seed would draw them.
    train(small_run(tmp_path / "tuned", steps=1, ckpt_every=1, lr=1e-12, seed=5, init=str(finished_run / FINAL),
                    gates=GateAugment(predicted=1.0)), progress=False)
    tuned = dict(load_checkpoint(tmp_path / "tuned" / FINAL).model.named_parameters())
    # Parameters only: a training step moves the BatchNorm running statistics whatever the rate.
    for name, value in start.model.named_parameters():
        assert torch.allclose(tuned[name], value, atol=1e-6), name
    train(small_run(tmp_path / "fresh", steps=1, ckpt_every=1, lr=1e-12, seed=5), progress=False)
    fresh = load_checkpoint(tmp_path / "fresh" / FINAL)
    assert not torch.allclose(fresh.model.stem.weight, start.model.stem.weight)


def test_only_mask_head_trains_the_head_alone_and_may_replace_it(finished_run: Path, tmp_path: Path) -> None:
    start = load_checkpoint(finished_run / FINAL)
    train(small_run(tmp_path / "same", steps=2, ckpt_every=2, only_mask_head=True, init=str(finished_run / FINAL)),
          progress=False)
    same = load_checkpoint(tmp_path / "same" / FINAL)
    before, after = start.model.state_dict(), same.model.state_dict()
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.startswith("mask_head.") for name in moved)
    # A new head (another stem) on the checkpoint's body: the body's weights are kept.
    train(small_run(tmp_path / "new", steps=2, ckpt_every=2, only_mask_head=True, mask_stem="conv", mask_context=1,
                    mask_channels=12, init=str(finished_run / FINAL)), progress=False)
    new = load_checkpoint(tmp_path / "new" / FINAL)
    assert (new.config.mask_stem, new.config.mask_context, new.config.mask_channels) == ("conv", 1, 12)
    assert isinstance(new.model.mask_head, ConvMaskHead)
    for name, value in new.model.state_dict().items():
        if not name.startswith("mask_head."):
            assert torch.equal(value, before[name]), name
    # The run resumes as a head-only run.
    assert train(small_run(tmp_path / "new", steps=3, ckpt_every=1, only_mask_head=True, mask_stem="conv",
                           mask_context=1, mask_channels=12, init=str(finished_run / FINAL)),
                 resume=True, progress=False).step == 3
    with pytest.raises(UserError, match="--mask-channels 0: mask_channels must be a positive integer"):
        train(small_run(tmp_path / "bad", mask_channels=0), progress=False)


def test_data_workers_make_the_same_batches(tmp_path: Path) -> None:
    ahead, _ = run(small_run(tmp_path / "ahead", steps=3, data_workers=1))
    inline, _ = run(small_run(tmp_path / "inline", steps=3, data_workers=0))
    assert ahead == inline
    with pytest.raises(UserError, match="--data-workers"):
        small_run(tmp_path / "bad", data_workers=-1)


def test_a_fine_tune_resumes_after_its_init_file_moved(finished_run: Path, tmp_path: Path) -> None:
    init = tmp_path / "start.pt"
    shutil.copy(finished_run / FINAL, init)
    run = tmp_path / "tuned"
    train(small_run(run, steps=1, ckpt_every=1, init=str(init)), progress=False)
    init.unlink()
    assert train(small_run(run, steps=2, ckpt_every=1, init=str(init)), resume=True, progress=False).step == 2


def test_mask_opening_is_set_by_a_run_and_may_change_in_a_fine_tune(finished_run: Path, tmp_path: Path) -> None:
    start = load_checkpoint(finished_run / FINAL)
    assert start.config.mask_opening == 0
    train(small_run(tmp_path / "opened", steps=1, ckpt_every=1, lr=1e-12, mask_opening=2, init=str(finished_run / FINAL),
                    gates=GateAugment(predicted=1.0)), progress=False)
    opened = load_checkpoint(tmp_path / "opened" / FINAL)
    assert opened.config.mask_opening == 2
    assert dataclasses.replace(opened.config, mask_opening=0, threshold=start.config.threshold) == start.config
    with pytest.raises(UserError, match="--mask-opening -1: mask_opening must be an integer, 0 or more"):
        train(small_run(tmp_path / "bad", mask_opening=-1), progress=False)
    assert not (tmp_path / "bad").exists()


def test_init_keeps_the_checkpoint_network(finished_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="preset 'tiny', not 'base'"):
        train(small_run(tmp_path / "a", preset="base", init=str(finished_run / FINAL)), progress=False)
    with pytest.raises(UserError, match="--mask-context 2: the --init checkpoint"):
        train(small_run(tmp_path / "b", mask_context=2, init=str(finished_run / FINAL)), progress=False)
    with pytest.raises(UserError, match="--mask-stem conv: the --init checkpoint's mask head has mask stem unshuffle"):
        train(small_run(tmp_path / "b", mask_stem="conv", init=str(finished_run / FINAL)), progress=False)
    with pytest.raises(UserError, match="no such checkpoint"):
        train(small_run(tmp_path / "c", init=str(tmp_path / "missing.pt")), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_runs_saved_before_a_setting_existed_still_resume(tmp_path: Path) -> None:
    train(small_run(tmp_path, steps=1, ckpt_every=1), progress=False)
    state = torch.load(tmp_path / LAST, weights_only=True)
    del state["train"]["gates"]["predicted"]
    del state["train"]["init"]
    torch.save(state, tmp_path / LAST)
    assert train(small_run(tmp_path, steps=2, ckpt_every=1), resume=True, progress=False).step == 2
