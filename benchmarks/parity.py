"""Accuracy parity: exported models (ONNX, TensorRT engines) against a reference, via Polygraphy.

``run_parity`` owns the whole check: it opens the reference (the PyTorch checkpoint, or
an ONNX/engine file) and every candidate through the engines users run
(``m2ae.runtime.base.open_engine``), each once and before any runs (a bad file fails
before anything ran), wraps each as a Polygraphy runner (:class:`EngineRunner`, which
closes its engine when its run ends), feeds them the same images with
``Comparator.run``, and scores each candidate's outputs against the reference's
(``parity_metrics``): max/mean abs error and PSNR of ``restored``, flip rate of the hard
``blur_mask``, judged by per-precision thresholds. Model facts (precision, variant,
multiple, minimum size) come from each engine's ``ModelInfo``. Mask-input candidates
get the reference's predicted mask, so both sides restore the same pixels.

Outcome: every candidate is ``pass``, ``fail`` (a threshold is violated, or inference
failed) or ``skipped`` (a TensorRT engine on a machine that cannot run it; the reason is
reported). :attr:`ParityReport.exit_code` is 1 when any candidate failed, 2 when none
could run at all (all skipped: nothing was checked, which must not read as success),
else 0.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator
from polygraphy.datatype import DataType
from polygraphy.logger import G_LOGGER
from tqdm import tqdm

from m2ae.atomic import check_output_dir, check_output_file, remove_stale_temps, write_text
from m2ae.benchmarks.parity_metrics import ParityMetrics, ParityThresholds, parity_metrics, threshold_violations
from m2ae.benchmarks.strips import write_strip
from m2ae.cli_args import Size, format_size
from m2ae.engine_sidecar import Sidecar, sidecar_path
from m2ae.errors import UserError
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK, OUTPUT_MASK, OUTPUT_RESTORED
from m2ae.imageio import list_images, read_image
from m2ae.model_info import ModelInfo
from m2ae.padding import pad_to_multiple
from m2ae.platform_info import detect_platform, tensorrt_unavailable
from m2ae.runtime.base import CHECKPOINT_SUFFIXES, ONNX_SUFFIXES, TENSORRT_SUFFIXES, Engine, open_engine
from m2ae.runtime.trt_engine import check_engine_compatible

if TYPE_CHECKING:
    from m2ae.model.checkpoint import LoadedCheckpoint

TORCH_REFERENCE = "torch"
SYNTHETIC_IMAGES = "synthetic"
#: the PyTorch graphs a checkpoint reference runs
REFERENCE_VARIANTS = ("dense", "pruned")
DEFAULT_STRIP_DIR = Path("parity")


# ---------------------------------------------------------------------------- config and report


@dataclass(frozen=True)
class ParityConfig:
    """One parity run. ``reference``: ``"torch"`` (``checkpoint`` run by PyTorch, its
    ``reference_variant``), a checkpoint path, an ONNX file or an engine. ``checkpoint``:
    a file, a shipped name, or one already loaded (used as is, not reloaded). ``images``:
    a folder of images or ``"synthetic"`` (``num_images`` held-out samples of ``size``, a
    side or (height, width)). ``json_path``: where the report goes (None: not written).
    Strips go to ``strip_dir``, else the JSON's folder, else ``./parity``."""

    candidates: tuple[str, ...]
    reference: str = TORCH_REFERENCE
    images: str = SYNTHETIC_IMAGES
    checkpoint: str | LoadedCheckpoint = "tiny"
    reference_variant: str = "dense"
    num_images: int = 8
    size: int | Size = 128
    json_path: Path | None = None
    strip_dir: Path | None = None
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.candidates:
            raise UserError("--candidates: give at least one model file")
        if self.reference_variant not in REFERENCE_VARIANTS:
            raise UserError(f"--reference-variant: {self.reference_variant!r}; choose {' or '.join(REFERENCE_VARIANTS)}")
        if self.num_images < 1:
            raise UserError(f"--num-images: must be at least 1, got {self.num_images}")
        if min((self.size,) if isinstance(self.size, int) else self.size) < 1:
            raise UserError(f"--size: must be positive, got {self.size}")

    @property
    def out_dir(self) -> Path:
        if self.strip_dir is not None:
            return Path(self.strip_dir)
        if self.json_path is not None:
            return Path(self.json_path).parent
        return DEFAULT_STRIP_DIR


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


