"""Precision lives in the ONNX: fp16 graphs and int8 QDQ graphs made from the fp32 export.

* fp16 (onnxconverter-common): weights and activations in float16, I/O kept float32,
  and the blur-mask head with its softmax and threshold kept in float32 so the mask
  does not flip on rounding. ``keep_sharp_pixels`` then hands back the float32 input
  wherever the float16 body left a pixel unchanged.
* int8: the fp16 graph with Q/DQ pairs in front of the Conv, ConvTranspose and MatMul
  layers outside the mask path, in the form TensorRT runs as int8 layers (its
  "explicit quantization"; docs/design.md section 4): symmetric int8 (zero point 0);
  weights per output channel (Conv axis 0, ConvTranspose axis 1, MatMul the weight's
  output axis); activations per tensor, calibrated on images (MinMax); biases and
  every other layer left in float16, so a strongly typed build (TensorRT 11, and
  ``m2ae build`` on 10) runs them in fp16. Scales are float16, which the Q/DQ ops take
  from opset 19, so int8 graphs import opset 19 or newer. The quantizer is ours, not
  ONNX Runtime's: its QDQ format also quantizes biases to int32 (which TensorRT's
  dequantize layer refuses) and quantizes MatMul weights along the summed axis.
  Calibration runs on a graph of standard ops (the ``portable`` tiled body stands in
  for the ``plugin`` one: their tensors carry the same names), once per graph kind.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from m2ae.graph_io import INPUT_IMAGE, OUTPUT_RESTORED

MASK_HEAD_SCOPE = "/mask_head/"
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul")
#: DequantizeLinear/QuantizeLinear take float16 scales from opset 19
INT8_OPSET = 19
INT8_MAX = 127
#: smallest scale written: float16's smallest normal number, so no scale is subnormal or 0
MIN_SCALE = float(np.finfo(np.float16).tiny)


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


def keep_sharp_pixels(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (float16 or int8 inside, float32 I/O) returning the float32 input, bit for
    bit, wherever its body left a pixel unchanged; in place, and returned.

    Inside, the image is float16, so an unchanged (sharp) pixel leaves as the input
    rounded to float16. The output becomes ``Where(out == float(half(image)), image, out)``:
    sharp pixels are the input again, as in the float32 graph, and a restored pixel that
    happens to equal its rounded input (a change below float16's resolution) takes the
    input too. Four elementwise ops on the output, whatever the variant.
    """
    graph = model.graph
    body = f"{OUTPUT_RESTORED}_body"
    for node in graph.node:
        node.input[:] = [body if name == OUTPUT_RESTORED else name for name in node.input]
        node.output[:] = [body if name == OUTPUT_RESTORED else name for name in node.output]
    graph.node.extend([
        helper.make_node("Cast", [INPUT_IMAGE], ["sharp/image_half"], name="sharp/image_half", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["sharp/image_half"], ["sharp/image_rounded"], name="sharp/image_rounded",
                         to=TensorProto.FLOAT),
        helper.make_node("Equal", [body, "sharp/image_rounded"], ["sharp/unchanged"], name="sharp/unchanged"),
        helper.make_node("Where", ["sharp/unchanged", INPUT_IMAGE, body], [OUTPUT_RESTORED], name="sharp/restored"),
    ])
    return model


@dataclass(frozen=True)
class _Quantizable:
    """A layer to quantize: which input is the activation, which the weight, and the
    weight axis that indexes its output channels (the only axis whose per-channel
    scales factor out of the int8 product)."""

    node: str
    activation: int
    weight: int
    axis: int


