"""Accuracy parity: exported models (ONNX, TensorRT engines) against a reference, via Polygraphy.

``run_parity`` owns the whole check: it opens the reference (the PyTorch checkpoint, or
an ONNX/engine file) and every candidate through the engines users run
(``m2ae.runtime.base.open_engine``: PyTorch, ONNX Runtime with the ``m2ae`` ops
registered, TensorRT through the shipped runtime), each wrapped as a Polygraphy runner
(the ``EngineRunner`` of :func:`engine_runner_class`), feeds them the same images with
``Comparator.run``, and scores each candidate's outputs against the reference's:
max/mean abs error and PSNR of ``restored``, flip rate of the hard ``blur_mask``, judged
by per-precision thresholds (:class:`ParityThresholds`). Mask-input candidates get the
reference's predicted mask, so both sides restore the same pixels.

Outcome: every candidate is ``pass``, ``fail`` (a threshold is violated, or inference
failed) or ``skipped`` (a TensorRT engine on a machine that cannot run it; the reason is
reported). :attr:`ParityReport.exit_code` is 1 when any candidate failed, 2 when none
could run at all (all skipped: nothing was checked, which must not read as success),
else 0.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m2ae.atomic import check_output_dir, check_output_file, remove_stale_temps, write_text
from m2ae.errors import UserError
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK, OUTPUT_MASK, OUTPUT_RESTORED, metadata_int
from m2ae.runtime.base import CHECKPOINT_SUFFIXES, ONNX_SUFFIXES, TENSORRT_SUFFIXES, Engine

TORCH_REFERENCE = "torch"
SYNTHETIC_IMAGES = "synthetic"
REFERENCE_VARIANTS = ("dense", "pruned")
DEFAULT_STRIP_DIR = Path("parity")


# ---------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class PrecisionThreshold:
    """Limits for one precision; ``None`` means the metric is not judged."""

    max_abs: float | None = None
    min_psnr_db: float | None = None
    max_flip_rate: float = 0.0


@dataclass(frozen=True)
class ParityThresholds:
    """What each candidate precision must reach against the fp32 reference.

    - fp32: the same arithmetic in another order (ORT vs PyTorch kernels, the plugin's
      gather/scatter vs dense masking) differs by float32 rounding only, a few 1e-6 on
      [0, 1] images, so ``max abs <= 1e-4`` leaves 10x headroom and still catches any
      real graph error (a wrong tap or a missed pixel moves outputs by > 1e-2). A mask
      pixel flips only where p_blur lands within rounding of the threshold, a handful of
      pixels per million, hence ``flip rate <= 1e-4``.
    - fp16: 11-bit mantissas give ~5e-4 relative error per op; through the network this
      is ~1e-3 RMS on the output, i.e. ~60 dB. ``PSNR >= 40 dB`` (RMS error 1%) is well
      below visible change. The mask head stays fp32 in the export, but its input
      features do not, so pixels near the threshold may flip: ``<= 0.5%``.
    - int8: per-channel symmetric weights and calibrated activations give ~1% relative
      error per layer; ``PSNR >= 30 dB`` (RMS error 3%) is the usual bar for "visually
      equal" quantised restoration. Quantised features move p_blur more, so up to 2% of
      pixels (a thin band along mask borders) may flip.
    """

    fp32: PrecisionThreshold = PrecisionThreshold(max_abs=1e-4, max_flip_rate=1e-4)
    fp16: PrecisionThreshold = PrecisionThreshold(min_psnr_db=40.0, max_flip_rate=0.005)
    int8: PrecisionThreshold = PrecisionThreshold(min_psnr_db=30.0, max_flip_rate=0.02)

    def for_precision(self, precision: str, source: str) -> PrecisionThreshold:
        threshold = getattr(self, precision, None) if precision in self.precisions() else None
        if threshold is None:
            raise UserError(
                f"{source}: precision {precision!r} has no parity threshold; known: {', '.join(self.precisions())}"
            )
        return threshold

    @staticmethod
    def precisions() -> tuple[str, ...]:
        return ("fp32", "fp16", "int8")

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        return {p: asdict(getattr(self, p)) for p in self.precisions()}


# ---------------------------------------------------------------------------- config and report


@dataclass(frozen=True)
class ParityConfig:
    """One parity run. ``reference``: ``"torch"`` (``checkpoint`` run by PyTorch, its
    ``reference_variant``), a checkpoint path, an ONNX file or an engine. ``images``: a
    folder of images or ``"synthetic"`` (``num_images`` held-out samples of ``size``).
    ``json_path``: where the report goes (None: not written). Strips go to ``strip_dir``,
    else the JSON's folder, else ``./parity``."""

    candidates: tuple[str, ...]
    reference: str = TORCH_REFERENCE
    images: str = SYNTHETIC_IMAGES
    checkpoint: str = "tiny"
    reference_variant: str = "dense"
    num_images: int = 8
    size: int = 128
    json_path: Path | None = None
    strip_dir: Path | None = None
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.candidates:
            raise UserError("--candidates: give at least one model file")
        if self.reference_variant not in REFERENCE_VARIANTS:
            raise UserError(f"--reference-variant: {self.reference_variant!r}; choose {' or '.join(REFERENCE_VARIANTS)}")
        if self.num_images < 1:
            raise UserError(f"--num-images: must be at least 1, got {self.num_images}")
        if self.size < 1:
            raise UserError(f"--size: must be positive, got {self.size}")

    @property
    def out_dir(self) -> Path:
        if self.strip_dir is not None:
            return Path(self.strip_dir)
        if self.json_path is not None:
            return Path(self.json_path).parent
        return DEFAULT_STRIP_DIR


