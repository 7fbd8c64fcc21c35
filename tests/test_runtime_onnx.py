"""CPU runtime: ONNX Runtime engines for every variant behind one interface, and ``m2ae infer``
(padding and cropping, image modes, and one-line errors with no partial output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from factories import SMALL_CONFIG, ExportedModels
from PIL import Image

from m2ae.cli import main
from m2ae.errors import UserError
from m2ae.export.onnx_export import model_filename
from m2ae.model import checkpoint as checkpoint_module
from m2ae.model.checkpoint import load_checkpoint
from m2ae.runtime.base import open_engine
from m2ae.runtime.onnx_engine import OnnxRuntimeEngine
from m2ae.runtime.torch_engine import TorchEngine

CONFIG = SMALL_CONFIG
VARIANTS = ("plugin", "portable", "dense")
TOL = 1e-4


class Models:
    """The session's exported models: the checkpoint and its fp32 ONNX files."""

    def __init__(self, exported: ExportedModels) -> None:
        self.checkpoint = exported.checkpoint
        self.out = exported.out

    def onnx(self, variant: str, mask_input: bool = False) -> Path:
        return self.out / model_filename(variant, "fp32", mask_input)


@pytest.fixture(scope="module")
def models(exported_models: ExportedModels) -> Models:
    return Models(exported_models)


def random_images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, height, width), dtype=np.float32)


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def rgb8(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name or p.suffix == ".tmp"]


# ---- engines -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs_behind_one_interface(models: Models, variant: str) -> None:
    engine = open_engine(models.onnx(variant))
    assert isinstance(engine, OnnxRuntimeEngine) and engine.backend == "onnxruntime"
    assert not engine.takes_mask and engine.multiple == CONFIG.multiple
    assert engine.metadata["m2ae.variant"] == variant
    torch_engine = open_engine(models.checkpoint)
    assert isinstance(torch_engine, TorchEngine) and torch_engine.backend == "torch"
    assert torch_engine.multiple == engine.multiple and not torch_engine.takes_mask
    assert torch_engine.metadata["m2ae.checkpoint_sha256"] == engine.metadata["m2ae.checkpoint_sha256"]
    for n, height, width in ((1, 32, 32), (2, 28, 44)):
        image = random_images(n, height, width, seed=height + width)
        out, ref = engine.infer(image), torch_engine.infer(image)
        assert out.restored.dtype == np.float32 and out.mask.dtype == np.float32
        assert out.restored.shape == image.shape and out.mask.shape == (n, 1, height, width)
        assert 0.0 < out.mask.mean() < 1.0
        np.testing.assert_array_equal(out.mask, ref.mask)
        assert np.abs(out.restored - ref.restored).max() <= TOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_mask_input_engines(models: Models, variant: str) -> None:
    engine = OnnxRuntimeEngine(models.onnx(variant, mask_input=True), threads=1)
    assert engine.takes_mask
    image = random_images(2, 32, 36, seed=5)
    mask = np.zeros((2, 1, 32, 36), np.float32)
    mask[0, :, :5, :] = 1.0
    mask[1, :, -3:, -7:] = 1.0
    out = engine.infer(image, mask)
    np.testing.assert_array_equal(out.mask, mask)
    sharp = np.broadcast_to(mask == 0, image.shape)
    np.testing.assert_array_equal(out.restored[sharp], image[sharp])
    assert np.abs(out.restored - image).max() > 1e-3
    with pytest.raises(ValueError, match="mask"):
        engine.infer(image)
    with pytest.raises(ValueError, match="mask"):
        engine.infer(image, mask[:1])


@pytest.mark.parametrize(
    "shape, needle",
    [((1, 1, 32, 32), r"\[N,3,H,W\]"), ((3, 32, 32), r"\[N,3,H,W\]"), ((1, 3, 30, 32), "multiples of 4"),
     ((1, 3, 4, 32), "at least 8x8")],
)
@pytest.mark.parametrize("backend", ["portable", "checkpoint"])
def test_engines_reject_bad_shapes(models: Models, shape: tuple[int, ...], needle: str, backend: str) -> None:
    engine = open_engine(models.checkpoint if backend == "checkpoint" else models.onnx("portable"))
    with pytest.raises(ValueError, match=needle):
        engine.infer(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="predicts its own mask"):
        engine.infer(np.zeros((1, 3, 32, 32), np.float32), np.zeros((1, 1, 32, 32), np.float32))


