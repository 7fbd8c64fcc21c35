"""Every user mistake ends in one line on stderr and exit 2, before any work and with
nothing written: unwritable output locations, out-of-range options, broken checkpoints
and models, and NaN/Inf in weights or outputs. Also: commands that own an output folder
clear the temporary files a killed run left there."""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from m2ae.cli import main
from m2ae.errors import UserError
from m2ae.model.checkpoint import load_checkpoint, shipped_path
from m2ae.model.config import PRESETS
from m2ae.model.train import _free_memory_bytes
from m2ae.platform_info import detect_platform, tensorrt_unavailable
from m2ae.runtime.base import EngineOutputs
from m2ae.runtime.checks import check_finite_outputs
from m2ae.runtime.torch_engine import TorchEngine


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``m2ae ARGV``; assert exit 2 and a single ``m2ae CMD: error:`` line; return that line."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"m2ae {argv[0]}: error: "), lines[0]
    return lines[0]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the current folder, so a stray relative write would show in its tree."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_state() -> dict:
    return torch.load(shipped_path("tiny"), map_location="cpu", weights_only=True)


# ---- unwritable output locations ---------------------------------------------------------------

# command -> (argv given the unwritable location and a writable folder, the option named, folder or file)
OUTPUTS: dict[str, tuple[Callable[[Path, Path], list[str]], str, str]] = {
    "export --out": (lambda bad, ok: ["export", "--out", str(bad), "--no-progress"], "--out", "dir"),
    "eval --json": (lambda bad, ok: ["eval", "--json", str(bad), "--num-images", "1", "--size", "32",
                                     "--no-progress"], "--json", "file"),
    "parity --json": (lambda bad, ok: ["parity", "--candidates", str(ok / "m.onnx"), "--json", str(bad)],
                      "--json", "file"),
    "parity --out": (lambda bad, ok: ["parity", "--candidates", str(ok / "m.onnx"), "--out", str(bad)],
                     "--out", "dir"),
    "bench --out": (lambda bad, ok: ["bench", "--backends", "onnx", "--out", str(bad), "--no-progress"],
                    "--out", "dir"),
    "bench --models": (lambda bad, ok: ["bench", "--backends", "onnx", "--out", str(ok / "bench"),
                                        "--models", str(bad), "--no-progress"], "--models", "dir"),
    "demo --out": (lambda bad, ok: ["demo", "--out", str(bad), "--no-progress"], "--out", "dir"),
    "train --out": (lambda bad, ok: ["train", "--out", str(bad), "--steps", "1", "--no-progress"], "--out", "dir"),
    "build --out": (lambda bad, ok: ["build", "--onnx", str(ok / "m.onnx"), "--out", str(bad)], "--out", "file"),
    "build --cache-dir": (lambda bad, ok: ["build", "--onnx", str(ok / "m.onnx"), "--out", str(ok / "m.engine"),
                                           "--cache-dir", str(bad)], "--cache-dir", "dir"),
    "plugin build --out": (lambda bad, ok: ["plugin", "build", "--kernels-only", "--out", str(bad)], "--out", "dir"),
}