@dataclass(frozen=True)
class ParityMetrics:
    """Candidate vs reference over all images (padding cropped off). ``psnr_db`` is
    ``inf`` for identical outputs (data range 1)."""

    max_abs: float
    mean_abs: float
    psnr_db: float
    mask_flip_rate: float
    flipped_pixels: int
    mask_pixels: int

    def to_dict(self) -> dict[str, float | int | None]:
        # JSON has no infinity or NaN: identical outputs (PSNR inf) and NaN outputs are written as null.
        return {key: None if isinstance(value, float) and not math.isfinite(value) else value
                for key, value in asdict(self).items()}


@dataclass
class CandidateResult:
    path: str
    backend: str
    precision: str
    variant: str
    mask_input: bool
    status: str  # "pass", "fail" or "skipped"
    reason: str = ""
    metrics: ParityMetrics | None = None
    violations: list[str] = field(default_factory=list)
    strip: Path | None = None
    heat_map_scale: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "backend": self.backend, "precision": self.precision, "variant": self.variant,
            "mask_input": self.mask_input, "status": self.status, "reason": self.reason,
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "violations": self.violations, "strip": None if self.strip is None else str(self.strip),
            "heat_map_scale": self.heat_map_scale,
        }


@dataclass
class ParityReport:
    reference: dict[str, str]
    images: str
    image_sizes: list[tuple[int, int]]
    thresholds: ParityThresholds
    candidates: list[CandidateResult]
    json_path: Path | None = None

    @property
    def exit_code(self) -> int:
        statuses = [c.status for c in self.candidates]
        if "fail" in statuses:
            return 1
        return 2 if all(s == "skipped" for s in statuses) else 0

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "images": {"source": self.images, "count": len(self.image_sizes),
                       "sizes": [list(s) for s in self.image_sizes]},
            "thresholds": self.thresholds.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "passed": self.passed,
            "exit_code": self.exit_code,
        }


# ---------------------------------------------------------------------------- runners


