"""ONNX side of MaskedGather / MaskedScatter: node builders and the portable lowering.

``make_gather_node`` / ``make_scatter_node`` build the ``m2ae``-domain nodes of the
plugin contract (DESIGN.md section 3). ``lower_to_standard_ops`` rewrites every such
node into standard ONNX ops (opset >= 17), giving the ``portable`` graph that runs on
any ONNX Runtime and on TensorRT without the plugin. All shapes are read at run time
(``Shape``), so dynamic N, H, W and a data-dependent K (from ``NonZero``) survive, and
the same subgraph serves float32 and float16 (constants follow the data through
``CastLike``).
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import AttributeProto, TensorProto, helper

from m2ae.trt_plugins import DOMAIN, GATHER_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION, SCATTER_OP

MIN_OPSET = 17


def make_gather_node(dense: str, tokens: str, table: str, output: str, name: str | None = None) -> onnx.NodeProto:
    """``MaskedGather(dense [N,C,H,W], tokens [C,Kt], table [T,K] int32) -> output [T*C, K]``."""
    return helper.make_node(
        GATHER_OP,
        [dense, tokens, table],
        [output],
        name=name,
        domain=DOMAIN,
        plugin_version=PLUGIN_VERSION,
        plugin_namespace=PLUGIN_NAMESPACE,
    )


def make_scatter_node(
    base: str, values: str, index: str, output: str, accumulate: int = 0, name: str | None = None
) -> onnx.NodeProto:
    """``MaskedScatter(base [N,C,H,W], values [C,K], index [K] int32) -> output [N,C,H,W]``."""
    if accumulate not in (0, 1):
        raise ValueError(f"accumulate must be 0 or 1, got {accumulate}")
    return helper.make_node(
        SCATTER_OP,
        [base, values, index],
        [output],
        name=name,
        domain=DOMAIN,
        accumulate=accumulate,
        plugin_version=PLUGIN_VERSION,
        plugin_namespace=PLUGIN_NAMESPACE,
    )


def check_plugin_version(node: onnx.NodeProto) -> None:
    """Raise ``ValueError`` if an ``m2ae`` node asks for a plugin version other than ours."""
    for attr in node.attribute:
        if attr.name == "plugin_version" and attr.s != PLUGIN_VERSION.encode():
            raise ValueError(
                f"{node.op_type} node {node.name!r} asks for plugin_version {attr.s.decode()!r}; "
                f"this toolkit implements {PLUGIN_VERSION!r}"
            )


class _Builder:
    """Emits the nodes of one lowered op with names that cannot clash with the graph's."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: object) -> str:
        if output is None:
            self._count += 1
            output = f"{self.prefix}/{op_type}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"{output}_node", **attrs))
        return output

    def ints(self, values: list[int]) -> str:
        return self.op("Constant", [], value_ints=values)

    def int_scalar(self, value: int) -> str:
        return self.op("Constant", [], value_int=value)

    def dim(self, shape_of: str, start: int, end: int) -> str:
        return self.op("Shape", [shape_of], start=start, end=end)


def _pixel_offsets(b: _Builder, data: str) -> tuple[str, str, str]:
    """Shape pieces of ``data [N,C,H,W]``: ``C`` [1], ``HW`` [1] and ``C*HW`` [1], int64."""
    c = b.dim(data, 1, 2)
    hw = b.op("Mul", [b.dim(data, 2, 3), b.dim(data, 3, 4)])
    return c, hw, b.op("Mul", [c, hw])


def _dense_offsets(b: _Builder, pixel: str, hw: str, chw: str) -> str:
    """Offset in the flat dense map of channel 0 at linear pixel ``p = n*HW + q``: ``n*C*HW + q``."""
    n = b.op("Div", [pixel, hw])
    q = b.op("Sub", [pixel, b.op("Mul", [n, hw])])
    return b.op("Add", [b.op("Mul", [n, chw]), q])


def _channel_stride(b: _Builder, c: str, stride: str) -> str:
    """``arange(C) * stride`` as a [C, 1] column, int64."""
    one = b.int_scalar(1)
    zero = b.int_scalar(0)
    arange = b.op("Range", [zero, b.op("Squeeze", [c]), one])
    return b.op("Unsqueeze", [b.op("Mul", [arange, stride]), b.ints([1])])