def test_the_graph_decides_whether_an_onnx_takes_a_mask(models: Models, tmp_path: Path) -> None:
    """m2ae.mask_input that contradicts the graph's inputs (edited, or an export older than
    the key) does not count: the engine feeds the inputs the graph has."""
    for mask_input in (False, True):
        model = onnx.load(models.onnx("portable", mask_input))
        (entry,) = [prop for prop in model.metadata_props if prop.key == "m2ae.mask_input"]
        assert entry.value == ("1" if mask_input else "0")
        entry.value = "0" if mask_input else "1"
        edited = tmp_path / f"edited_{mask_input}.onnx"
        onnx.save(model, edited)
        engine = OnnxRuntimeEngine(edited, threads=1)
        assert engine.takes_mask is mask_input and engine.info.mask_input is mask_input
        mask = np.ones((1, 1, 32, 32), np.float32) if mask_input else None
        assert engine.infer(random_images(1, 32, 32, seed=11), mask).restored.shape == (1, 3, 32, 32)


def test_torch_engine_takes_a_loaded_checkpoint_and_knows_what_an_export_records(
        models: Models, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_checkpoint(models.checkpoint)

    def no_reload(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loaded checkpoint was loaded again")

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", no_reload)
    pruned, dense = open_engine(loaded), TorchEngine(loaded, pruned=False)
    exported = {variant: open_engine(models.onnx(variant)) for variant in ("plugin", "dense")}
    assert isinstance(pruned, TorchEngine) and pruned.name == str(models.checkpoint)
    assert (pruned.info.variant, dense.info.variant) == ("pruned", "dense")
    for engine, onnx_engine in ((pruned, exported["plugin"]), (dense, exported["dense"])):
        for field in ("multiple", "min_size", "preset", "receptive_field", "threshold", "mask_dilation", "mask_opening", "tiles",
                      "dense_above", "blocks_per_gather", "checkpoint_sha256"):
            assert getattr(engine.info, field) == getattr(onnx_engine.info, field), field
    assert pruned.min_size == CONFIG.min_size and pruned.info.receptive_field is not None
    image = random_images(1, 32, 32, seed=12)
    np.testing.assert_array_equal(pruned.infer(image).mask, dense.infer(image).mask)


def test_closed_engines_refuse_to_run(models: Models) -> None:
    image = random_images(1, 32, 32, seed=13)
    for model in (models.checkpoint, models.onnx("dense")):
        with open_engine(model) as engine:
            engine.infer(image)
        with pytest.raises(UserError, match=r"this engine was closed"):
            engine.infer(image)


# ---- m2ae infer --------------------------------------------------------------------------


def expected_outputs(engine_path: Path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What infer should write for an HWC float image: pad (reflect) to 4, run, crop; 8-bit."""
    height, width = image.shape[:2]
    pad_h, pad_w = -height % CONFIG.multiple, -width % CONFIG.multiple
    chw = np.pad(image.transpose(2, 0, 1), ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
    out = open_engine(engine_path).infer(np.ascontiguousarray(chw)[None])
    restored = out.restored[0, :, :height, :width].transpose(1, 2, 0)
    return np.round(np.clip(restored, 0, 1) * 255).astype(np.uint8), out.mask[0, 0, :height, :width] > 0.5


@pytest.mark.parametrize("model", ["plugin", "dense", "checkpoint"])
def test_infer_odd_size_pads_and_crops(models: Models, tmp_path: Path, model: str) -> None:
    model_path = models.checkpoint if model == "checkpoint" else models.onnx(model)
    pixels = rgb8(37, 53, seed=1)
    source = write_png(tmp_path / "odd.png", pixels)
    out = tmp_path / "out"
    assert main(["infer", "--model", str(model_path), "--input", str(source), "--output", str(out), "--no-progress"]) == 0
    restored = np.asarray(Image.open(out / "odd_restored.png"))
    overlay = np.asarray(Image.open(out / "odd_mask.png"))
    assert restored.shape == overlay.shape == (37, 53, 3)
    want, mask = expected_outputs(model_path, pixels.astype(np.float32) / 255.0)
    assert 0 < mask.mean() < 1
    assert np.abs(restored.astype(int) - want.astype(int)).max() <= 1
    # Sharp pixels pass through unchanged, and the overlay leaves them untinted.
    np.testing.assert_array_equal(restored[~mask], pixels[~mask])
    np.testing.assert_array_equal(overlay[~mask], pixels[~mask])
    assert np.any(overlay[mask] != pixels[mask])
    assert not leftovers(out)


def test_infer_folder_converts_image_modes(models: Models, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    write_png(folder / "gray.png", rng.integers(0, 256, (33, 41), dtype=np.uint8))
    write_png(folder / "rgba.png", rng.integers(0, 256, (40, 36, 4), dtype=np.uint8), mode="RGBA")
    wide = Image.fromarray(rng.integers(0, 65536, (29, 47), dtype=np.uint16).astype(np.uint16))
    assert wide.mode.startswith("I")
    wide.save(folder / "deep16.png")
    write_png(folder / "rgb.png", rgb8(32, 32, seed=3))
    Image.fromarray(rgb8(36, 44, seed=4)).save(folder / "photo.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image, and not listed as one")
    out = tmp_path / "out"
    code = main(["infer", "--model", str(models.onnx("portable")), "--input", str(folder), "--output", str(out),
                 "--no-progress"])
    assert code == 0
    sizes = {"gray": (33, 41), "rgba": (40, 36), "deep16": (29, 47), "rgb": (32, 32), "photo": (36, 44)}
    for stem, (height, width) in sizes.items():
        for suffix in ("restored", "mask"):
            written = Image.open(out / f"{stem}_{suffix}.png")
            assert written.mode == "RGB" and written.size == (width, height), f"{stem}_{suffix}"
    assert len(list(out.iterdir())) == 2 * len(sizes)
    # The grayscale input stays gray where it passes through (replicated to three channels).
    gray_in = np.asarray(Image.open(folder / "gray.png"))
    gray_out = np.asarray(Image.open(out / "gray_restored.png"))
    assert np.mean(gray_out == gray_in[..., None].repeat(3, axis=2)) > 0.1


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_infer_bad_image_files(models: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(models.onnx("plugin"))
    out = tmp_path / "out"
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is text, not a PNG")
    _fails(["infer", "--model", model, "--input", str(fake), "--output", str(out), "--no-progress"], capsys, str(fake))
    small = write_png(tmp_path / "tiny.png", rgb8(6, 40, seed=5))
    _fails(["infer", "--model", model, "--input", str(small), "--output", str(out), "--no-progress"],
           capsys, str(small), "image is 6x40", "at least 8x8")  # height x width, as every m2ae size
    truncated = tmp_path / "cut.png"
    write_png(truncated, rgb8(32, 32, seed=6))
    truncated.write_bytes(truncated.read_bytes()[:200])
    _fails(["infer", "--model", model, "--input", str(truncated), "--output", str(out), "--no-progress"],
           capsys, str(truncated))
    _fails(["infer", "--model", model, "--input", str(tmp_path / "missing.png"), "--output", str(out),
            "--no-progress"], capsys, "missing.png")
    if out.exists():
        assert not list(out.glob("*_restored.png")) and not list(out.glob("*_mask.png"))
        assert not leftovers(out)


def test_infer_folder_skips_a_bad_image_and_goes_on(models: Models, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_png(folder / "a_good.png", rgb8(32, 32, seed=7))
    (folder / "b_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    write_png(folder / "c_good.png", rgb8(32, 32, seed=8))
    out = tmp_path / "out"
    code = main(["infer", "--model", str(models.onnx("portable")), "--input", str(folder), "--output", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.splitlines()[-1] == "m2ae infer: 1 of 3 images failed: b_bad.png"
    assert (out / "a_good_restored.png").exists() and (out / "c_good_restored.png").exists()
    assert not (out / "b_bad_restored.png").exists() and not (out / "b_bad_mask.png").exists()
    assert not leftovers(out)


def test_infer_bad_models(models: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(write_png(tmp_path / "img.png", rgb8(32, 32, seed=9)))
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(models.checkpoint.read_bytes()[:1000])
    unknown = tmp_path / "model.bin"
    unknown.write_bytes(models.onnx("portable").read_bytes())
    bare = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["restored"])], "bare",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
        [onnx.helper.make_tensor_value_info("restored", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
    ))
    no_metadata = tmp_path / "bare.onnx"
    onnx.save(bare, no_metadata)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not protobuf at all \xff" * 10)
    cases = [(corrupt, ()), (unknown, (".bin",)), (no_metadata, ("m2ae",)), (garbage, ()),
             (tmp_path / "absent.onnx", ()), (models.onnx("plugin", mask_input=True), ("mask",))]
    for path, needles in cases:
        _fails(["infer", "--model", str(path), "--input", image, "--output", str(out), "--no-progress"],
               capsys, str(path) if path.name != "plugin_maskin_fp32.onnx" else "mask", *needles)
    assert not out.exists() or not any(out.iterdir())


def test_infer_output_is_a_file(models: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(write_png(tmp_path / "img.png", rgb8(32, 32, seed=10)))
    target = tmp_path / "taken"
    target.write_text("a file")
    _fails(["infer", "--model", str(models.onnx("dense")), "--input", image, "--output", str(target),
            "--no-progress"], capsys, str(target))
    assert target.read_text() == "a file"


def test_open_engine_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such model file"):
        open_engine(tmp_path / "nothing.onnx")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"x")
    with pytest.raises(UserError, match=r"weights\.h5.*unknown model type"):
        open_engine(odd)