# ---------------------------------------------------------------------------- models


class EngineRunner(BaseRunner):
    """A Polygraphy runner over an open m2ae ``Engine``: parity checks the code users run.

    Deactivation closes the engine: its ONNX Runtime session or GPU memory goes as soon
    as its run ends.
    """

    def __init__(self, engine: Engine, name: str | None = None) -> None:
        super().__init__(name=name, prefix="m2ae-engine-runner")
        self.engine = engine

    def activate_impl(self) -> None:
        pass  # opened by open_model

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
        self.engine.close()


class SkipCandidate(Exception):
    """This machine cannot run the candidate (e.g. no TensorRT); the message says why."""


@dataclass(frozen=True)
class ParityModel:
    """A reference or candidate: ``label`` names it in the report, ``engine`` runs it."""

    label: str
    engine: Engine

    @property
    def info(self) -> ModelInfo:
        return self.engine.info

    def make_runner(self, name: str) -> EngineRunner:
        return EngineRunner(self.engine, name=name)


def _torch_model(checkpoint: str | Path | LoadedCheckpoint, variant: str) -> ParityModel:
    label = checkpoint if isinstance(checkpoint, (str, Path)) else checkpoint.path
    return ParityModel(f"torch:{label}", open_engine(checkpoint, pruned=variant == "pruned"))


def _tensorrt_skip_reason(path: Path) -> str | None:
    """Why this machine cannot run the engine at ``path``, or None. A missing sidecar is a
    UserError, not a skip: without it nobody can tell what the engine needs."""
    meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise UserError(f"{path}: no sidecar {meta_path.name} beside it; parity needs the engine built by `m2ae build`")
    platform = detect_platform()
    try:
        check_engine_compatible(Sidecar.read(meta_path), platform, path)
    except UserError as exc:
        return str(exc)
    reason = tensorrt_unavailable(platform)
    return None if reason is None else f"{path}: {reason}"


def open_model(spec: str, config: ParityConfig) -> ParityModel:
    """Open the reference or a candidate named by ``spec`` (see :class:`ParityConfig`);
    SkipCandidate for an engine this machine cannot run."""
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
        return _torch_model(path, config.reference_variant)
    if suffix in ONNX_SUFFIXES:
        return ParityModel(spec, open_engine(path, threads=config.threads))
    reason = _tensorrt_skip_reason(path)
    if reason is not None:
        raise SkipCandidate(reason)
    return ParityModel(spec, open_engine(path))


@dataclass(frozen=True)
class _Candidate:
    spec: str
    #: None when skipped
    model: ParityModel | None
    skip_reason: str = ""


def _open_candidates(config: ParityConfig, opened: contextlib.ExitStack) -> list[_Candidate]:
    candidates = []
    for spec in config.candidates:
        try:
            model = open_model(spec, config)
        except SkipCandidate as skip:
            candidates.append(_Candidate(spec, None, str(skip)))
            continue
        opened.enter_context(model.engine)
        config.thresholds.for_precision(model.info.precision, spec)
        candidates.append(_Candidate(spec, model))
    return candidates


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ParityInput:
    """One image, batch of 1, padded: ``image`` [1,3,H,W]; ``gt_mask`` [1,1,H,W] or None."""

    name: str
    image: np.ndarray
    height: int  # before padding
    width: int
    gt_mask: np.ndarray | None = None

    def crop(self, array: np.ndarray) -> np.ndarray:
        """``array`` without the padding."""
        return array[..., : self.height, : self.width]


def _pad(array: np.ndarray, multiple: int, mode: str) -> np.ndarray:
    return np.ascontiguousarray(pad_to_multiple(array, multiple, mode=mode), dtype=np.float32)


def _synthetic_inputs(multiple: int, num_images: int, size: int | Size) -> list[ParityInput]:
    # torch comes with the synthetic set only: a parity run of files on a folder does without it.
    from m2ae.model.data.synthetic import heldout_set

    dataset = heldout_set(num_images, size)
    inputs = []
    for index in range(len(dataset)):
        item = dataset[index]
        blurred = item["blurred"].numpy()[None]
        mask = item["mask"].numpy()[None]
        inputs.append(ParityInput(str(item["name"]), _pad(blurred, multiple, "reflect"), *blurred.shape[-2:],
                                  gt_mask=_pad(mask, multiple, "constant")))
    return inputs


