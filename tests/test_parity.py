"""``m2ae parity``: metrics, thresholds, Polygraphy runs of exported models against PyTorch,
JSON report and strips, skipped engines and user mistakes.

One random-weight tiny checkpoint is exported once per module (fp32/fp16/int8 of every
variant, a mask-input fp32 plugin model, and two deliberately broken fp32 copies: one
whose ``restored`` is shifted by 0.01, one whose ``blur_mask`` is all zeros).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from m2ae.benchmarks import parity as parity_module
from m2ae.benchmarks.parity import ParityConfig, load_inputs, run_parity
from m2ae.benchmarks.parity_metrics import (
    ParityMetrics,
    ParityThresholds,
    PrecisionThreshold,
    parity_metrics,
    threshold_violations,
)
from m2ae.benchmarks.strips import GAP
from m2ae.cli import main
from m2ae.engine_sidecar import EngineKey, Profile, Sidecar, cache_key, sidecar_path
from m2ae.errors import UserError
from m2ae.export.onnx_export import ExportConfig, export_models, model_filename
from m2ae.imageio import read_image, write_image
from m2ae.model.checkpoint import save_checkpoint
from m2ae.model.config import PRESETS
from m2ae.model.network import M2AENet
from m2ae.platform_info import detect_platform
from m2ae.runtime.onnx_engine import OnnxRuntimeEngine
from m2ae.runtime.torch_engine import TorchEngine

VARIANTS = ("plugin", "portable", "dense")
SHIFT = 0.01
SMALL = {"num_images": 2, "size": 64}


@torch.no_grad()
def random_tiny(seed: int) -> M2AENet:
    """The tiny preset with perturbed weights and BN statistics (a nontrivial mask and output),
    its residual scaled to at most 0.2 on a random image so outputs stay near [0, 1] like a
    trained model's: PSNR at data range 1 then means what it means for real restorations."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = M2AENet(PRESETS["tiny"])
    for param in model.parameters():
        param.add_(0.05 * torch.randn(param.shape, generator=gen))
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.copy_(0.1 * torch.randn(bn.running_mean.shape, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=gen))
    model.eval()
    image = torch.rand(1, 3, 64, 64, generator=gen)
    scale = 0.2 / float((model(image).restored - image).abs().max())
    model.proj.conv.weight.mul_(scale)
    model.proj.conv.bias.mul_(scale)
    return model


def tampered_copy(source: Path, dest: Path, output: str, op: str, value: float) -> Path:
    """The model with ``output`` replaced by ``op(output, value)``, metadata kept: a candidate that must fail."""
    model = onnx.load(source)
    producer = next(n for n in model.graph.node if output in n.output)
    producer.output[list(producer.output).index(output)] = f"{output}_untampered"
    model.graph.initializer.append(helper.make_tensor("parity_tamper", TensorProto.FLOAT, [], [value]))
    model.graph.node.append(helper.make_node(op, [f"{output}_untampered", "parity_tamper"], [output]))
    onnx.save(model, dest)
    return dest


class Models:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoint = root / "net.pt"
        save_checkpoint(self.checkpoint, {"config": PRESETS["tiny"].to_dict(), "step": 1,
                                          "model": random_tiny(0).state_dict()})
        self.out = root / "onnx"
        export_models(ExportConfig(checkpoint=str(self.checkpoint), out=self.out, variants=VARIANTS,
                                   precisions=("fp32", "fp16", "int8"), calib_images=2, progress=False))
        export_models(ExportConfig(checkpoint=str(self.checkpoint), out=self.out, variants=("plugin",),
                                   mask_input=True, progress=False))
        self.broken = tampered_copy(self.path("plugin", "fp32"), root / "broken_fp32.onnx", "restored", "Add", SHIFT)
        self.no_mask = tampered_copy(self.path("dense", "fp32"), root / "nomask_fp32.onnx", "blur_mask", "Mul", 0.0)

    def path(self, variant: str, precision: str, mask_input: bool = False) -> Path:
        return self.out / model_filename(variant, precision, mask_input)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("parity"))


def parity(models: Models, candidates: list[Path | str], out: Path, **options: object) -> object:
    config = ParityConfig(candidates=tuple(str(c) for c in candidates), checkpoint=str(models.checkpoint),
                          json_path=out / "report.json", threads=1, **{**SMALL, **options})
    return run_parity(config)


