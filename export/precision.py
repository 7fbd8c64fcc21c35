"""Precision lives in the ONNX: fp16 graphs and int8 QDQ graphs made from the fp32 export.

* fp16 (onnxconverter-common): weights and activations in float16, I/O kept float32,
  and the blur-mask head with its softmax and threshold kept in float32 so the mask
  does not flip on rounding.
* int8 (onnxruntime.quantization, QDQ): symmetric int8 (zero point 0), per-channel
  weights, activations calibrated on images. Calibration runs on the ``portable``
  graph (standard ops, which ONNX Runtime's calibrator can execute); the tensor ranges
  it finds are cached and reused for the ``plugin`` graph, whose tensors carry the same
  names, so both int8 variants share one calibration.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx
from tqdm import tqdm

MASK_HEAD_SCOPE = "/mask_head/"
QUANTIZED_OPS = ("Conv", "MatMul")


def mask_path_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute the mask: the head, its softmax, up to the threshold."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    keep = [n.name for n in model.graph.node if n.name.startswith(MASK_HEAD_SCOPE)]
    frontier = [n for n in model.graph.node if n.op_type == "Softmax"]
    while frontier:
        node = frontier.pop()
        keep.append(node.name)
        if node.op_type == "Greater":
            continue
        for output in node.output:
            frontier.extend(consumers.get(output, []))
    return sorted(set(keep))


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common import float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits its argument in place
    return float16.convert_float_to_float16(
        copy, keep_io_types=True, node_block_list=mask_path_nodes(model), disable_shape_infer=True
    )


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of feeds, with progress."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], progress: bool) -> None:
        self._feeds = feeds
        self._progress = progress
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = iter(tqdm(self._feeds, desc="int8 calibration", unit="img", disable=not self._progress))
        return next(self._iter, None)

    def __len__(self) -> int:
        return len(self._feeds)


def quantize_int8(
    models: dict[str, onnx.ModelProto],
    calibration_model: onnx.ModelProto,
    feeds: Sequence[dict[str, np.ndarray]],
    progress: bool = True,
) -> dict[str, onnx.ModelProto]:
    """Int8 QDQ copies of ``models`` (by name), all calibrated once on ``calibration_model``.

    ``calibration_model`` must run on plain ONNX Runtime (the portable or dense graph)
    and share tensor names with every model in ``models``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    options = {"ActivationSymmetric": True, "WeightSymmetric": True}
    common = dict(
        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, extra_options=options,
    )
    out: dict[str, onnx.ModelProto] = {}
    with tempfile.TemporaryDirectory(prefix="m2ae-int8-") as tmp:
        # The quantizer is given files: its in-memory path re-saves with external data.
        cache = Path(tmp) / "calibration.json"
        calib_path = Path(tmp) / "calibration.onnx"
        onnx.save(calibration_model, calib_path)
        quantize_static(
            calib_path, Path(tmp) / "calibration_int8.onnx", _Reader(feeds, progress),
            nodes_to_exclude=mask_path_nodes(calibration_model), calibration_cache_path=cache, **common,
        )
        for name, model in models.items():
            source, target = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}_int8.onnx"
            onnx.save(model, source)
            quantize_static(
                source, target, None, nodes_to_exclude=mask_path_nodes(model), calibration_cache_path=cache, **common
            )
            out[name] = onnx.load(target)
    return out