def _folder_inputs(folder: str, multiple: int) -> list[ParityInput]:
    files = list_images(folder)
    if not files:
        raise UserError(f"{folder}: no image files in this folder")
    inputs = []
    for path in files:
        chw = read_image(path).transpose(2, 0, 1)[None]
        inputs.append(ParityInput(path.name, _pad(chw, multiple, "reflect"), *chw.shape[-2:]))
    return inputs


def load_inputs(images: str, multiple: int, min_size: int, num_images: int = 8, size: int | Size = 128
                ) -> list[ParityInput]:
    """Images from a folder (padded to ``multiple``) or the held-out synthetic set."""
    synthetic = images == SYNTHETIC_IMAGES
    inputs = _synthetic_inputs(multiple, num_images, size) if synthetic else _folder_inputs(images, multiple)
    for item in inputs:
        if min(item.image.shape[-2:]) < min_size:
            source = "--size" if synthetic else item.name
            raise UserError(f"{source}: image {format_size((item.height, item.width))} is smaller than the models' "
                            f"minimum {min_size}")
    return inputs


def _inputs_for(config: ParityConfig, models: list[ParityModel]) -> list[ParityInput]:
    """The images, padded so that every model takes them."""
    multiple = math.lcm(*(m.info.multiple for m in models))
    min_size = max(m.info.min_size for m in models)
    return load_inputs(config.images, multiple, min_size, config.num_images, config.size)


# ---------------------------------------------------------------------------- running