def fake_engine(root: Path, metadata: dict[str, str]) -> Path:
    """An engine file plus sidecar as `m2ae build` writes them (its bytes are never deserialised)."""
    engine = root / "model.engine"
    engine.write_bytes(b"not a real plan")
    key = EngineKey(onnx_sha256="0" * 64, tensorrt_version="10.3.0", gpu_name="NVIDIA A100", compute_capability="8.0",
                    plugin_sha256=None, profile=Profile((64, 64), (128, 128), (256, 256)))
    Sidecar(key=key, cache_key=cache_key(key), onnx_path="model.onnx", onnx_metadata=metadata).write(
        sidecar_path(engine))
    return engine


NO_TENSORRT = pytest.mark.skipif(
    detect_platform().tensorrt_version is not None,
    reason="TensorRT is installed here, so an engine is not skipped for lack of it",
)


# ---- metrics and thresholds -------------------------------------------------------------


def test_parity_metrics_on_known_differences() -> None:
    ref = np.zeros((1, 3, 4, 5), dtype=np.float32)
    out = ref + 0.1
    out[0, 0, 0, 0] = 0.5
    ref_mask = np.zeros((1, 1, 4, 5), dtype=np.float32)
    mask = ref_mask.copy()
    mask[0, 0, :2, 0] = 1.0
    m = parity_metrics([(out, ref, mask, ref_mask), (ref, ref, ref_mask, ref_mask)])
    values = 2 * 60
    expected_mse = (59 * 0.01 + 0.25) / values
    assert m.max_abs == pytest.approx(0.5)
    assert m.mean_abs == pytest.approx((59 * 0.1 + 0.5) / values)
    assert m.psnr_db == pytest.approx(10 * math.log10(1 / expected_mse))
    assert (m.flipped_pixels, m.mask_pixels) == (2, 40)
    assert m.mask_flip_rate == pytest.approx(0.05)
    same = parity_metrics([(ref, ref, mask, mask)])
    assert same.psnr_db == math.inf and same.max_abs == 0 and same.mask_flip_rate == 0
    assert same.to_dict()["psnr_db"] is None


def test_threshold_violations_name_each_metric() -> None:
    thresholds = ParityThresholds()
    good = ParityMetrics(5e-5, 1e-6, 110.0, 0.0, 0, 100)
    assert threshold_violations(good, thresholds.fp32) == []
    bad = ParityMetrics(2e-4, 1e-5, 80.0, 3e-4, 3, 10000)
    messages = threshold_violations(bad, thresholds.fp32)
    assert len(messages) == 2 and "max abs" in messages[0] and "flip" in messages[1]
    assert threshold_violations(ParityMetrics(1.0, 0.1, 39.9, 0.0, 0, 1), thresholds.fp16)[0].startswith("PSNR")
    assert threshold_violations(ParityMetrics(1.0, 0.1, 31.0, 0.021, 21, 1000), thresholds.int8)[0].startswith("mask")
    assert threshold_violations(ParityMetrics(1.0, 0.1, 31.0, 0.02, 20, 1000), PrecisionThreshold(None, 30.0, 0.02)) == []


def test_nan_outputs_fail_every_precision() -> None:
    ref = np.zeros((1, 3, 2, 2), dtype=np.float32)
    out = ref.copy()
    out[0, 0, 0, 0] = np.nan
    mask = np.zeros((1, 1, 2, 2), dtype=np.float32)
    metrics = parity_metrics([(out, ref, mask, mask)])
    thresholds = ParityThresholds()
    for precision in thresholds.precisions():
        assert threshold_violations(metrics, getattr(thresholds, precision)), precision
    assert json.loads(json.dumps(metrics.to_dict()))["max_abs"] is None


def test_load_inputs_pads_folder_images_and_keeps_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_image(tmp_path / "a.png", rng.random((50, 70, 3)))
    items = load_inputs(str(tmp_path), multiple=16, min_size=32)
    assert len(items) == 1
    assert items[0].image.shape == (1, 3, 64, 80) and (items[0].height, items[0].width) == (50, 70)
    np.testing.assert_allclose(items[0].image[0, :, :50, :70], read_image(tmp_path / "a.png").transpose(2, 0, 1))
    synthetic = load_inputs("synthetic", multiple=16, min_size=32, num_images=3, size=48)
    assert len(synthetic) == 3 and synthetic[0].gt_mask is not None and synthetic[0].image.shape == (1, 3, 48, 48)


# ---- runs against PyTorch ------------------------------------------------------------------