def engine_runner_class() -> type:
    """Built on first use so that importing this module does not import Polygraphy."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    class EngineRunner(BaseRunner):
        """A Polygraphy runner over an m2ae ``Engine``: parity checks the code users run.

        The engine is opened on activation and closed on deactivation, so a candidate holds
        its ONNX Runtime session or GPU memory only while Polygraphy runs it.
        """

        def __init__(self, open_engine: Callable[[], Engine], name: str | None = None) -> None:
            super().__init__(name=name, prefix="m2ae-engine-runner")
            self._open_engine = open_engine

        def activate_impl(self) -> None:
            self.engine = self._open_engine()

        def get_input_metadata_impl(self) -> TensorMetadata:
            meta = TensorMetadata()
            meta.add(INPUT_IMAGE, DataType.FLOAT32, (None, 3, None, None))
            if self.engine.takes_mask:
                meta.add(INPUT_MASK, DataType.FLOAT32, (None, 1, None, None))
            return meta

        def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
            start = time.perf_counter()
            out = self.engine.infer(feed_dict[INPUT_IMAGE], feed_dict.get(INPUT_MASK))
            self.inference_time = time.perf_counter() - start
            return OrderedDict([(OUTPUT_RESTORED, out.restored), (OUTPUT_MASK, out.mask)])

        def deactivate_impl(self) -> None:
            close = getattr(self.engine, "close", None)  # the torch engine holds nothing to release
            if close is not None:
                close()
            del self.engine

    return EngineRunner


class SkipCandidate(Exception):
    """This machine cannot run the candidate (e.g. no TensorRT); the message says why."""


@dataclass(frozen=True)
class ParityModel:
    """A reference or candidate, ready to become a Polygraphy runner."""

    label: str
    backend: str
    metadata: dict[str, str]
    takes_mask: bool
    open_engine: Callable[[], Engine]  # called each time its runner is activated

    def make_runner(self, name: str) -> Any:
        return engine_runner_class()(self.open_engine, name=name)

    @property
    def precision(self) -> str:
        # Without a recorded precision the model is held to the strictest (fp32) limits.
        return self.metadata.get("m2ae.precision", "fp32")

    @property
    def variant(self) -> str:
        return self.metadata.get("m2ae.variant", "")

    @property
    def multiple(self) -> int:
        return metadata_int(self.metadata, "m2ae.multiple", 1, Path(self.label))

    @property
    def min_size(self) -> int:
        return metadata_int(self.metadata, "m2ae.min_size", self.multiple, Path(self.label))


def _torch_model(checkpoint: str, variant: str) -> ParityModel:
    from m2ae.runtime.base import open_engine

    # Opened once: its metadata comes from the checkpoint, and it has no session to release.
    engine = open_engine(checkpoint, pruned=variant == "pruned")
    return ParityModel(f"torch:{checkpoint}", engine.backend, dict(engine.metadata), engine.takes_mask,
                       lambda: engine)


def _onnx_model(path: Path, threads: int | None) -> ParityModel:
    """Metadata read now; the ONNX Runtime session made when the candidate runs."""
    import onnx

    from m2ae.runtime.base import open_engine
    from m2ae.runtime.onnx_engine import read_metadata

    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 (onnx raises DecodeError, ValueError, ... for a bad file)
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    metadata = read_metadata(model, path)
    takes_mask = INPUT_MASK in {i.name for i in model.graph.input}
    return ParityModel(str(path), "onnxruntime", metadata, takes_mask, lambda: open_engine(path, threads=threads))


def _engine_model(path: Path) -> ParityModel:
    """An engine's metadata comes from its sidecar; raises SkipCandidate where it cannot run."""
    from m2ae.engine_sidecar import Sidecar, sidecar_path
    from m2ae.platform_info import cuda_binding_line, detect_platform
    from m2ae.runtime.base import open_engine
    from m2ae.runtime.trt_engine import check_engine_compatible

    meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise UserError(f"{path}: no sidecar {meta_path.name} beside it; parity needs the engine built by `m2ae build`")
    sidecar = Sidecar.read(meta_path)
    metadata = dict(sidecar.onnx_metadata)
    platform = detect_platform()
    try:
        check_engine_compatible(sidecar, platform, path)
    except UserError as exc:
        raise SkipCandidate(str(exc)) from None
    if platform.cuda_binding is None:
        raise SkipCandidate(f"{path}: {cuda_binding_line(platform)}")
    # The shipped TensorRT runtime loads the plugin library the sidecar names.
    return ParityModel(str(path), "tensorrt", metadata, metadata.get("m2ae.mask_input") == "1",
                       lambda: open_engine(path))


def open_model(spec: str, config: ParityConfig) -> ParityModel:
    """The reference or a candidate named by ``spec`` (see :class:`ParityConfig`)."""
    if spec == TORCH_REFERENCE:
        return _torch_model(config.checkpoint, config.reference_variant)
    path = Path(spec)
    suffix = path.suffix.lower()
    known = (*ONNX_SUFFIXES, *TENSORRT_SUFFIXES, *CHECKPOINT_SUFFIXES)
    if suffix not in known:
        raise UserError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; expected one of {', '.join(known)}"
                        f" or {TORCH_REFERENCE!r}")
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    if suffix in CHECKPOINT_SUFFIXES:
        return _torch_model(str(path), config.reference_variant)
    if suffix in ONNX_SUFFIXES:
        return _onnx_model(path, config.threads)
    return _engine_model(path)


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ParityInput:
    """One image, batch of 1, padded: ``image`` [1,3,H,W]; ``gt_mask`` [1,1,H,W] or None."""

    name: str
    image: np.ndarray
    height: int  # before padding
    width: int
    gt_mask: np.ndarray | None = None