def _run(model: ParityModel, name: str, feeds: list[OrderedDict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Outputs of ``model`` per feed, collected by Polygraphy's ``Comparator.run``."""
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        results = Comparator.run([model.make_runner(name)], data_loader=feeds)
    (_, iterations), = list(results.items())
    return [{key: np.asarray(value) for key, value in iteration.items()} for iteration in iterations]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


@dataclass(frozen=True)
class _ReferenceRun:
    """The reference's outputs per input, and the mask-input feeds they make for candidates."""

    outputs: list[dict[str, np.ndarray]]
    masks: list[np.ndarray]
    feeds: list[OrderedDict[str, np.ndarray]]


def _reference_feeds(reference: ParityModel, inputs: list[ParityInput], config: ParityConfig
                     ) -> list[OrderedDict[str, np.ndarray]]:
    if not reference.engine.takes_mask:
        return [OrderedDict([(INPUT_IMAGE, item.image)]) for item in inputs]
    if inputs[0].gt_mask is None:
        raise UserError(f"{config.reference}: the reference takes a mask input, which only the synthetic set provides "
                        f"(--images {SYNTHETIC_IMAGES}); or use a mask-predicting reference")
    return [OrderedDict([(INPUT_IMAGE, item.image), (INPUT_MASK, item.gt_mask)]) for item in inputs]


def _run_reference(reference: ParityModel, feeds: list[OrderedDict[str, np.ndarray]], inputs: list[ParityInput],
                   config: ParityConfig) -> _ReferenceRun:
    try:
        outputs = _run(reference, "reference", feeds)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 (any backend failure of the reference ends the run)
        raise UserError(f"{config.reference}: reference inference failed ({_first_line(exc)})") from None
    masks = [out.get(OUTPUT_MASK, item.gt_mask) for out, item in zip(outputs, inputs)]
    candidate_feeds = [OrderedDict([(INPUT_IMAGE, item.image),
                                    (INPUT_MASK, np.ascontiguousarray(mask, dtype=np.float32))])
                       for item, mask in zip(inputs, masks)]
    return _ReferenceRun(outputs, masks, candidate_feeds)


class _StripPaths:
    """One strip PNG per candidate in ``out_dir``, named after it, never twice the same."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.used: set[Path] = set()

    def next(self, label: str) -> Path:
        stem = Path(label).name.replace(".", "_").replace(":", "_")
        path, count = self.out_dir / f"{stem}.parity.png", 1
        while path in self.used:
            count += 1
            path = self.out_dir / f"{stem}_{count}.parity.png"
        self.used.add(path)
        return path


def _skipped(candidate: _Candidate) -> CandidateResult:
    backend = "tensorrt" if Path(candidate.spec).suffix.lower() in TENSORRT_SUFFIXES else ""
    return CandidateResult(candidate.spec, backend, "", "", False, "skipped", candidate.skip_reason)


def _check_candidate(spec: str, model: ParityModel, name: str, reference: _ReferenceRun, inputs: list[ParityInput],
                     config: ParityConfig, strips: _StripPaths) -> CandidateResult:
    """Run one candidate and judge it; a candidate that cannot run fails, the others still run."""
    info = model.info
    result = CandidateResult(spec, model.engine.backend, info.precision, info.variant, model.engine.takes_mask, "fail")
    feeds = reference.feeds if model.engine.takes_mask else [OrderedDict([(INPUT_IMAGE, f[INPUT_IMAGE])])
                                                              for f in reference.feeds]
    try:
        outputs = _run(model, name, feeds)
    except Exception as exc:  # noqa: BLE001 (a candidate that cannot run fails; the others still run)
        result.reason = f"inference failed: {_first_line(exc)}"
        return result
    # A mask-input model's mask output is its input mask; engines may not even export it.
    masks = [out.get(OUTPUT_MASK, feed[INPUT_MASK]) for out, feed in zip(outputs, reference.feeds)]
    result.metrics = parity_metrics([
        (item.crop(out[OUTPUT_RESTORED]), item.crop(ref[OUTPUT_RESTORED]), item.crop(mask), item.crop(ref_mask))
        for out, ref, mask, ref_mask, item in zip(outputs, reference.outputs, masks, reference.masks, inputs)
    ])
    result.violations = threshold_violations(result.metrics, config.thresholds.for_precision(info.precision, spec))
    result.status = "fail" if result.violations else "pass"
    result.reason = "; ".join(result.violations)
    first = inputs[0]
    result.strip, result.heat_map_scale = write_strip(
        strips.next(spec), first.crop(first.image)[0], first.crop(masks[0])[0],
        first.crop(reference.outputs[0][OUTPUT_RESTORED])[0], first.crop(outputs[0][OUTPUT_RESTORED])[0],
    )
    return result


def _prepare_outputs(config: ParityConfig) -> None:
    if config.json_path is not None:
        check_output_file(config.json_path, "--json")
    check_output_dir(config.out_dir, "--out" if config.strip_dir is not None or config.json_path is None else "--json")
    remove_stale_temps(config.out_dir)


def run_parity(config: ParityConfig) -> ParityReport:
    """Compare every candidate with the reference; write strips (and the JSON report)."""
    _prepare_outputs(config)
    # Every engine is closed by its run, or here when the run stops early.
    with contextlib.ExitStack() as opened:
        reference = open_model(config.reference, config)
        opened.enter_context(reference.engine)
        candidates = _open_candidates(config, opened)
        inputs = _inputs_for(config, [reference, *(c.model for c in candidates if c.model is not None)])
        feeds = _reference_feeds(reference, inputs, config)
        bar = opened.enter_context(tqdm(total=1 + len(candidates), desc="parity", unit="model",
                                        disable=not config.progress))
        bar.set_postfix_str("reference")
        reference_run = _run_reference(reference, feeds, inputs, config)
        bar.update(1)
        strips = _StripPaths(config.out_dir)
        results = []
        for index, candidate in enumerate(candidates):
            bar.set_postfix_str(Path(candidate.spec).name)
            if candidate.model is None:
                results.append(_skipped(candidate))
            else:
                results.append(_check_candidate(candidate.spec, candidate.model, f"candidate{index}", reference_run,
                                                inputs, config, strips))
            bar.update(1)

    report = ParityReport(
        reference={"model": reference.label, "backend": reference.engine.backend,
                   "precision": reference.info.precision, "variant": reference.info.variant},
        images=config.images, image_sizes=[(item.height, item.width) for item in inputs],
        thresholds=config.thresholds, candidates=results,
    )
    if config.json_path is not None:
        report.json_path = write_text(config.json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    return report
