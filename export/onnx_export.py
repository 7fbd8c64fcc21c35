"""``m2ae export``: the ONNX variants of one checkpoint (docs/design.md section 4).

* ``plugin``: the pruned graph (mask head, then ``If`` all sharp: skip; ``If`` tile
  occupancy above ``dense_above``: dense body; else the tiled body with
  ``m2ae::MaskedGather``/``MaskedScatter`` nodes);
* ``portable``: the same graph with those nodes lowered to standard ONNX ops;
* ``dense``: the reparameterised dense-masked network (the speed baseline).

The pruned graphs are traced in parts (head, tiled body, dense body), each simplified
by onnxsim and converted to its precision on its own, then joined by
``m2ae.export.compose`` (tracing cannot express the ``If`` nodes). Each variant is
written as ``{variant}[_maskin]_{precision}.onnx`` with dynamic N, H, W, checked by
``onnx.checker``, and tagged with metadata (preset, threshold, opset, multiple, tiles,
dense_above, variant, precision, mask input, checkpoint sha256).
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from tqdm import tqdm

from m2ae import __version__
from m2ae.atomic import check_output_dir, remove_stale_temps, write_bytes
from m2ae.errors import UserError
from m2ae.export.compose import compose
from m2ae.export.precision import keep_sharp_pixels
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK, OUTPUT_MASK, OUTPUT_RESTORED
from m2ae.model.checkpoint import LoadedCheckpoint, load_checkpoint
from m2ae.model.network import M2AENet
from m2ae.model.pruned import (
    DenseBody,
    DenseGraph,
    MaskHead,
    PrunedBody,
    PruningConfig,
    PruningOptions,
    checkpoint_info,
)
from m2ae.model.reparam import deploy_form
from m2ae.trt_plugins import DOMAIN
from m2ae.trt_plugins.onnx_ops import lower_to_standard_ops
from m2ae.trt_plugins.torch_ops import register_onnx_symbolics

VARIANTS = ("plugin", "portable", "dense")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_OPSET = 17
#: the newest opset torch's TorchScript exporter writes (as of torch 2.13); every variant and precision ran at 20
MAX_OPSET = 20


@dataclass(frozen=True)
class ExportConfig:
    #: a checkpoint file, ``tiny`` for the shipped one, or one already loaded (an orchestrator loads it once)
    checkpoint: str | Path | LoadedCheckpoint = "tiny"
    out: Path = Path("onnx")
    variants: tuple[str, ...] = VARIANTS
    precisions: tuple[str, ...] = ("fp32",)
    mask_input: bool = False
    #: int8 calibration images: "synthetic" or a folder of images
    calib: str = "synthetic"
    calib_images: int = 16
    opset: int = DEFAULT_OPSET
    #: how the pruned variants tile and when they switch to the dense body
    pruning: PruningOptions = PruningOptions()
    simplify: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise UserError(f"--variants: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(VARIANTS)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise UserError(f"--precision: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(PRECISIONS)}")
        if not DEFAULT_OPSET <= self.opset <= MAX_OPSET:
            raise UserError(f"--opset {self.opset}: m2ae exports ONNX opsets {DEFAULT_OPSET} to {MAX_OPSET}; "
                            f"leave it out for {DEFAULT_OPSET}")


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    variant: str
    precision: str
    mask_input: bool
    metadata: dict[str, str] = field(default_factory=dict)


def model_filename(variant: str, precision: str, mask_input: bool) -> str:
    return f"{variant}{'_maskin' if mask_input else ''}_{precision}.onnx"


def _example_inputs(multiple: int) -> tuple[Tensor, Tensor]:
    size = 4 * multiple
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : size // 2, size // 4 : size // 2] = 1.0
    return image, mask


def _trace(module: nn.Module, args: tuple[Tensor, ...], inputs: list[str], outputs: list[str], opset: int,
           custom_ops: bool = False) -> onnx.ModelProto:
    register_onnx_symbolics(opset)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns where the network checks a given mask's shape (a Python bool of traced
        # sizes): a check, not data flow. Only that: the exporter's own DeprecationWarning stays.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(), args, buffer, dynamo=False, opset_version=opset,
            input_names=inputs, output_names=outputs,
            dynamic_axes={name: {0: "N", 2: "H", 3: "W"} for name in inputs + outputs},
            custom_opsets={DOMAIN: 1} if custom_ops else None, do_constant_folding=True,
        )
    model = onnx.load_model_from_string(buffer.getvalue())
    # A custom op's symbolic type carries no sizes, so an output computed by one gets a
    # symbolic channel dim: pin the static channel counts of the outputs.
    channels = {OUTPUT_RESTORED: args[0].shape[1], OUTPUT_MASK: 1}
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_value = channels[output.name]
    return model


def _trace_dense(deployed: M2AENet, mask_input: bool, opset: int) -> onnx.ModelProto:
    image, mask = _example_inputs(deployed.config.multiple)
    args = (image, mask) if mask_input else (image,)
    inputs = [INPUT_IMAGE, INPUT_MASK] if mask_input else [INPUT_IMAGE]
    return _trace(DenseGraph(deployed), args, inputs, [OUTPUT_RESTORED, OUTPUT_MASK], opset)


@dataclass(frozen=True)
class PrunedParts:
    """The traced parts of the pruned graph, before precision conversion and composition."""

    head: onnx.ModelProto | None  # image -> blur_mask (None for mask-input exports)
    tiled: onnx.ModelProto  # (image, blur_mask) -> restored, with m2ae custom ops
    dense: onnx.ModelProto  # (image, blur_mask) -> restored

    @functools.cached_property
    def portable(self) -> onnx.ModelProto:
        """The tiled body in standard ONNX ops (lowered once, on first use)."""
        return simplify(lower_to_standard_ops(self.tiled))


def _trace_pruned_parts(deployed: M2AENet, pruning: PruningConfig, mask_input: bool, opset: int) -> PrunedParts:
    image, mask = _example_inputs(deployed.config.multiple)
    body_io = ([INPUT_IMAGE, OUTPUT_MASK], [OUTPUT_RESTORED])
    head = None
    if not mask_input:
        head = simplify(_trace(MaskHead(deployed), (image,), [INPUT_IMAGE], [OUTPUT_MASK], opset))
    try:
        body = PrunedBody(deployed, pruning)
    except ValueError as exc:
        raise UserError(f"--tiles {','.join(map(str, pruning.tiles))}: {exc}") from None
    tiled = simplify(_trace(body, (image, mask), *body_io, opset, custom_ops=True))
    dense = simplify(_trace(DenseBody(deployed), (image, mask), *body_io, opset))
    return PrunedParts(head, tiled, dense)


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim with dynamic shapes; custom-op nodes are left as they are."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model, check_n=0)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified


def _metadata(loaded: LoadedCheckpoint, variant: str, precision: str, config: ExportConfig) -> dict[str, str]:
    pruning = config.pruning.resolve(loaded.config.preset) if variant != "dense" else None
    return checkpoint_info(loaded, variant, pruning, precision, config.mask_input, config.opset).to_metadata()


def _calibration_images(loaded: LoadedCheckpoint, config: ExportConfig) -> list[np.ndarray]:
    from m2ae.export.calibration import calibration_images

    return [image[None] for image in calibration_images(config.calib, config.calib_images, loaded.config.multiple)]


def _dense_feeds(loaded: LoadedCheckpoint, images: list[np.ndarray], mask_input: bool) -> list[dict[str, np.ndarray]]:
    """Feeds of the whole dense graph; a mask input gets the mask the network predicts."""
    feeds = []
    with torch.no_grad():
        for image in images:
            feed = {INPUT_IMAGE: image}
            if mask_input:
                feed[INPUT_MASK] = loaded.model(torch.from_numpy(image)).mask.numpy()
            feeds.append(feed)
    return feeds


def _body_feeds(images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Feeds of the bodies: an all-blurred mask, so every block sees every pixel of the
    image and the activation ranges cover sharp content as well as blurred."""
    return [{INPUT_IMAGE: image, OUTPUT_MASK: np.ones_like(image[:, :1])} for image in images]