def _pad(array: np.ndarray, multiple: int, mode: str) -> np.ndarray:
    from m2ae.padding import pad_to_multiple

    return np.ascontiguousarray(pad_to_multiple(array, multiple, mode=mode), dtype=np.float32)


def load_inputs(images: str, multiple: int, min_size: int, num_images: int = 8, size: int = 128
                ) -> list[ParityInput]:
    """Images from a folder (padded to ``multiple``) or the held-out synthetic set."""
    if images == SYNTHETIC_IMAGES:
        from m2ae.model.data.synthetic import heldout_set

        dataset = heldout_set(num_images, size)
        inputs = []
        for index in range(len(dataset)):
            item = dataset[index]
            blurred = item["blurred"].numpy()[None]
            mask = item["mask"].numpy()[None]
            inputs.append(ParityInput(str(item["name"]), _pad(blurred, multiple, "reflect"), *blurred.shape[-2:],
                                      gt_mask=_pad(mask, multiple, "constant")))
    else:
        from m2ae.imageio import list_images, read_image

        files = list_images(images)
        if not files:
            raise UserError(f"{images}: no image files in this folder")
        inputs = []
        for path in files:
            chw = read_image(path).transpose(2, 0, 1)[None]
            inputs.append(ParityInput(path.name, _pad(chw, multiple, "reflect"), *chw.shape[-2:]))
    for item in inputs:
        if min(item.image.shape[-2:]) < min_size:
            source = "--size" if images == SYNTHETIC_IMAGES else item.name
            raise UserError(f"{source}: image {item.height}x{item.width} is smaller than the models' minimum {min_size}")
    return inputs


# ---------------------------------------------------------------------------- metrics


