"""Multiply-accumulates of an ONNX graph, counted from the shapes it actually runs with.

The pruned graphs' costs depend on the data: their GEMMs have K = the number of masked
pixels, known only at run time (NonZero). So ``count_macs`` runs the model once in ONNX
Runtime (``m2ae`` custom ops registered) with the input and output of every Conv,
ConvTranspose, MatMul and Gemm node exposed as extra graph outputs, and computes from
those runtime shapes:

* Conv:          N * Hout * Wout * Cout * (Cin / groups) * kh * kw  (= |output| * |W[0]|)
* ConvTranspose: N * Hin * Win * Cin * (Cout / groups) * kh * kw    (= |input| * |W[0]|)
* MatMul:        prod(batch) * M * K * N                            (= |output| * K)
* Gemm:          M * K * N                                          (= |output| * K)

Only these four ops are counted (bias adds, activations, pooling, resizes, the gathers
and scatters are memory traffic, not MACs). ``If`` nodes are first replaced by the
branch they take on these feeds (``take_branches``), so a pruned graph counts the body
it actually runs: none for an all-sharp frame, the tiled or the dense body otherwise.
One MAC is one multiply plus one add; FLOPs are about 2 * MACs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def count_macs(
    model: str | Path | onnx.ModelProto, feeds: Mapping[str, np.ndarray], threads: int | None = None
) -> int:
    """MACs of one run of ``model`` on ``feeds`` (see the module docstring for what counts)."""
    from m2ae.trt_plugins.ort_ops import make_session

    source = onnx.load(model) if not isinstance(model, onnx.ModelProto) else model
    probed = take_branches(source, feeds, threads)
    graph = probed.graph
    known = {init.name: tuple(init.dims) for init in graph.initializer}
    known |= {name: tuple(np.shape(value)) for name, value in feeds.items()}
    constants = {
        node.output[0]: tuple(numpy_helper.to_array(node.attribute[0].t).shape)
        for node in graph.node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
    }
    known |= constants
    counted = [node for node in graph.node if node.op_type in COUNTED_OPS and node.domain in ("", "ai.onnx")]
    if not counted:
        return 0
    probe = []
    for node in counted:
        for name in (*node.input[:2], node.output[0]):
            if name and name not in known and name not in probe:
                probe.append(name)
    existing = {output.name for output in graph.output}
    # Untyped outputs: ONNX Runtime infers their type, so no shape inference through custom ops is needed.
    graph.output.extend(onnx.ValueInfoProto(name=name) for name in probe if name not in existing)
    session = make_session(probed, threads=threads)
    values = session.run(probe, dict(feeds)) if probe else []
    shapes = dict(known)
    shapes.update({name: tuple(np.shape(value)) for name, value in zip(probe, values)})
    return sum(node_macs(node, shapes) for node in counted)


def take_branches(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], threads: int | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` with every top-level ``If`` replaced by the branch it takes on ``feeds``.

    Branch nodes read the enclosing graph's tensors by name, so a taken branch inlines
    as it is; its output is renamed to the ``If``'s. Nested ``If`` nodes surface at the
    top level once their parent is inlined and are resolved in the next round.
    """
    from m2ae.trt_plugins.ort_ops import make_session

    resolved = onnx.ModelProto()
    resolved.CopyFrom(model)
    graph = resolved.graph
    while True:
        conditionals = [node for node in graph.node if node.op_type == "If"]
        if not conditionals:
            return resolved
        probe = onnx.ModelProto()
        probe.CopyFrom(resolved)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.ValueInfoProto(name=node.input[0]) for node in conditionals)
        taken = make_session(probe, threads=threads).run(None, dict(feeds))
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            if node.op_type != "If":
                nodes.append(node)
                continue
            branch_name = "then_branch" if bool(np.asarray(taken[conditionals.index(node)]).reshape(-1)[0]) else "else_branch"
            branch = next(a.g for a in node.attribute if a.name == branch_name)
            graph.initializer.extend(branch.initializer)
            nodes.extend(branch.node)
            nodes.extend(
                onnx.helper.make_node("Identity", [inner.name], [outer], name=f"{node.name}/{branch_name}/{outer}")
                for inner, outer in zip(branch.output, node.output)
            )
        del graph.node[:]
        graph.node.extend(nodes)


def node_macs(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """MACs of one counted node given the runtime shapes of its tensors."""
    first, second, out = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
    if node.op_type == "Conv":
        return _prod(out) * _prod(second[1:])
    if node.op_type == "ConvTranspose":
        return _prod(first) * _prod(second[1:])
    if node.op_type == "MatMul":
        return _prod(out) * first[-1]
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        return _prod(out) * (first[0] if trans_a else first[1])
    raise ValueError(f"node_macs: {node.op_type} is not one of {', '.join(COUNTED_OPS)}")


def _prod(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1
