"""Tiled inference equals whole-image inference (PyTorch and ONNX Runtime, odd sizes, tile
batches, windows from a memory budget or an engine profile), and the receptive field it
relies on, derived from the config, covers the one measured on the dense model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from factories import SMALL_CONFIG, ExportedModels, one_torch_thread
from torch import nn

from m2ae.errors import UserError
from m2ae.export.onnx_export import model_filename
from m2ae.model.config import PRESETS, M2AEConfig
from m2ae.model.heads import HEAD_STRIDE
from m2ae.model.network import GATE_ONES, M2AENet
from m2ae.model.receptive_field import mask_footprint, mask_logits_footprint, receptive_field, restored_footprint
from m2ae.model_info import ModelInfo
from m2ae.runtime import tiling
from m2ae.runtime.base import Engine, EngineOutputs, open_engine
from m2ae.runtime.infer import restore_image
from m2ae.runtime.tiling import parse_memory, plan_tiles

CONFIG = SMALL_CONFIG
TOL = 1e-4
#: (height, width, tile, tile batch): odd sizes, sizes no tile divides, portrait and landscape
CASES = [(157, 203, 120, 1), (157, 203, 96, 3), (203, 157, 128, 2), (90, 250, 100, 4)]


class Models:
    """The session's exported models, opened by backend."""

    def __init__(self, exported: ExportedModels) -> None:
        self.checkpoint = exported.checkpoint
        self.out = exported.out

    def engine(self, backend: str) -> Engine:
        if backend == "torch":
            return open_engine(self.checkpoint)
        return open_engine(self.out / model_filename(backend, "fp32", False), threads=1)


@pytest.fixture(scope="module")
def models(exported_models: ExportedModels) -> Models:
    return Models(exported_models)


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


# ---- the receptive field ------------------------------------------------------------------


