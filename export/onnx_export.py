"""``m2ae export``: the ONNX variants of one checkpoint (DESIGN.md section 4).

* ``plugin``: the pruned graph with ``m2ae::MaskedGather``/``MaskedScatter`` nodes;
* ``portable``: the same graph with those nodes lowered to standard ONNX ops;
* ``dense``: the reparameterised dense-masked network (the speed baseline).

Each is written as ``{variant}[_maskin]_{precision}.onnx`` with dynamic N, H, W,
simplified by onnxsim, checked by ``onnx.checker``, and tagged with metadata (preset,
threshold, opset, multiple, variant, precision, mask input, checkpoint sha256).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from tqdm import tqdm

from m2ae import __version__
from m2ae.atomic import write_bytes
from m2ae.errors import UserError
from m2ae.export.pruned import PrunedM2AE
from m2ae.export.reparam import deploy_form
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK, OUTPUT_MASK, OUTPUT_RESTORED
from m2ae.model.checkpoint import LoadedCheckpoint, load_checkpoint
from m2ae.model.network import M2AENet
from m2ae.trt_plugins import DOMAIN
from m2ae.trt_plugins.onnx_ops import lower_to_standard_ops
from m2ae.trt_plugins.torch_ops import register_onnx_symbolics

VARIANTS = ("plugin", "portable", "dense")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str = "tiny"
    out: Path = Path("onnx")
    variants: tuple[str, ...] = VARIANTS
    precisions: tuple[str, ...] = ("fp32",)
    mask_input: bool = False
    #: int8 calibration images: "synthetic" or a folder of images
    calib: str = "synthetic"
    calib_images: int = 16
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise UserError(f"--variants: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(VARIANTS)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise UserError(f"--precision: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(PRECISIONS)}")
        if self.opset < DEFAULT_OPSET:
            raise UserError(f"--opset must be {DEFAULT_OPSET} or newer, got {self.opset}")


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    variant: str
    precision: str
    mask_input: bool
    metadata: dict[str, str] = field(default_factory=dict)


def model_filename(variant: str, precision: str, mask_input: bool) -> str:
    return f"{variant}{'_maskin' if mask_input else ''}_{precision}.onnx"


class DenseGraph(nn.Module):
    """The folded dense-masked network with the export I/O: (image[, mask]) -> (restored, mask)."""

    def __init__(self, model: M2AENet) -> None:
        super().__init__()
        self.model = deploy_form(model)

    def forward(self, image: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self.model(image, gate="pred" if mask is None else mask)
        return out.restored, out.mask


def _trace_to_onnx(module: nn.Module, multiple: int, mask_input: bool, opset: int) -> onnx.ModelProto:
    size = 4 * multiple
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : size // 2, size // 4 : size // 2] = 1.0
    args = (image, mask) if mask_input else (image,)
    inputs = [INPUT_IMAGE, INPUT_MASK] if mask_input else [INPUT_IMAGE]
    outputs = [OUTPUT_RESTORED, OUTPUT_MASK]
    register_onnx_symbolics(opset)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about data-dependent shapes (NonZero); they are dynamic by design.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), args, buffer, dynamo=False, opset_version=opset,
            input_names=inputs, output_names=outputs,
            dynamic_axes={name: {0: "N", 2: "H", 3: "W"} for name in inputs + outputs},
            custom_opsets={DOMAIN: 1} if isinstance(module, PrunedM2AE) else None, do_constant_folding=True,
        )
    model = onnx.load_model_from_string(buffer.getvalue())
    # A custom op's symbolic type carries no sizes, so the plugin graph's ``restored`` would
    # get a symbolic channel dim: pin the static channel counts of the outputs.
    for output, channels in zip(model.graph.output, (image.shape[1], 1)):
        output.type.tensor_type.shape.dim[1].dim_value = channels
    return model


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim with dynamic shapes; custom-op nodes are left as they are."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model, check_n=0)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified


def _metadata(loaded: LoadedCheckpoint, variant: str, precision: str, mask_input: bool, opset: int) -> dict[str, str]:
    config = loaded.config
    return {
        "m2ae.version": __version__,
        "m2ae.preset": config.preset,
        "m2ae.threshold": repr(config.threshold),
        "m2ae.mask_dilation": str(config.mask_dilation),
        "m2ae.opset": str(opset),
        "m2ae.multiple": str(config.multiple),
        "m2ae.min_size": str(config.min_size),
        "m2ae.variant": variant,
        "m2ae.precision": precision,
        "m2ae.mask_input": "1" if mask_input else "0",
        "m2ae.checkpoint": loaded.path.name,
        "m2ae.checkpoint_sha256": loaded.sha256,
    }


def _calibration_feeds(loaded: LoadedCheckpoint, config: ExportConfig) -> list[dict[str, np.ndarray]]:
    from m2ae.export.calibration import calibration_images

    images = calibration_images(config.calib, config.calib_images, loaded.config.multiple)
    feeds = []
    with torch.no_grad():
        for image in images:
            feed = {INPUT_IMAGE: image[None]}
            if config.mask_input:
                # Calibrate on the masks the network itself would predict for the image.
                feed[INPUT_MASK] = loaded.model(torch.from_numpy(image[None])).mask.numpy()
            feeds.append(feed)
    return feeds


def export_models(config: ExportConfig) -> list[ExportedModel]:
    """Write every requested variant x precision; returns what was written."""
    from m2ae.export.precision import quantize_int8, to_fp16

    loaded = load_checkpoint(config.checkpoint)
    multiple = loaded.config.multiple
    steps = tqdm(total=len(config.variants) * len(config.precisions) + 1, desc="export", unit="model",
                 disable=not config.progress)
    fp32: dict[str, onnx.ModelProto] = {}
    steps.set_postfix_str("tracing")
    needs_pruned = bool({"plugin", "portable"} & set(config.variants))
    if needs_pruned:
        plugin = _trace_to_onnx(PrunedM2AE(loaded.model), multiple, config.mask_input, config.opset)
        fp32["plugin"] = simplify(plugin)
        fp32["portable"] = simplify(lower_to_standard_ops(fp32["plugin"]))
    if "dense" in config.variants:
        fp32["dense"] = simplify(_trace_to_onnx(DenseGraph(loaded.model), multiple, config.mask_input, config.opset))
    steps.update(1)

    by_precision: dict[str, dict[str, onnx.ModelProto]] = {}
    for precision in config.precisions:
        if precision == "fp32":
            by_precision[precision] = {v: fp32[v] for v in config.variants}
        elif precision == "fp16":
            by_precision[precision] = {v: to_fp16(fp32[v]) for v in config.variants}
        else:
            steps.set_postfix_str("int8 calibration")
            feeds = _calibration_feeds(loaded, config)
            quantized: dict[str, onnx.ModelProto] = {}
            pruned = [v for v in ("plugin", "portable") if v in config.variants]
            if pruned:
                quantized |= quantize_int8({v: fp32[v] for v in pruned}, fp32["portable"], feeds, config.progress)
            if "dense" in config.variants:
                quantized |= quantize_int8({"dense": fp32["dense"]}, fp32["dense"], feeds, config.progress)
            by_precision[precision] = quantized

    written = []
    for precision, models in by_precision.items():
        for variant in config.variants:
            steps.set_postfix_str(f"{variant} {precision}")
            metadata = _metadata(loaded, variant, precision, config.mask_input, config.opset)
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