def _lower_gather(node: onnx.NodeProto, b: _Builder) -> None:
    """One ``GatherElements`` from a channel-major source ``[tokens | 0 | dense pixels]``.

    Column ``Kt - 1 - v`` of that source is the zero column for ``v == -1`` and dense
    pixel ``-2 - v`` for ``v <= -2``, so one ``Where`` on the small [T, K] table picks
    every column. Cost, with ``E = T*C*K`` output elements: one copy of the dense map
    into the source (plus its [N,C]->[C,N] transpose, free for N = 1) and of the
    tokens, an int64 index ``Expand`` of E, a ``GatherElements`` of E and a
    ``Transpose`` of E from [C, T, K] to [T, C, K]. This beats gathering the two sources
    apart and blending them: ONNX Runtime's scalar ``Gather`` and broadcast ``Where``
    over E elements measured 5-8x slower than ``GatherElements`` on the CPU.
    """
    dense, tokens, table = node.input
    c = b.dim(dense, 1, 2)
    pixels = _channel_major_pixels(b, dense, c)
    zero_col = b.op("ConstantOfShape", [b.op("Concat", [c, b.ints([1])], axis=0)])
    source = b.op("Concat", [tokens, b.op("CastLike", [zero_col, tokens]), pixels], axis=1)

    kt = b.dim(tokens, 1, 2)
    v = b.op("Reshape", [b.op("Cast", [table], to=TensorProto.INT64), b.ints([-1])])  # [T*K]
    from_token = b.op("GreaterOrEqual", [v, b.int_scalar(0)])
    column = b.op("Where", [from_token, v, b.op("Sub", [b.op("Sub", [kt, b.ints([1])]), v])])
    index = b.op("Expand", [b.op("Unsqueeze", [column, b.ints([0])]), b.op("Concat", [c, b.ints([1])], axis=0)])
    gathered = b.op("GatherElements", [source, index], axis=1)  # [C, T*K]
    _taps_to_rows(node, b, gathered, c)


def _channel_major_pixels(b: _Builder, dense: str, c: str) -> str:
    """``dense [N,C,H,W]`` as ``[C, N*H*W]`` (a transpose copy only when N > 1)."""
    channel_major = b.op("Transpose", [b.op("Reshape", [dense, b.ints([0, 0, -1])])], perm=[1, 0, 2])
    return b.op("Reshape", [channel_major, b.op("Concat", [c, b.ints([-1])], axis=0)])


def _lower_pick(node: onnx.NodeProto, b: _Builder) -> None:
    """A gather whose tokens are a constant with no column (a pick from the dense map).

    No ``[tokens | 0 | pixels]`` source is assembled, so the dense map is not copied:
    one ``GatherElements`` straight from it (clamped index), then a multiply that zeroes
    the entries whose table value is -1 (outside the image).
    """
    dense, _, table = node.input
    c = b.dim(dense, 1, 2)
    v = b.op("Reshape", [b.op("Cast", [table], to=TensorProto.INT64), b.ints([-1])])  # [T*K]
    column = b.op("Max", [b.op("Sub", [b.ints([-2]), v]), b.ints([0])])
    index = b.op("Expand", [b.op("Unsqueeze", [column, b.ints([0])]), b.op("Concat", [c, b.ints([1])], axis=0)])
    gathered = b.op("GatherElements", [_channel_major_pixels(b, dense, c), index], axis=1)  # [C, T*K]
    inside = b.op("Cast", [b.op("Not", [b.op("Equal", [v, b.ints([-1])])])], to=TensorProto.FLOAT)
    gathered = b.op("Mul", [gathered, b.op("CastLike", [inside, gathered])])
    _taps_to_rows(node, b, gathered, c)


def _taps_to_rows(node: onnx.NodeProto, b: _Builder, gathered: str, c: str) -> None:
    """``[C, T*K]`` -> the op's ``[T*C, K]`` output."""
    table = node.input[2]
    t, k = b.dim(table, 0, 1), b.dim(table, 1, 2)
    # Explicit sizes (not -1) and allowzero: K may be 0, which Reshape must keep as 0.
    by_tap = b.op("Reshape", [gathered, b.op("Concat", [c, t, k], axis=0)], allowzero=1)
    tap_major = b.op("Transpose", [by_tap], perm=[1, 0, 2])
    out_shape = b.op("Concat", [b.op("Mul", [t, c]), k], axis=0)
    b.op("Reshape", [tap_major, out_shape], output=node.output[0], allowzero=1)


