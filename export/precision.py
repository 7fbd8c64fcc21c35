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

import contextlib
import logging
import tempfile
import warnings
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
    # Scoped anywhere in the name: the dense graph nests the head as /model/mask_head/.
    keep = [n.name for n in model.graph.node if MASK_HEAD_SCOPE in n.name]
    frontier = [n for n in model.graph.node if n.op_type == "Softmax"]
    while frontier:
        node = frontier.pop()
        keep.append(node.name)
        if node.op_type == "Greater":
            continue
        for output in node.output:
            frontier.extend(consumers.get(output, []))
    # The constants they read stay float32 too: a threshold like 0.45 is no float16 number.
    producers = {out: node for node in model.graph.node for out in node.output}
    kept = set(keep)
    for node in model.graph.node:
        if node.name in kept:
            keep.extend(
                producers[name].name for name in node.input
                if name in producers and producers[name].op_type == "Constant"
            )
    return sorted(set(keep))


def _isolate_outputs(model: onnx.ModelProto) -> None:
    """Give every graph output that nodes also read its own Identity, in place.

    onnxconverter-common's ``keep_io_types`` cannot handle a graph output that is also an
    internal tensor (``blur_mask`` feeds the masked blocks): it fails, or makes float16
    nodes read the float32 output.
    """
    consumed = {name for node in model.graph.node for name in node.input}
    for output in model.graph.output:
        if output.name not in consumed:
            continue
        inner = f"{output.name}_inner"
        for node in model.graph.node:
            node.input[:] = [inner if name == output.name else name for name in node.input]
            node.output[:] = [inner if name == output.name else name for name in node.output]
        model.graph.node.append(onnx.helper.make_node("Identity", [inner], [output.name], name=f"{output.name}_output"))


def _retarget_casts(model: onnx.ModelProto, keep: set[str]) -> None:
    """Casts to float32 outside ``keep`` cast to float16 instead, in place.

    The converter declares their outputs float16 but leaves their ``to`` alone (the
    bool -> float Cast that makes the mask), which ONNX Runtime rejects as a type error.
    """
    for node in model.graph.node:
        if node.op_type == "Cast" and node.name not in keep:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16


def _float32_outputs(model: onnx.ModelProto, nodes: set[str]) -> set[tuple[str, int]]:
    """(node name, output index) of the float32 outputs of ``nodes`` in an fp32 graph."""
    values = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    names = {v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    found = set()
    for node in model.graph.node:
        if node.name not in nodes:
            continue
        constant = node.op_type == "Constant" and any(a.t.data_type == onnx.TensorProto.FLOAT for a in node.attribute)
        found.update((node.name, i) for i, out in enumerate(node.output) if constant or out in names)
    return found


def _drop_float16_round_trips(model: onnx.ModelProto, float32_outputs: set[tuple[str, int]]) -> None:
    """Bypass Cast(float16) -> Cast(float32) pairs between float32 nodes, in place.

    The converter never removes such a pair after a Constant, nor after a tensor that a
    float16 node reads as well (the pixel-unshuffled image the mask head shares with the
    motion analyser): each rounds a float32 value of the mask path to float16.
    ``float32_outputs`` names the float32 outputs of the kept nodes by position, as the
    converter renames them.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    sources = {v.name for v in graph.input} | {
        out for node in graph.node for i, out in enumerate(node.output) if (node.name, i) in float32_outputs
    }

    def target(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    bypass = {}
    for node in graph.node:
        first = producer.get(node.input[0]) if target(node) == onnx.TensorProto.FLOAT else None
        if first is not None and target(first) == onnx.TensorProto.FLOAT16 and first.input[0] in sources:
            bypass[node.output[0]] = first.input[0]
    for node in graph.node:
        node.input[:] = [bypass.get(name, name) for name in node.input]
    while True:
        read = {name for node in graph.node for name in node.input} | {v.name for v in graph.output}
        dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in read]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common import float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the converter edits its argument in place
    keep = mask_path_nodes(copy)
    _isolate_outputs(copy)
    _retarget_casts(copy, set(keep))
    float32_outputs = _float32_outputs(copy, set(keep))
    # check_fp16_ready would mistake the retargeted casts for an earlier conversion.
    with warnings.catch_warnings():
        # One warning per weight below fp16's smallest subnormal (flushed to +-1e-7): expected.
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        converted = float16.convert_float_to_float16(
            copy, keep_io_types=True, node_block_list=keep, disable_shape_infer=True, check_fp16_ready=False
        )
    _drop_float16_round_trips(converted, float32_outputs)
    return converted


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


def _unquantized_nodes_read_float(model: onnx.ModelProto, excluded: set[str]) -> None:
    """Route Q/DQ pairs to the quantised nodes only, in place.

    The quantiser makes every reader of a quantised tensor read its DequantizeLinear.
    For the image that quantises the sharp pixels the network passes through (they must
    equal the input bit for bit); for the mask head (excluded from quantisation) it
    quantises its input anyway and flips mask pixels; residual adds and scatters gain
    rounding error. Nodes other than quantised Conv/MatMul read the float tensor, and
    the Q/DQ pairs (and their scales) nobody reads any more are removed.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    raw = {}
    for node in graph.node:
        quantize = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if quantize is not None and quantize.op_type == "QuantizeLinear":
            raw[node.output[0]] = quantize.input[0]
    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS or node.name in excluded:
            node.input[:] = [raw.get(name, name) for name in node.input]
    outputs = {value.name for value in graph.output}
    orphans: set[str] = set()
    for op_type in ("DequantizeLinear", "QuantizeLinear"):
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == op_type and not any(out in read for out in n.output)]
        for node in dead:
            orphans.update(node.input)
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name in orphans and init.name not in read]
    for init in unused:
        graph.initializer.remove(init)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantizer logs advice ("consider pre-processing") on the root logger per call;
    the graphs it gets are already simplified and shape-inferred, so keep that quiet."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


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
    with tempfile.TemporaryDirectory(prefix="m2ae-int8-") as tmp, _quiet_root_logger():
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
            excluded = mask_path_nodes(model)
            quantize_static(source, target, None, nodes_to_exclude=excluded, calibration_cache_path=cache, **common)
            out[name] = onnx.load(target)
            _unquantized_nodes_read_float(out[name], set(excluded))
    return out