@pytest.mark.slow
def test_fp32_candidates_pass_and_match_direct_runs(models: Models, tmp_path: Path) -> None:
    candidates = [models.path(v, "fp32") for v in VARIANTS] + [models.path("plugin", "fp32", mask_input=True)]
    report = parity(models, candidates, tmp_path)
    assert report.exit_code == 0 and report.passed
    assert [c.status for c in report.candidates] == ["pass"] * 4
    for result in report.candidates:
        assert result.precision == "fp32"
        assert result.metrics.max_abs <= 1e-4
        assert result.metrics.mask_flip_rate <= 1e-4
    assert report.candidates[-1].mask_input

    # The reported error equals one measured without Polygraphy, engine by engine.
    items = load_inputs("synthetic", multiple=PRESETS["tiny"].multiple, min_size=0, **SMALL)
    torch_engine = TorchEngine(models.checkpoint, pruned=False)
    portable = OnnxRuntimeEngine(models.path("portable", "fp32"), threads=1)
    worst = max(float(np.abs(portable.infer(i.image).restored - torch_engine.infer(i.image).restored).max())
                for i in items)
    assert report.candidates[1].metrics.max_abs == pytest.approx(worst, rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_models_run_through_the_shipped_engines(models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parity checks what `m2ae infer` runs: reference and candidates open through
    ``open_engine``, each once, and every engine is closed once Polygraphy is done with it."""
    opened = []
    real_open_engine = parity_module.open_engine

    def recording_open_engine(path: object, **options: object) -> object:
        engine = real_open_engine(path, **options)
        opened.append(engine)
        return engine

    monkeypatch.setattr(parity_module, "open_engine", recording_open_engine)
    report = parity(models, [models.path("portable", "fp32")], tmp_path)
    assert [c.status for c in report.candidates] == ["pass"]
    assert [engine.backend for engine in opened] == ["torch", "onnxruntime"]
    assert opened[1].threads == 1 and opened[1].session is None  # released after its run
    for engine in opened:
        with pytest.raises(UserError, match="closed"):
            engine.infer(np.zeros((1, 3, 64, 64), np.float32))


@pytest.mark.slow
def test_reduced_precisions_report_psnr_and_flips(models: Models, tmp_path: Path) -> None:
    candidates = [models.path(v, p) for p in ("fp16", "int8") for v in VARIANTS]
    report = parity(models, candidates, tmp_path)
    thresholds = ParityThresholds()
    for result in report.candidates:
        m = result.metrics
        print(f"{Path(result.path).name}: max abs {m.max_abs:.3g}, PSNR {m.psnr_db:.2f} dB, "
              f"flip rate {m.mask_flip_rate:.4%} -> {result.status}")
        assert result.precision in ("fp16", "int8")
        assert math.isfinite(m.psnr_db) and 0 <= m.mask_flip_rate <= 1 and m.max_abs > 0
        limit = getattr(thresholds, result.precision)
        expected = m.psnr_db >= limit.min_psnr_db and m.mask_flip_rate <= limit.max_flip_rate
        assert result.status == ("pass" if expected else "fail")
    assert report.exit_code == (0 if all(c.status == "pass" for c in report.candidates) else 1)


@pytest.mark.slow
def test_folder_images_are_cropped_back(models: Models, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    rng = np.random.default_rng(1)
    for name, (h, w) in {"a.png": (40, 56), "b.jpg": (72, 36)}.items():
        write_image(folder / name, rng.random((h, w, 3)))
    report = parity(models, [models.path("plugin", "fp32"), models.path("plugin", "fp32", True)], tmp_path / "r",
                    images=str(folder))
    assert report.image_sizes == [(40, 56), (72, 36)]
    assert [c.status for c in report.candidates] == ["pass", "pass"]
    strip = read_image(report.candidates[0].strip)
    assert strip.shape == (40, 5 * 56 + 4 * GAP, 3)
    np.testing.assert_allclose(strip[:, :56], read_image(folder / "a.png"), atol=1 / 255 + 1e-6)


# ---- the command ---------------------------------------------------------------------------


@pytest.mark.slow
def test_broken_candidate_fails_with_exit_1_json_and_strips(models: Models, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    good = models.path("dense", "fp32")
    code = main(["parity", "--checkpoint", str(models.checkpoint), "--candidates",
                 f"{good},{models.broken}", "--num-images", "2", "--size", "64", "--json", str(out),
                 "--threads", "1", "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.err == ""  # --no-progress: no bar
    lines = captured.out.splitlines()
    assert any(line.startswith("FAIL") and "broken_fp32.onnx" in line for line in lines)
    report = json.loads(out.read_text())
    assert set(report) >= {"reference", "images", "thresholds", "candidates", "passed", "exit_code"}
    assert report["passed"] is False and report["exit_code"] == 1
    assert report["thresholds"]["fp32"]["max_abs"] == 1e-4
    good_entry, broken_entry = report["candidates"]
    assert set(good_entry) >= {"path", "precision", "status", "metrics", "violations", "strip"}
    assert good_entry["status"] == "pass" and broken_entry["status"] == "fail"
    assert broken_entry["metrics"]["max_abs"] == pytest.approx(SHIFT, abs=2e-4)
    assert broken_entry["metrics"]["psnr_db"] == pytest.approx(40.0, abs=0.2)  # RMS 0.01 -> 40 dB
    assert "max abs" in broken_entry["violations"][0]
    strips = [Path(entry["strip"]) for entry in report["candidates"]]
    assert len(set(strips)) == 2 and all(p.is_file() and p.parent == tmp_path for p in strips)
    size = SMALL["size"]
    assert read_image(strips[1]).shape == (size, 5 * size + 4 * GAP, 3)


@pytest.mark.slow
def test_wrong_mask_fails_on_flip_rate(models: Models, tmp_path: Path) -> None:
    report = parity(models, [models.no_mask], tmp_path)
    (result,) = report.candidates
    assert result.status == "fail" and report.exit_code == 1
    # Every pixel the reference marks blurred is flipped: the flip rate is its blurred fraction.
    items = load_inputs("synthetic", multiple=PRESETS["tiny"].multiple, min_size=0, **SMALL)
    reference = TorchEngine(models.checkpoint, pruned=False)
    blurred = np.mean([reference.infer(i.image).mask.mean() for i in items])
    assert 0 < blurred < 1
    assert result.metrics.mask_flip_rate == pytest.approx(blurred)
    assert any("mask flip rate" in v for v in result.violations)


@pytest.mark.slow
def test_onnx_file_as_reference(models: Models, tmp_path: Path) -> None:
    config = ParityConfig(candidates=(str(models.path("plugin", "fp32")), str(models.broken)),
                          reference=str(models.path("dense", "fp32")), json_path=tmp_path / "r.json", threads=1, **SMALL)
    report = run_parity(config)
    assert report.reference["backend"] == "onnxruntime" and report.reference["variant"] == "dense"
    assert [c.status for c in report.candidates] == ["pass", "fail"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing candidate", "unknown reference", "empty folder", "unknown suffix",
                                  "not an m2ae model", "mask-input reference on a folder"])
def test_user_mistakes_exit_2_with_one_line(models: Models, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], case: str) -> None:
    good = str(models.path("plugin", "fp32"))
    argv = ["parity", "--checkpoint", str(models.checkpoint), "--size", "64", "--num-images", "1",
            "--json", str(tmp_path / "report.json")]
    if case == "missing candidate":
        argv += ["--candidates", f"{good},{tmp_path / 'nope.onnx'}"]
    elif case == "unknown reference":
        argv += ["--reference", "tensorflow", "--candidates", good]
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        argv += ["--candidates", good, "--images", str(tmp_path / "empty")]
    elif case == "unknown suffix":
        (tmp_path / "model.tflite").write_bytes(b"x")
        argv += ["--candidates", str(tmp_path / "model.tflite")]
    elif case == "mask-input reference on a folder":
        write_image(tmp_path / "images" / "a.png", np.full((64, 64, 3), 0.5))
        argv += ["--reference", str(models.path("plugin", "fp32", True)), "--candidates", good,
                 "--images", str(tmp_path / "images")]
    else:
        plain = onnx.load(good)
        del plain.metadata_props[:]
        onnx.save(plain, tmp_path / "plain.onnx")
        argv += ["--candidates", str(tmp_path / "plain.onnx")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("m2ae parity: error:")
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
@NO_TENSORRT
def test_engine_without_tensorrt_is_skipped_with_reason(models: Models, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    engine = fake_engine(tmp_path, {"m2ae.precision": "fp16", "m2ae.multiple": "16", "m2ae.mask_input": "0"})
    report = parity(models, [engine, models.path("plugin", "fp32")], tmp_path)
    skipped, ran = report.candidates
    assert skipped.status == "skipped" and "TensorRT" in skipped.reason and skipped.metrics is None
    assert ran.status == "pass" and report.exit_code == 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["candidates"][0]["status"] == "skipped" and "TensorRT" in saved["candidates"][0]["reason"]

    # Nothing checked is not a pass: only engines, all skipped -> exit 2.
    code = main(["parity", "--checkpoint", str(models.checkpoint), "--candidates", str(engine),
                                 "--num-images", "1", "--size", "64", "--out", str(tmp_path / "strips")])
    assert code == 2
    captured = capsys.readouterr()
    assert "SKIPPED" in captured.out and "all skipped" in captured.err