def measured_reach(config: M2AEConfig, size: int) -> tuple[int, int]:
    """(restored, mask logits): the furthest pixel, along H or W, that one perturbed input pixel
    changes in the dense model with random weights, in float64 so rounding noise stays far below
    real changes; perturbed at every phase of the network's multiple, where strided layers differ."""
    torch.manual_seed(0)
    model = M2AENet(config).double().eval()
    with torch.no_grad():
        for param in model.parameters():  # no zero-initialised branch may hide a path
            param.copy_(0.3 * torch.randn_like(param))
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_var.uniform_(0.5, 1.5)
        base = torch.rand(1, 3, size, size, dtype=torch.float64)
        centres = [size // 2 + k for k in range(config.multiple)]
        batch = base.repeat(1 + len(centres), 1, 1, 1)
        for i, c in enumerate(centres, start=1):
            batch[i, :, c, c] += 0.5
        out = model(batch, GATE_ONES)  # the gate's own reach is the logits'; all ones shows the body's
    reach = []
    for maps in (out.restored, out.mask_logits):
        furthest = 0
        for i, c in enumerate(centres, start=1):
            rows, cols = torch.nonzero((maps[i] - maps[0]).abs().amax(dim=0) > 1e-9, as_tuple=True)
            assert rows.numel(), "the perturbation changed nothing"
            furthest = max(furthest, int((rows - c).abs().max()), int((cols - c).abs().max()))
        assert furthest < size // 2 - config.multiple, "the image is too small to see the whole reach"
        reach.append(furthest)
    return reach[0], reach[1]


@pytest.mark.slow
@pytest.mark.parametrize("preset, context, stem", [("tiny", None, "unshuffle"), ("tiny", 2, "unshuffle"),
                                                   ("tiny", 0, "conv"), ("tiny", 2, "conv"), ("base", None, "unshuffle")])
def test_receptive_field_covers_the_measured_one(preset: str, context: int | None, stem: str) -> None:
    # Width does not change the reach; 4 channels keep the float64 forward fast.
    config = dataclasses.replace(PRESETS[preset], width=4, motion_channels=4, mask_channels=4, mask_stem=stem)
    if context is not None:
        config = dataclasses.replace(config, mask_context=context)
    derived = receptive_field(config)
    with one_torch_thread():
        body, logits = measured_reach(config, size=(2 * derived + 40) // config.multiple * config.multiple)
    # Exact for the plain head; the context branch's stride-2 convs are bounded as a 3x3
    # conv then a 2x block, one coarse pixel too far per level and side.
    slack = 0 if config.mask_context == 0 else HEAD_STRIDE * (2**(config.mask_context + 1) - 2)
    if stem == "conv":  # its two stride-2 convs too, at strides 1 and 2
        slack += 1 + 2
    assert logits <= mask_logits_footprint(config).radius <= logits + slack, (logits, mask_logits_footprint(config))
    # The body was measured under an all-ones gate; the context head's gate reaches far
    # enough to widen the restored image's footprint, so there only the bound holds.
    assert body <= restored_footprint(config).radius, (preset, body, derived)
    if config.mask_context == 0 and stem == "unshuffle":
        assert restored_footprint(config).radius <= body + 4, (preset, body, derived)
    assert derived == max(restored_footprint(config).radius, logits)


def test_receptive_field_grows_with_blocks_and_dilation() -> None:
    wider = dataclasses.replace(CONFIG, enc_blocks=(1, 1, 3))
    # two more bottleneck blocks at stride 4: two 3x3 convs each
    assert receptive_field(wider) == receptive_field(CONFIG) + 2 * 2 * 4
    dilated = dataclasses.replace(CONFIG, mask_dilation=40)
    assert receptive_field(dilated) > mask_logits_footprint(CONFIG).radius + 40 > receptive_field(CONFIG)
    # an opening of r pixels reaches r for the erosion and r more for the dilation
    opened = dataclasses.replace(CONFIG, mask_opening=20, mask_dilation=1)
    assert mask_footprint(opened).radius == mask_logits_footprint(CONFIG).radius + 20 + 21
    assert receptive_field(opened) > mask_logits_footprint(CONFIG).radius + 41 > receptive_field(CONFIG)


def test_every_engine_knows_the_receptive_field(models: Models) -> None:
    for backend in ("plugin", "dense"):
        metadata = models.engine(backend).metadata
        assert metadata["m2ae.receptive_field"] == str(receptive_field(CONFIG))
    for backend in ("torch", "plugin", "dense"):
        assert models.engine(backend).info.receptive_field == receptive_field(CONFIG)


# ---- plans ---------------------------------------------------------------------------------


@dataclasses.dataclass
class FakeEngine:
    """Just what plan_tiles reads."""

    info: ModelInfo = ModelInfo(multiple=4, min_size=8, receptive_field=37)
    backend: str = "torch"
    name: str = "fake.onnx"

    @property
    def multiple(self) -> int:
        return self.info.multiple


@pytest.mark.parametrize(("height", "width", "tile"), [(157, 203, 96), (1000, 37 * 4, 200), (64, 64, 96), (512, 96, 84)])
def test_plan_covers_every_pixel_once_with_a_full_halo(height: int, width: int, tile: int) -> None:
    engine = FakeEngine()
    plan = plan_tiles(engine, height, width, tile=tile)
    halo = plan.halo
    covered = np.zeros((plan.padded_height, plan.padded_width), dtype=int)
    for w in plan.windows:
        assert w.top % 4 == 0 and w.left % 4 == 0
        assert 0 <= w.top and w.top + plan.window_height <= plan.padded_height
        assert 0 <= w.left and w.left + plan.window_width <= plan.padded_width
        # the kept part is a halo away from every window edge that is not an image edge
        bottom, right = w.top + plan.window_height, w.left + plan.window_width
        assert w.top == 0 or w.keep_top - w.top >= halo
        assert w.left == 0 or w.keep_left - w.left >= halo
        assert bottom == plan.padded_height or bottom - w.keep_bottom >= halo
        assert right == plan.padded_width or right - w.keep_right >= halo
        covered[w.keep_top : w.keep_bottom, w.keep_left : w.keep_right] += 1
    assert (covered == 1).all()
    assert plan.tiled == (max(plan.padded_height, plan.padded_width) > tile)


def test_plan_from_memory_budget() -> None:
    engine = FakeEngine()
    per_pixel = tiling.bytes_per_pixel(engine)
    assert per_pixel == max(v for (b, _), v in tiling.BYTES_PER_PIXEL.items() if b == "torch")  # custom preset
    whole = plan_tiles(engine, 400, 300, max_memory=per_pixel * 400 * 300)
    assert not whole.tiled and whole.halo == 0
    cut = plan_tiles(engine, 400, 300, max_memory=per_pixel * 200 * 200)
    assert cut.tiled and cut.window_height == cut.window_width == 200
    assert cut.window_height * cut.window_width * per_pixel <= per_pixel * 200 * 200
    with pytest.raises(UserError, match="--max-memory"):
        plan_tiles(engine, 400, 300, max_memory=per_pixel * 50 * 50)
    # the 8000x6000 photo of the issue, in the default budget
    big = plan_tiles(engine, 6000, 8000)
    assert big.tiled and big.window_height * big.window_width * per_pixel <= tiling.DEFAULT_MAX_MEMORY


def test_plan_rejects_bad_tiles() -> None:
    engine = FakeEngine()
    with pytest.raises(UserError, match="multiple of the network's multiple 4"):
        plan_tiles(engine, 400, 300, tile=130)
    with pytest.raises(UserError, match="at least 84"):
        plan_tiles(engine, 400, 300, tile=80)
    with pytest.raises(UserError, match="--tile-batch"):
        plan_tiles(engine, 400, 300, tile=96, batch=0)
    old = FakeEngine(info=ModelInfo(multiple=4, min_size=8))
    with pytest.raises(UserError, match=r"^fake\.onnx: .*re-export"):
        plan_tiles(old, 400, 300, tile=96)
    assert not plan_tiles(old, 400, 300).tiled  # fits the budget: no receptive field needed


@pytest.mark.parametrize(("text", "size"), [("2GB", 2 * 2**30), ("1.5G", int(1.5 * 2**30)), ("512MiB", 2**29),
                                            ("800 mb", 800 * 2**20)])
def test_parse_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "2 GBs", "-1GB", "lots", "10KB"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(UserError, match="--max-memory"):
        parse_memory(text)


# ---- tiled == whole -------------------------------------------------------------------------


def check_equal(engine: Engine, image: np.ndarray, reference: Engine | None = None, **tiling_options: int) -> None:
    whole, whole_mask = restore_image(reference or engine, image)
    tiled, tiled_mask = restore_image(engine, image, **tiling_options)
    assert tiled.shape == whole.shape and tiled_mask.shape == whole_mask.shape
    assert 0.05 < whole_mask.mean() < 0.95  # a partial mask: both the skipped and the restored pixels count
    np.testing.assert_array_equal(tiled_mask, whole_mask)
    assert np.abs(tiled - whole).max() <= TOL


@pytest.mark.parametrize("backend", ["torch", "plugin", "dense"])
@pytest.mark.parametrize(("height", "width", "tile", "batch"), CASES)
def test_tiled_equals_whole(models: Models, backend: str, height: int, width: int, tile: int, batch: int) -> None:
    engine = models.engine(backend)
    plan = plan_tiles(engine, height, width, tile=tile, batch=batch)
    assert plan.tiled and plan.window_height == min(tile, plan.padded_height)
    with one_torch_thread():
        check_equal(engine, random_image(height, width, seed=height + width), tile=tile, tile_batch=batch)


def test_tiles_from_memory_budget_equal_whole(models: Models) -> None:
    engine = models.engine("plugin")
    budget = tiling.bytes_per_pixel(engine) * 128 * 128
    assert plan_tiles(engine, 181, 263, max_memory=budget).tiled
    check_equal(engine, random_image(181, 263, seed=5), max_memory=budget)


def test_halo_below_the_receptive_field_breaks_equality(models: Models, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above can fail: windows with too little context give another result."""
    engine = models.engine("dense")
    image = random_image(157, 203, seed=6)
    whole, _ = restore_image(engine, image)
    monkeypatch.setattr(tiling, "halo_for", lambda engine: 8)
    tiled, _ = restore_image(engine, image, tile=64)
    assert np.abs(tiled - whole).max() > TOL


class ProfileEngine:
    """A TensorRT-like engine: one optimisation profile, a fixed batch."""

    backend = "tensorrt"

    def __init__(self, inner: Engine, batch: int, largest: int) -> None:
        self.inner = inner
        self.info, self.name = inner.info, inner.name
        self.multiple, self.min_size = inner.multiple, inner.min_size
        self.takes_mask = False
        self.input_profile = ((batch, 64, 64), (batch, largest, largest))
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, image: np.ndarray, mask: np.ndarray | None = None) -> EngineOutputs:
        low, high = self.input_profile
        assert all(lo <= side <= hi for lo, side, hi in zip(low, (image.shape[0], *image.shape[2:]), high))
        self.shapes.append(image.shape)
        return self.inner.infer(image, mask)


def test_profile_engine_runs_windows_of_its_largest_input_in_full_batches(models: Models) -> None:
    engine = ProfileEngine(models.engine("dense"), batch=3, largest=112)
    image = random_image(157, 203, seed=7)
    plan = plan_tiles(engine, 157, 203)
    assert plan.fixed_batch and plan.batch == 3 and len(plan.windows) % 3 != 0  # a short last batch
    check_equal(engine, image, reference=engine.inner)
    assert set(engine.shapes) == {(3, 3, 112, 112)}
    with pytest.raises(UserError, match="outside the engine's profile"):
        tiling.check_tiling_options(engine, 128, None, tiling.DEFAULT_MAX_MEMORY)


def test_old_onnx_without_receptive_field(models: Models, tmp_path: Path) -> None:
    model = onnx.load(models.out / model_filename("dense", "fp32", False))
    kept = [p for p in model.metadata_props if p.key != "m2ae.receptive_field"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    old = tmp_path / "old.onnx"
    onnx.save(model, old)
    engine = open_engine(old, threads=1)
    image = random_image(64, 64, seed=8)
    restore_image(engine, image)  # small enough to run whole
    with pytest.raises(UserError, match=r"old\.onnx.*re-export it with `m2ae export`"):
        restore_image(engine, image, tile=96)