@pytest.mark.parametrize("case", OUTPUTS)
def test_output_under_a_file_is_refused_before_any_work(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                        case: str) -> None:
    # A regular file where a folder must go: unwritable even for root, which CI runs as.
    blocker = workdir / "blocker"
    blocker.write_text("not a folder")
    argv_for, option, _ = OUTPUTS[case]
    bad = blocker / "sub" / "out"
    before = tree(workdir)
    line = one_error_line(capsys, argv_for(bad, workdir))
    assert f"{option} {bad}:" in line and f"under {blocker}, which is a file" in line
    assert tree(workdir) == before
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("case", OUTPUTS)
def test_output_of_the_wrong_kind_is_refused(workdir: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    argv_for, option, kind = OUTPUTS[case]
    bad = workdir / "taken"
    if kind == "dir":
        bad.write_text("a file where the folder should be")
        needle = "is a file, not a folder"
    else:
        bad.mkdir()
        needle = "is a folder; give a file name"
    before = tree(workdir)
    line = one_error_line(capsys, argv_for(bad, workdir))
    assert f"{option} {bad}: {needle}" in line
    assert tree(workdir) == before


@pytest.mark.slow
def test_read_only_mount_is_refused_before_training(tmp_path: Path) -> None:
    """A read-only filesystem, where a probe file cannot be made though os.access says yes to root."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    folder = tmp_path / "ro"
    folder.mkdir()
    # A private mount namespace: the read-only bind mount vanishes with the child.
    namespace = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--mount"]
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" || exit 99; exec "$@"'
    result = subprocess.run(
        [*namespace, "sh", "-c", script, str(folder), sys.executable, "-m", "m2ae", "train", "--out",
         str(folder / "run"), "--steps", "1", "--no-progress"],
        # Not from the checkout: its bare m2ae/ folder would shadow the installed package.
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    if result.returncode == 99 or "unshare:" in result.stderr:
        pytest.skip(f"a read-only bind mount is not permitted here: {result.stderr.strip().splitlines()[-1:]}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"m2ae train: error: --out {folder / 'run'}: cannot write there")
    assert "read-only filesystem" in lines[0]
    assert tree(folder) == []


# ---- options out of range ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["--lr", "nan"], "--lr must be a positive number, got nan"),
        (["--lr", "inf"], "--lr must be a positive number, got inf"),
        (["--seed", "-1"], "--seed must be 0 or more"),
        (["--teacher-forcing", "-1"], "--teacher-forcing must be 0"),
        (["--teacher-forcing", "nan"], "--teacher-forcing must be 0"),
    ],
)
def test_train_rejects_bad_values(workdir: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                  needle: str) -> None:
    line = one_error_line(capsys, ["train", "--out", str(workdir / "run"), "--steps", "1", "--no-progress", *extra])
    assert needle in line
    assert tree(workdir) == []


def test_train_refuses_a_crop_that_cannot_fit_in_memory(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if _free_memory_bytes() is None:
        pytest.skip("free memory cannot be read on this system")
    line = one_error_line(capsys, ["train", "--out", str(workdir / "run"), "--crop", "100000", "--no-progress"])
    assert "--crop 100000 --batch-size 8: a training step needs about" in line
    assert "GiB available; lower --crop (below about" in line
    assert tree(workdir) == []


def test_crop_memory_estimate_is_in_line_with_measurements() -> None:
    # Peak RSS of a CPU step (batch 2, crops of 256 to 512): tiny ~4.3 kB, base ~17 kB per pixel.
    for name, measured in (("tiny", 4300), ("base", 17000)):
        estimate = PRESETS[name].train_step_bytes(2, 512) / (2 * 512 * 512)
        assert 0.75 * measured <= estimate <= measured, name


@pytest.mark.parametrize("opset", ["16", "21", "99"])
def test_export_rejects_an_unsupported_opset(workdir: Path, capsys: pytest.CaptureFixture[str], opset: str) -> None:
    line = one_error_line(capsys, ["export", "--out", str(workdir / "onnx"), "--opset", opset, "--no-progress"])
    assert f"--opset {opset}: m2ae exports ONNX opsets 17 to 20" in line
    assert tree(workdir) == []


def test_export_bad_tiles_name_the_option_and_the_value(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(capsys, ["export", "--out", str(workdir / "onnx"), "--tiles", "32,x", "--no-progress"])
    assert "--tiles 'x': not an integer" in line
    assert tree(workdir) == []


def test_pruning_tiles_keep_their_order_and_repeats() -> None:
    """One side per U-Net scale: 32,32,16 is three scales, not two."""
    from m2ae.export.commands import add_pruning_options, pruning_options

    parser = argparse.ArgumentParser()
    add_pruning_options(parser)
    assert pruning_options(parser.parse_args(["--tiles", "32, 32,16"])).tiles == (32, 32, 16)


@pytest.mark.skipif(tensorrt_unavailable() is None, reason="TensorRT and a GPU are present: the trt backend runs")
def test_bench_with_only_an_unavailable_backend_is_an_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(capsys, ["bench", "--backends", "trt", "--out", str(workdir / "bench"), "--no-progress"])
    assert line.startswith("m2ae bench: error: --backends trt: nothing can be measured here")
    if detect_platform().tensorrt_version is None:
        assert "TensorRT is not installed; install it with: " in line
    assert tree(workdir) == []


# ---- broken checkpoints and models -------------------------------------------------------------


def test_checkpoint_with_a_negative_width_names_the_field(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                          tiny_state: dict) -> None:
    state = copy.deepcopy(tiny_state)
    state["config"]["width"] = -16
    path = workdir / "negative.pt"
    torch.save(state, path)
    before = tree(workdir)
    line = one_error_line(capsys, ["export", "--checkpoint", str(path), "--out", str(workdir / "onnx"),
                                   "--no-progress"])
    assert f"{path}: checkpoint has an invalid model config: width must be a positive integer, got -16" in line
    assert tree(workdir) == before


@pytest.mark.parametrize("where", ["mask_head.stem.conv.weight", "proj.conv.bias"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_checkpoint_with_nan_or_inf_weights_is_refused(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                       tiny_state: dict, where: str, value: float) -> None:
    state = copy.deepcopy(tiny_state)
    state["model"][where].view(-1)[0] = value
    path = workdir / "diverged.pt"
    torch.save(state, path)
    before = tree(workdir)
    line = one_error_line(capsys, ["eval", "--checkpoint", str(path), "--json", str(workdir / "e.json"),
                                   "--no-progress"])
    assert f"{path}: weight {where!r} holds 1 NaN/Inf value(s)" in line
    assert tree(workdir) == before


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _truncated(path: Path) -> None:
    data = shipped_path("tiny").read_bytes()
    path.write_bytes(data[: len(data) // 2])


class _Opaque:
    pass


def _pickled_object(path: Path) -> None:
    torch.save({"format": "m2ae-checkpoint-v1", "model": _Opaque()}, path)


@pytest.mark.parametrize(
    "write, reason",
    [
        (_garbage, "it is not a file written by torch.save"),
        (_truncated, "it is empty or cut short (a copy or a save that did not finish); copy it again"),
        (_pickled_object, "it holds a pickled Python object ("),
    ],
)
def test_unreadable_checkpoint_gives_a_whole_reason(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                    write: Callable[[Path], None], reason: str) -> None:
    path = workdir / "broken.pt"
    write(path)
    line = one_error_line(capsys, ["eval", "--checkpoint", str(path), "--no-progress"])
    assert line.startswith(f"m2ae eval: error: {path}: not a readable m2ae checkpoint: {reason}")
    # PyTorch's paragraphs of weights_only=False advice never reach the user.
    assert "weights_only` set to `False" not in line and "Re-running" not in line
    assert tree(workdir) == ["broken.pt"]


def test_mismatched_weights_list_what_differs(workdir: Path, tiny_state: dict) -> None:
    state = copy.deepcopy(tiny_state)
    state["model"].pop("mask_head.stem.conv.weight")
    state["model"]["proj.conv.bias"] = torch.zeros(7)
    path = workdir / "mismatch.pt"
    torch.save(state, path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"{path}: weights do not match the 'tiny' network its config describes: 1 missing (first "
        "'mask_head.stem.conv.weight'); 1 of another shape (first 'proj.conv.bias': [7] in the file, [3] in the "
        "network)"
    )


def _onnx_with_metadata(path: Path, metadata: dict[str, str]) -> Path:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    restored = helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["restored"])], "g", [image], [restored])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, metadata)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("key, value", [("m2ae.multiple", "eight"), ("m2ae.multiple", "2.5"),
                                        ("m2ae.min_size", "big"), ("m2ae.multiple", "0")])
def test_onnx_metadata_that_is_not_a_number_names_key_and_file(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                               key: str, value: str) -> None:
    metadata = {"m2ae.multiple": "4", key: value}
    model = _onnx_with_metadata(workdir / "odd.onnx", metadata)
    before = tree(workdir)
    for argv in (["parity", "--candidates", str(model), "--json", str(workdir / "p.json")],
                 ["build", "--onnx", str(model), "--out", str(workdir / "odd.engine")]):
        line = one_error_line(capsys, argv)
        assert f"{model}: metadata {key}={value!r} " in line
    assert tree(workdir) == before


# ---- NaN / Inf outputs -------------------------------------------------------------------------


def _outputs(restored: float = 0.5, mask: float = 1.0) -> EngineOutputs:
    return EngineOutputs(np.full((1, 3, 8, 8), restored, np.float32), np.full((1, 1, 8, 8), mask, np.float32))


def test_finite_outputs_pass_through_unchanged() -> None:
    outputs = _outputs()
    assert check_finite_outputs(outputs, "m.onnx") is outputs
    # Large but finite values overflow the fast dot-product test; the exact recheck passes them.
    assert check_finite_outputs(_outputs(restored=1e30), "m.onnx").restored[0, 0, 0, 0] == np.float32(1e30)


@pytest.mark.parametrize("name, outputs, count",
                         [("restored", _outputs(restored=np.nan), 192), ("blur_mask", _outputs(mask=np.inf), 64),
                          ("restored", _outputs(restored=-np.inf), 192)])
def test_nan_or_inf_outputs_are_an_error(name: str, outputs: EngineOutputs, count: int) -> None:
    with pytest.raises(UserError, match=rf"^m\.engine: output '{name}' holds {count} NaN/Inf value\(s\) of "):
        check_finite_outputs(outputs, Path("m.engine"))


def test_torch_engine_refuses_nan_outputs() -> None:
    engine = TorchEngine("tiny", pruned=False)
    image = np.full((1, 3, 32, 32), 0.5, np.float32)
    image[0, :, 3, 4] = np.nan
    with pytest.raises(UserError, match=rf"^{shipped_path('tiny')}: output 'restored' holds \d+ NaN/Inf"):
        engine.infer(image)


# ---- stale temporary files ---------------------------------------------------------------------


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# command -> (argv that gets past the output checks and then fails, folders it must clean, given its --out)
CLEANERS: dict[str, tuple[Callable[[Path], list[str]], Callable[[Path], list[Path]]]] = {
    "export": (lambda out: ["export", "--checkpoint", "missing.pt", "--out", str(out), "--no-progress"],
               lambda out: [out]),
    "bench": (lambda out: ["bench", "--backends", "onnx", "--checkpoint", "missing.pt", "--out", str(out),
                           "--no-progress"], lambda out: [out, out / "models"]),
    "demo": (lambda out: ["demo", "--checkpoint", "missing.pt", "--out", str(out), "--no-progress"],
             lambda out: [out, out / "data", out / "engines"]),
    "parity": (lambda out: ["parity", "--reference", "missing.onnx", "--candidates", "m.onnx", "--out", str(out)],
               lambda out: [out]),
    "train": (lambda out: ["train", "--resume", "--out", str(out), "--steps", "1", "--crop", "32", "--batch-size",
                           "1", "--no-progress"], lambda out: [out]),
}


@pytest.mark.parametrize("command", CLEANERS)
def test_commands_remove_stale_temps_from_their_folders(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                        dead_pid: int, command: str) -> None:
    argv_for, folders_for = CLEANERS[command]
    out = workdir / "out"
    stale, kept = [], []
    for folder in folders_for(out):
        folder.mkdir(parents=True, exist_ok=True)
        stale.append(folder / f".results.json.{dead_pid}-{uuid.uuid4().hex}.tmp")
        kept.append(folder / "results.json")
        for path in (stale[-1], kept[-1]):
            path.write_text("x")
    one_error_line(capsys, argv_for(out))  # fails on the missing model, after the clean-up
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "x" for path in kept)
