"""``m2ae infer`` on folders as a batch job: names that cannot collide, bad files reported and
skipped, ``--skip-existing``, stale temporary files removed, options and the output folder
checked before any work."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from factories import one_torch_thread, perturbed_model
from PIL import Image

from m2ae.cli import main
from m2ae.model.checkpoint import save_checkpoint
from m2ae.model.config import M2AEConfig
from m2ae.runtime.base import open_engine
from m2ae.runtime.infer import InferOptions, infer_files, output_names

CONFIG = M2AEConfig(
    preset="custom", width=4, num_scales=3, enc_blocks=(1, 1, 1), dec_blocks=(1, 1), motion_channels=4, mask_channels=4
)
#: above the largest process id Linux hands out (pid_max is at most 2**22): never a live writer
DEAD_PID = 2**22 + 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "net.pt"
    save_checkpoint(path, {"config": CONFIG.to_dict(), "step": 1, "model": perturbed_model(CONFIG, 0).state_dict()})
    return path


def rgb8(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def mixed_folder(root: Path) -> Path:
    """Three inputs sharing the stem 'photo', two good ones, a corrupt file and a too-small image."""
    folder = root / "in"
    folder.mkdir()
    Image.fromarray(rgb8(40, 48, 1)).save(folder / "photo.jpg", quality=95)
    Image.fromarray(rgb8(36, 44, 2)).save(folder / "photo.tif")
    Image.fromarray(rgb8(32, 40, 3)).save(folder / "photo.webp", lossless=True)
    Image.fromarray(rgb8(33, 35, 4)).save(folder / "a_good.png")
    Image.fromarray(rgb8(48, 32, 5)).save(folder / "z_good.png")
    (folder / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(rgb8(6, 40, 6)).save(folder / "c_small.png")
    return folder


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with one_torch_thread():
        code = main(["infer", *args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def outputs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


EXPECTED = {
    f"{name}{suffix}"
    for name in ("photo.jpg", "photo.tif", "photo.webp", "a_good", "z_good")
    for suffix in ("_restored.png", "_mask.png")
}


def test_output_names_keep_the_extension_only_where_stems_clash() -> None:
    inputs = [Path(n) for n in ("photo.jpg", "Photo.TIF", "photo.jpg.png", "other.png", "x.png", "x.jpeg.png")]
    names = output_names(inputs)
    assert names == {
        Path("photo.jpg"): "photo.jpg",
        Path("Photo.TIF"): "Photo.TIF",
        # its stem is another input's whole name: whole names are unique, so it takes its own
        Path("photo.jpg.png"): "photo.jpg.png",
        Path("other.png"): "other",
        Path("x.png"): "x",
        Path("x.jpeg.png"): "x.jpeg",
    }
    assert len({n.casefold() for n in names.values()}) == len(inputs)


def test_mixed_folder_goes_on_past_bad_files(checkpoint: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = mixed_folder(tmp_path)
    out = tmp_path / "out"
    code, stdout, stderr = run(["--model", str(checkpoint), "--input", str(folder), "--output", str(out)], capsys)
    assert code == 1, stderr
    assert outputs(out) == EXPECTED
    # one line per file as it finishes: five written, two failed, then the summary
    assert len(stdout.splitlines()) == 5 and all(" -> " in line for line in stdout.splitlines())
    lines = stderr.splitlines()
    assert any(line.startswith("failed: ") and "b_corrupt.png" in line for line in lines)
    assert any(line.startswith("failed: ") and "c_small.png" in line and "8x8" in line for line in lines)
    assert lines[-1] == "m2ae infer: 2 of 7 images failed: b_corrupt.png, c_small.png"
    for name in ("photo.jpg", "photo.tif", "photo.webp"):
        restored = Image.open(out / f"{name}_restored.png")
        assert restored.size == Image.open(folder / name).size


def test_python_api_returns_failures(checkpoint: Path, tmp_path: Path) -> None:
    folder = mixed_folder(tmp_path)
    with one_torch_thread():
        results = infer_files(open_engine(checkpoint), folder, tmp_path / "out", progress=False)
    status = {r.source.name: r.status for r in results}
    assert status == {"a_good.png": "done", "b_corrupt.png": "failed", "c_small.png": "failed", "photo.jpg": "done",
                      "photo.tif": "done", "photo.webp": "done", "z_good.png": "done"}
    failed = {r.source.name: r for r in results if r.status == "failed"}
    assert "corrupt" in failed["b_corrupt.png"].error and str(folder / "c_small.png") in failed["c_small.png"].error
    assert all(r.restored is None and r.overlay is None for r in failed.values())
    done = [r for r in results if r.status == "done"]
    assert all(r.restored.is_file() and r.overlay.is_file() and r.tiles == 1 for r in done)


def test_skip_existing_resumes_a_killed_run(checkpoint: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = mixed_folder(tmp_path)
    out = tmp_path / "out"
    args = ["--model", str(checkpoint), "--input", str(folder), "--output", str(out)]
    assert run(args, capsys)[0] == 1
    # a killed run: one image lost its overlay, another was never written, a temp file is left
    (out / "a_good_mask.png").unlink()
    (out / "z_good_restored.png").unlink()
    (out / "z_good_mask.png").unlink()
    stale = out / f".z_good_restored.png.{DEAD_PID}-{'0' * 32}.tmp"
    stale.write_bytes(b"half an image")
    kept = {name: (out / name).stat().st_mtime_ns for name in ("photo.jpg_restored.png", "photo.tif_mask.png")}
    code, stdout, stderr = run([*args, "--skip-existing"], capsys)
    assert code == 1, stderr
    assert outputs(out) == EXPECTED
    assert not stale.exists()
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    skipped = [line for line in stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 3 and all("photo." in line for line in skipped)
    redone = [line for line in stdout.splitlines() if " -> " in line]
    assert sorted(Path(line.split(" -> ")[0]).name for line in redone) == ["a_good.png", "z_good.png"]


def test_temps_of_live_writers_are_kept(checkpoint: Path, tmp_path: Path) -> None:
    folder = mixed_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    live = out / f".a_good_restored.png.{os.getpid()}-{'1' * 32}.tmp"
    live.write_bytes(b"being written")
    with one_torch_thread():
        infer_files(open_engine(checkpoint), folder, out, InferOptions(skip_existing=True), progress=False)
    assert live.exists()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_unwritable_output_fails_before_any_work(checkpoint: Path, tmp_path: Path, where: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = mixed_folder(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("a file")
    out = taken if where == "file" else taken / "sub"
    code, stdout, stderr = run(["--model", str(checkpoint), "--input", str(folder), "--output", str(out)], capsys)
    assert code == 2
    assert stderr.count("\n") == 1 and "--output" in stderr and str(taken) in stderr, stderr
    assert stdout == ""
    assert taken.read_text() == "a file"
    assert {p.name for p in tmp_path.iterdir()} == {"in", "taken"}


@pytest.mark.parametrize("threads", ["0", "-1", "1000000"])
def test_threads_out_of_range(checkpoint: Path, tmp_path: Path, threads: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = mixed_folder(tmp_path)
    code, _, stderr = run(["--model", str(checkpoint), "--input", str(folder), "--output", str(tmp_path / "out"),
                           "--threads", threads], capsys)
    assert code == 2 and f"--threads {threads}" in stderr and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "needle"), [(["--tile", "90"], "multiple"), (["--tile", "40"], "at least 84"),
                                                (["--max-memory", "lots"], "--max-memory"),
                                                (["--max-memory", "2MB"], "--max-memory"),
                                                (["--tile-batch", "0"], "--tile-batch")])
def test_bad_tiling_options_fail_before_any_work(checkpoint: Path, tmp_path: Path, option: list[str], needle: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = mixed_folder(tmp_path)
    out = tmp_path / "out"
    code, stdout, stderr = run(["--model", str(checkpoint), "--input", str(folder), "--output", str(out), *option],
                               capsys)
    assert code == 2 and needle in stderr and stderr.count("\n") == 1, stderr
    assert stdout == "" and not out.exists()


def test_tiled_folder_writes_what_whole_images_write(checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rgb8(150, 170, 7)).save(folder / "big.png")
    Image.fromarray(rgb8(40, 40, 8)).save(folder / "small.png")
    args = ["--model", str(checkpoint), "--input", str(folder)]
    assert run([*args, "--output", str(tmp_path / "whole")], capsys)[0] == 0
    code, stdout, _ = run([*args, "--output", str(tmp_path / "tiled"), "--tile", "112"], capsys)
    assert code == 0 and "tiles" in stdout
    for name in ("big_restored.png", "big_mask.png", "small_restored.png", "small_mask.png"):
        whole = np.asarray(Image.open(tmp_path / "whole" / name), dtype=int)
        tiled = np.asarray(Image.open(tmp_path / "tiled" / name), dtype=int)
        assert np.abs(whole - tiled).max() <= 1, name  # 8-bit rounding of values equal within 1e-4
