"""Assemble the pruned ONNX graph from its separately exported parts.

The parts are plain graphs: the mask head ``image -> blur_mask`` and two bodies
``(image, blur_mask) -> restored``, the pruned one (tiles, custom ops or their
lowering) and the dense one. ``compose`` joins them with two ``If`` nodes, which
tracing cannot express:

    blur_mask = head(image)                  (or the graph's mask input)
    if max(blur_mask) > 0.5:                 an all-sharp frame skips the body
        if mean(maxpool(blur_mask, tile)) > dense_above:
            restored = dense_body(image, blur_mask)
        else:
            restored = pruned_body(image, blur_mask)
    else:
        restored = image

Both bodies give the same result (the pruned one is exact); the switch only picks the
cheaper. Each part's names are prefixed so the branches cannot clash, and the branch
bodies read ``image`` and ``blur_mask`` from the enclosing graph.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK, OUTPUT_MASK, OUTPUT_RESTORED


def _inline(part: onnx.ModelProto, prefix: str, keep: set[str]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], dict[str, str]]:
    """The part's nodes and initializers with every name but ``keep`` prefixed; and the renames."""
    renamed: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return renamed.setdefault(name, f"{prefix}/{name}")

    initializers = []
    for init in part.graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename(init.name)
        initializers.append(copy)
    nodes = []
    for node in part.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [rename(n) for n in node.input]
        copy.output[:] = [rename(n) for n in node.output]
        copy.name = f"{prefix}/{node.name or node.op_type}"
        nodes.append(copy)
    return nodes, initializers, renamed


def _branch(part: onnx.ModelProto, prefix: str) -> onnx.GraphProto:
    """A body as an ``If`` branch: no inputs (it reads the enclosing graph's), one output."""
    nodes, initializers, renamed = _inline(part, prefix, {INPUT_IMAGE, OUTPUT_MASK})
    output = helper.make_tensor_value_info(renamed[OUTPUT_RESTORED], TensorProto.FLOAT, None)
    return helper.make_graph(nodes, prefix, [], [output], initializer=initializers)


def _image_info(name: str, channels: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, "H", "W"])


def _opsets(*parts: onnx.ModelProto) -> list[onnx.OperatorSetIdProto]:
    versions: dict[str, int] = {}
    for part in parts:
        for opset in part.opset_import:
            versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    return [helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())]


def compose(
    head: onnx.ModelProto | None,
    pruned: onnx.ModelProto,
    dense: onnx.ModelProto,
    tile: int,
    dense_above: float,
    channels: int = 3,
) -> onnx.ModelProto:
    """The one pruned graph: ``image[, mask] -> (restored, blur_mask)``.

    ``head`` None makes a mask-input graph (the mask is its second input). ``tile`` is
    the scale-0 tile side the occupancy is measured in.
    """
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    inputs = [_image_info(INPUT_IMAGE, channels)]
    if head is None:
        inputs.append(_image_info(INPUT_MASK, 1))
        nodes.append(helper.make_node("Identity", [INPUT_MASK], [OUTPUT_MASK], name="mask_input"))
    else:
        head_nodes, head_inits, _ = _inline(head, "head", {INPUT_IMAGE, OUTPUT_MASK})
        nodes += head_nodes
        initializers += head_inits

    choose = [
        helper.make_node("MaxPool", [OUTPUT_MASK], ["switch/tiles"], name="switch/tiles",
                         kernel_shape=[tile, tile], strides=[tile, tile], ceil_mode=1),
        helper.make_node("ReduceMean", ["switch/tiles"], ["switch/occupancy"], name="switch/occupancy", keepdims=0),
        helper.make_node("Greater", ["switch/occupancy", "switch/dense_above"], ["switch/use_dense"],
                         name="switch/use_dense"),
        helper.make_node("If", ["switch/use_dense"], ["switch/restored"], name="switch/body",
                         then_branch=_branch(dense, "dense"), else_branch=_branch(pruned, "pruned")),
    ]
    dense_above_value = helper.make_tensor("switch/dense_above", TensorProto.FLOAT, [], [dense_above])
    run_body = helper.make_graph(choose, "run_body", [], [helper.make_tensor_value_info("switch/restored",
                                 TensorProto.FLOAT, None)], initializer=[dense_above_value])
    skip_body = helper.make_graph(
        [helper.make_node("Identity", [INPUT_IMAGE], ["skip/restored"], name="skip/restored")],
        "skip_body", [], [helper.make_tensor_value_info("skip/restored", TensorProto.FLOAT, None)],
    )
    half = helper.make_tensor("any_blur/half", TensorProto.FLOAT, [], [0.5])
    initializers.append(half)
    nodes += [
        helper.make_node("ReduceMax", [OUTPUT_MASK], ["any_blur/max"], name="any_blur/max", keepdims=0),
        helper.make_node("Greater", ["any_blur/max", "any_blur/half"], ["any_blur"], name="any_blur"),
        helper.make_node("If", ["any_blur"], [OUTPUT_RESTORED], name="body", then_branch=run_body,
                         else_branch=skip_body),
    ]
    outputs = [_image_info(OUTPUT_RESTORED, channels), _image_info(OUTPUT_MASK, 1)]
    graph = helper.make_graph(nodes, "m2ae_pruned", inputs, outputs, initializer=initializers)
    parts = [p for p in (head, pruned, dense) if p is not None]
    model = helper.make_model(graph, opset_imports=_opsets(*parts))
    model.ir_version = max(p.ir_version for p in parts)
    return model