def _lower_scatter(node: onnx.NodeProto, b: _Builder) -> None:
    """One ``ScatterND`` of C*K scalars into the flat base map.

    Cost: an int64 index tensor of C*K elements, ScatterND's copy of the base (the
    output is a full map, so that copy is the floor) and C*K element writes; for
    ``accumulate=1`` one more gather of C*K base elements and an Add. No transposes.
    The add is done before the scatter instead of with ScatterND's ``reduction="add"``
    because TensorRT's ScatterND has no reductions, and this graph is its fallback.
    """
    base, values, index = node.input
    accumulate = next((a.i for a in node.attribute if a.name == "accumulate"), 0)
    c, hw, chw = _pixel_offsets(b, base)
    pixel = b.op("Unsqueeze", [b.op("Cast", [index], to=TensorProto.INT64), b.ints([0])])  # [1,K]
    flat_idx = b.op("Add", [_channel_stride(b, c, hw), _dense_offsets(b, pixel, hw, chw)])  # [C,K]
    flat_base = b.op("Reshape", [base, b.ints([-1])])
    updates = values
    if accumulate:
        # GatherElements on flat 1-D data: ONNX Runtime's scalar Gather is several times slower.
        current = b.op("GatherElements", [flat_base, b.op("Reshape", [flat_idx, b.ints([-1])])], axis=0)
        current = b.op("Reshape", [current, b.op("Shape", [values])], allowzero=1)
        updates = b.op("Add", [current, values])
    nd_idx = b.op("Unsqueeze", [flat_idx, b.ints([2])])  # [C,K,1]
    scattered = b.op("ScatterND", [flat_base, nd_idx, updates])
    b.op("Reshape", [scattered, b.op("Shape", [base])], output=node.output[0], allowzero=1)


_LOWERINGS = {GATHER_OP: _lower_gather, SCATTER_OP: _lower_scatter}


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == AttributeProto.GRAPHS:
            yield from attr.graphs


def _empty_constants(graph: onnx.GraphProto) -> set[str]:
    """Names of the graph's constant tensors that hold no element (e.g. [C, 0] tokens)."""
    empty = {init.name for init in graph.initializer if 0 in init.dims}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == AttributeProto.TENSOR:
            if 0 in node.attribute[0].t.dims:
                empty.add(node.output[0])
    return empty


def _lower_graph(graph: onnx.GraphProto, counter: list[int]) -> None:
    new_nodes: list[onnx.NodeProto] = []
    empty = _empty_constants(graph)
    for node in graph.node:
        for sub in _subgraphs(node):
            _lower_graph(sub, counter)
        if node.domain != DOMAIN:
            new_nodes.append(node)
            continue
        lowering = _LOWERINGS.get(node.op_type)
        if node.op_type == GATHER_OP and node.input[1] in empty:
            lowering = _lower_pick
        if lowering is None:
            raise ValueError(f"unknown {DOMAIN} op {node.op_type!r} in node {node.name!r}")
        check_plugin_version(node)
        counter[0] += 1
        builder = _Builder(f"_m2ae_lowered_{counter[0]}_{node.name or node.op_type}")
        lowering(node, builder)
        new_nodes.extend(builder.nodes)
    del graph.node[:]
    graph.node.extend(new_nodes)


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def lower_to_standard_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with every ``m2ae`` node replaced by standard ONNX ops.

    Subgraphs (If/Loop bodies) are lowered too; the ``m2ae`` opset import is dropped.
    The lowering needs default-domain opset >= 17 and raises ``ValueError`` otherwise.
    """
    opset = _default_opset(model)
    if opset < MIN_OPSET:
        raise ValueError(f"lowering needs ONNX opset >= {MIN_OPSET}, the model imports opset {opset}")
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    _lower_graph(lowered.graph, [0])
    kept = [o for o in lowered.opset_import if o.domain != DOMAIN]
    del lowered.opset_import[:]
    lowered.opset_import.extend(kept)
    return lowered


def has_custom_ops(model: onnx.ModelProto) -> bool:
    """Whether any node of ``model`` (subgraphs included) is in the ``m2ae`` domain."""

    def visit(graph: onnx.GraphProto) -> bool:
        return any(n.domain == DOMAIN or any(visit(s) for s in _subgraphs(n)) for n in graph.node)

    return visit(model.graph)