def _at_precision(
    precision: str, models: dict[str, onnx.ModelProto], calibration: Callable[[], onnx.ModelProto],
    feeds: Callable[[], list[dict[str, np.ndarray]]], progress: bool,
) -> dict[str, onnx.ModelProto]:
    """``models`` converted to ``precision``; int8 is calibrated once on ``calibration()``
    (a graph of standard ops, which ONNX Runtime's calibrator can run). Both callables
    run only for int8."""
    from m2ae.export.precision import quantize_int8, to_fp16

    if precision == "fp32":
        return models
    if precision == "fp16":
        return {name: to_fp16(model) for name, model in models.items()}
    return quantize_int8(models, calibration(), feeds(), progress)


def export_models(config: ExportConfig) -> list[ExportedModel]:
    """Write every requested variant x precision; returns what was written."""
    check_output_dir(config.out, "--out")
    remove_stale_temps(config.out)
    loaded = load_checkpoint(config.checkpoint)
    model_config = loaded.config
    steps = tqdm(total=len(config.variants) * len(config.precisions) + 1, desc="export", unit="model",
                 disable=not config.progress)
    steps.set_postfix_str("tracing")
    pruned_variants = [v for v in ("plugin", "portable") if v in config.variants]
    pruning = config.pruning.resolve(model_config.preset)
    # Every traced part is of this one deployed network.
    deployed = deploy_form(loaded.model)
    parts = None
    tiled: dict[str, onnx.ModelProto] = {}
    if pruned_variants:
        parts = _trace_pruned_parts(deployed, pruning, config.mask_input, config.opset)
        tiled = {v: parts.tiled if v == "plugin" else parts.portable for v in pruned_variants}
    dense = None
    if "dense" in config.variants:
        dense = simplify(_trace_dense(deployed, config.mask_input, config.opset))
    steps.update(1)

    images: list[np.ndarray] = []

    def calibration_images() -> list[np.ndarray]:
        if not images:
            steps.set_postfix_str("int8 calibration")
            images.extend(_calibration_images(loaded, config))
        return images

    def body_feeds() -> list[dict[str, np.ndarray]]:
        return _body_feeds(calibration_images())

    def dense_feeds() -> list[dict[str, np.ndarray]]:
        return _dense_feeds(loaded, calibration_images(), config.mask_input)

    written = []
    for precision in config.precisions:
        models: dict[str, onnx.ModelProto] = {}
        if parts is not None:
            # Both tiled bodies share tensor names, so one calibration on the portable one serves both.
            tiled_at = _at_precision(precision, tiled, lambda: parts.portable, body_feeds, config.progress)
            dense_body = _at_precision(precision, {"dense": parts.dense}, lambda: parts.dense, body_feeds,
                                       config.progress)["dense"]
            for variant in pruned_variants:
                models[variant] = compose(parts.head, tiled_at[variant], dense_body, pruning.tile(0),
                                          pruning.dense_above, model_config.in_channels)
        if dense is not None:
            models["dense"] = _at_precision(precision, {"dense": dense}, lambda: dense, dense_feeds,
                                            config.progress)["dense"]
        if precision != "fp32":
            models = {variant: keep_sharp_pixels(model) for variant, model in models.items()}
        for variant in config.variants:
            steps.set_postfix_str(f"{variant} {precision}")
            metadata = _metadata(loaded, variant, precision, config)
            # int8 graphs move to a newer opset (float16 Q/DQ scales): record what the file holds
            metadata["m2ae.opset"] = str(next(o.version for o in models[variant].opset_import if o.domain in ("", "ai.onnx")))
            path = Path(config.out) / model_filename(variant, precision, config.mask_input)
            save_onnx(models[variant], path, metadata)
            written.append(ExportedModel(path, variant, precision, config.mask_input, metadata))
            steps.update(1)
    steps.close()
    return written


def save_onnx(model: onnx.ModelProto, path: Path, metadata: dict[str, str]) -> Path:
    """Tag, check and write ``model`` atomically."""
    onnx.helper.set_model_props(model, metadata)
    model.producer_name = "m2ae"
    model.producer_version = __version__
    onnx.checker.check_model(model)
    return write_bytes(path, model.SerializeToString())