def _quantizable(model: onnx.ModelProto, excluded: set[str]) -> list[_Quantizable]:
    """The layers of ``model`` (fp32) that the int8 graph runs in int8."""
    weights = {init.name: init for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS or node.name in excluded:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            weight = weights.get(node.input[1])
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            # A grouped transposed conv's axis 1 holds C_out/group channels: no per-channel form.
            if weight is None or (node.op_type == "ConvTranspose" and group != 1):
                continue
            # Conv weights are [C_out, C_in/g, k...], ConvTranspose weights [C_in, C_out/g, k...].
            found.append(_Quantizable(node.name, 0, 1, 0 if node.op_type == "Conv" else 1))
        elif node.input[1] in weights and len(weights[node.input[1]].dims) >= 2:
            # x @ W with W [..., K, N]: output channels on the last axis.
            found.append(_Quantizable(node.name, 0, 1, len(weights[node.input[1]].dims) - 1))
        elif node.input[0] in weights and len(weights[node.input[0]].dims) >= 2:
            # W @ x with W [..., M, K]: output channels on the second-to-last axis, never K.
            found.append(_Quantizable(node.name, 1, 0, len(weights[node.input[0]].dims) - 2))
    return found


def _scale(absmax: np.ndarray | float) -> np.ndarray:
    """float16 scale(s) mapping +-absmax onto +-127, at least MIN_SCALE."""
    return np.maximum(np.asarray(absmax, dtype=np.float32) / INT8_MAX, MIN_SCALE).astype(np.float16)


def _quantize_weight(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float16 scale per index of ``axis``), symmetric."""
    others = tuple(i for i in range(weight.ndim) if i != axis)
    scale = _scale(np.abs(weight).max(axis=others))
    shape = [1] * weight.ndim
    shape[axis] = -1
    # Quantized against the float16 scale the graph carries, so the dequantized weight is
    # exactly q * scale.
    q = np.clip(np.rint(weight / scale.astype(np.float32).reshape(shape)), -INT8_MAX, INT8_MAX)
    return q.astype(np.int8), scale


def _insert_qdq(
    model: onnx.ModelProto, layers: list[_Quantizable], fp32_weights: dict[str, np.ndarray],
    fp32_inputs: dict[tuple[str, int], str], absmax: dict[str, float],
) -> None:
    """Put Q/DQ in front of ``layers`` of ``model`` (the fp16 graph), in place.

    ``fp32_weights`` and ``fp32_inputs`` (node name, input index -> tensor name) come from
    the fp32 graph: the weights are quantized from their fp32 values, and the activation
    ranges are keyed by fp32 tensor names (the fp16 graph may read a Cast of them).
    Activation Q/DQ pairs are shared by the layers that read one tensor; nothing else
    reads the dequantized copies.
    """
    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    initializers = {init.name: init for init in graph.initializer}
    before: dict[str, list[onnx.NodeProto]] = {}
    pairs: dict[str, str] = {}
    for layer in layers:
        node = nodes[layer.node]
        weight_init = initializers[node.input[layer.weight]]
        float_type = weight_init.data_type  # float16, or float32 where the fp16 graph kept fp32
        scale_type = np.float16 if float_type == TensorProto.FLOAT16 else np.float32
        name = node.input[layer.activation]
        if name not in pairs:
            stem = f"{name}/int8"
            scale = _scale(absmax[fp32_inputs[(layer.node, layer.activation)]]).astype(scale_type)
            graph.initializer.extend([
                numpy_helper.from_array(scale, f"{stem}/scale"),
                numpy_helper.from_array(np.zeros((), np.int8), f"{stem}/zero_point"),
            ])
            before.setdefault(layer.node, []).extend([
                helper.make_node("QuantizeLinear", [name, f"{stem}/scale", f"{stem}/zero_point"], [f"{stem}/q"],
                                 name=f"{stem}/QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{stem}/q", f"{stem}/scale", f"{stem}/zero_point"],
                                 [f"{stem}/dq"], name=f"{stem}/DequantizeLinear"),
            ])
            pairs[name] = f"{stem}/dq"
        node.input[layer.activation] = pairs[name]
        stem = f"{layer.node}/weight_int8"
        q, scale = _quantize_weight(fp32_weights[weight_init.name], layer.axis)
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{stem}/quantized"),
            numpy_helper.from_array(scale.astype(scale_type), f"{stem}/scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{stem}/zero_point"),
        ])
        before.setdefault(layer.node, []).append(helper.make_node(
            "DequantizeLinear", [f"{stem}/quantized", f"{stem}/scale", f"{stem}/zero_point"], [f"{stem}/dq"],
            name=f"{stem}/DequantizeLinear", axis=layer.axis,
        ))
        node.input[layer.weight] = f"{stem}/dq"
    # Each pair goes right before its first reader: after its input's producer, so the
    # node list stays topologically sorted.
    ordered = []
    for node in graph.node:
        ordered.extend(before.get(node.name, []))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    read = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in read]:
        graph.initializer.remove(init)


def quantize_int8(
    models: dict[str, onnx.ModelProto],
    calibration_model: onnx.ModelProto,
    feeds: Sequence[dict[str, np.ndarray]],
    progress: bool = True,
) -> dict[str, onnx.ModelProto]:
    """Int8 QDQ copies of ``models`` (fp32, by name), all calibrated once on ``calibration_model``.

    ``calibration_model`` must run on plain ONNX Runtime (the portable or dense graph)
    and share tensor names with every model in ``models``. Each copy is the fp16 graph
    of ``to_fp16`` at opset ``INT8_OPSET`` or newer, with Q/DQ in front of its int8 layers.
    """
    from onnx import version_converter

    from m2ae.export.calibration import activation_absmax

    layers = {name: _quantizable(model, set(mask_path_nodes(model))) for name, model in models.items()}
    # (layer's node name, input index) -> the fp32 tensor it reads, per model
    activations: dict[str, dict[tuple[str, int], str]] = {}
    for name, model in models.items():
        by_name = {node.name: node for node in model.graph.node}
        activations[name] = {(layer.node, layer.activation): by_name[layer.node].input[layer.activation]
                             for layer in layers[name]}
    tensors = {tensor for reads in activations.values() for tensor in reads.values()}
    absmax = activation_absmax(calibration_model, feeds, tensors, progress)
    out = {}
    for name, model in models.items():
        converted = to_fp16(model)
        opset = next(o.version for o in converted.opset_import if o.domain in ("", "ai.onnx"))
        if opset < INT8_OPSET:
            converted = version_converter.convert_version(converted, INT8_OPSET)
        weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        _insert_qdq(converted, layers[name], weights, activations[name], absmax)
        onnx.checker.check_model(converted)
        out[name] = converted
    return out