def parity_metrics(pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> ParityMetrics:
    """Scores over (candidate restored, reference restored, candidate mask, reference mask) per image."""
    maxima: list[float] = [0.0]
    sum_abs, sum_sq, values, flipped, pixels = 0.0, 0.0, 0, 0, 0
    for restored, ref_restored, mask, ref_mask in pairs:
        diff = np.abs(restored.astype(np.float64) - ref_restored.astype(np.float64))
        if diff.size:
            maxima.append(float(diff.max()))
        sum_abs += float(diff.sum())
        sum_sq += float(np.square(diff).sum())
        values += diff.size
        flipped += int(np.count_nonzero((mask > 0.5) != (ref_mask > 0.5)))
        pixels += ref_mask.size
    mse = sum_sq / max(values, 1)
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    # np.max, unlike max(), propagates a NaN.
    return ParityMetrics(float(np.max(maxima)), sum_abs / max(values, 1), psnr, flipped / max(pixels, 1), flipped, pixels)


def threshold_violations(metrics: ParityMetrics, threshold: PrecisionThreshold) -> list[str]:
    """What ``metrics`` break; NaN outputs break every limit (each test is "within", never "beyond")."""
    violations = []
    if threshold.max_abs is not None and not metrics.max_abs <= threshold.max_abs:
        violations.append(f"max abs {metrics.max_abs:.3g} > {threshold.max_abs:.3g}")
    if threshold.min_psnr_db is not None and not metrics.psnr_db >= threshold.min_psnr_db:
        violations.append(f"PSNR {metrics.psnr_db:.2f} dB < {threshold.min_psnr_db:.2f} dB")
    if not metrics.mask_flip_rate <= threshold.max_flip_rate:
        violations.append(f"mask flip rate {metrics.mask_flip_rate:.3%} > {threshold.max_flip_rate:.3%}")
    return violations


# ---------------------------------------------------------------------------- running


def _run(model: ParityModel, name: str, feeds: list[OrderedDict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Outputs of ``model`` per feed, collected by Polygraphy's ``Comparator.run``."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        results = Comparator.run([model.make_runner(name)], data_loader=feeds)
    (_, iterations), = list(results.items())
    return [{key: np.asarray(value) for key, value in iteration.items()} for iteration in iterations]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _strip_path(out_dir: Path, label: str, used: set[Path]) -> Path:
    stem = Path(label).name.replace(".", "_").replace(":", "_")
    path, count = out_dir / f"{stem}.parity.png", 1
    while path in used:
        count += 1
        path = out_dir / f"{stem}_{count}.parity.png"
    used.add(path)
    return path


def _crop(array: np.ndarray, item: ParityInput) -> np.ndarray:
    return array[..., : item.height, : item.width]


def run_parity(config: ParityConfig) -> ParityReport:
    """Compare every candidate with the reference; write strips (and the JSON report)."""
    if config.json_path is not None:
        check_output_file(config.json_path, "--json")
    check_output_dir(config.out_dir, "--out" if config.strip_dir is not None or config.json_path is None else "--json")
    remove_stale_temps(config.out_dir)
    reference = open_model(config.reference, config)
    candidates: list[tuple[str, ParityModel | None, str]] = []
    for spec in config.candidates:
        try:
            model = open_model(spec, config)
        except SkipCandidate as skip:
            candidates.append((spec, None, str(skip)))
            continue
        config.thresholds.for_precision(model.precision, spec)
        candidates.append((spec, model, ""))

    models = [reference, *(m for _, m, _ in candidates if m is not None)]
    multiple = math.lcm(*(m.multiple for m in models))
    min_size = max(m.min_size for m in models)
    inputs = load_inputs(config.images, multiple, min_size, config.num_images, config.size)
    if reference.takes_mask and inputs[0].gt_mask is None:
        raise UserError(f"{config.reference}: the reference takes a mask input, which only the synthetic set provides "
                        f"(--images {SYNTHETIC_IMAGES}); or use a mask-predicting reference")

    ref_feeds = [OrderedDict([(INPUT_IMAGE, item.image)] + ([(INPUT_MASK, item.gt_mask)] if reference.takes_mask else []))
                 for item in inputs]
    try:
        ref_outputs = _run(reference, "reference", ref_feeds)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 (any backend failure of the reference ends the run)
        raise UserError(f"{config.reference}: reference inference failed ({_first_line(exc)})") from None
    ref_masks = [out.get(OUTPUT_MASK, item.gt_mask) for out, item in zip(ref_outputs, inputs)]
    feeds = [OrderedDict([(INPUT_IMAGE, item.image), (INPUT_MASK, np.ascontiguousarray(mask, dtype=np.float32))])
             for item, mask in zip(inputs, ref_masks)]

    out_dir = config.out_dir
    used: set[Path] = set()
    results = []
    for index, (spec, model, skip_reason) in enumerate(candidates):
        if model is None:
            suffix = Path(spec).suffix.lower()
            results.append(CandidateResult(spec, "tensorrt" if suffix in TENSORRT_SUFFIXES else "", "", "",
                                           False, "skipped", skip_reason))
            continue
        result = CandidateResult(spec, model.backend, model.precision, model.variant, model.takes_mask, "fail")
        results.append(result)
        try:
            outputs = _run(model, f"candidate{index}", feeds if model.takes_mask else
                           [OrderedDict([(INPUT_IMAGE, f[INPUT_IMAGE])]) for f in feeds])
        except Exception as exc:  # noqa: BLE001 (a candidate that cannot run fails; the others still run)
            result.reason = f"inference failed: {_first_line(exc)}"
            continue
        # A mask-input model's mask output is its input mask; engines may not even export it.
        cand_masks = [out.get(OUTPUT_MASK, feed[INPUT_MASK]) for out, feed in zip(outputs, feeds)]
        result.metrics = parity_metrics([
            (_crop(out[OUTPUT_RESTORED], item), _crop(ref[OUTPUT_RESTORED], item),
             _crop(mask, item), _crop(ref_mask, item))
            for out, ref, mask, ref_mask, item in zip(outputs, ref_outputs, cand_masks, ref_masks, inputs)
        ])
        result.violations = threshold_violations(result.metrics, config.thresholds.for_precision(model.precision, spec))
        result.status = "fail" if result.violations else "pass"
        result.reason = "; ".join(result.violations)

        from m2ae.benchmarks.strips import write_strip

        first = inputs[0]
        result.strip, result.heat_map_scale = write_strip(
            _strip_path(out_dir, spec, used), _crop(first.image, first)[0], _crop(cand_masks[0], first)[0],
            _crop(ref_outputs[0][OUTPUT_RESTORED], first)[0], _crop(outputs[0][OUTPUT_RESTORED], first)[0],
        )

    report = ParityReport(
        reference={"model": reference.label, "backend": reference.backend, "precision": reference.precision,
                   "variant": reference.variant},
        images=config.images, image_sizes=[(item.height, item.width) for item in inputs],
        thresholds=config.thresholds, candidates=results,
    )
    if config.json_path is not None:
        report.json_path = write_text(config.json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    return report
