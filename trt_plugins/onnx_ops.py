"""ONNX side of MaskedGather / MaskedScatter: node builders and the portable lowering.

``make_gather_node`` / ``make_scatter_node`` build the ``m2ae``-domain nodes of the
plugin contract (docs/design.md section 3). ``lower_to_standard_ops`` rewrites every such
node into standard ONNX ops (opset >= 17), giving the ``portable`` graph that runs on
any ONNX Runtime and on TensorRT without the plugin. All shapes are read at run time
(``Shape``), so dynamic N, H, W and a data-dependent tile count B (from ``NonZero``) survive, and
the same subgraph serves float32 and float16 (constants follow the data through
``CastLike``).
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import AttributeProto, TensorProto, helper

from m2ae.trt_plugins import DOMAIN, GATHER_OP, PLUGIN_ATTRIBUTES, PLUGIN_VERSION, SCATTER_OP
from m2ae.trt_plugins.contract import check_tile_halo

MIN_OPSET = 17


def make_gather_node(dense: str, tiles: str, output: str, tile: int, halo: int, name: str | None = None) -> onnx.NodeProto:
    """``MaskedGather(dense [N,C,H,W], tiles [B] int32; tile, halo) -> output [B, C, S, S]``, S = tile + 2*halo."""
    check_tile_halo(tile, halo)
    return helper.make_node(GATHER_OP, [dense, tiles], [output], name=name, domain=DOMAIN, tile=tile, halo=halo,
                            **PLUGIN_ATTRIBUTES)


def make_scatter_node(base: str, values: str, tiles: str, output: str, name: str | None = None) -> onnx.NodeProto:
    """``MaskedScatter(base [N,C,H,W], values [B,C,tile,tile], tiles [B] int32) -> output [N,C,H,W]``."""
    return helper.make_node(SCATTER_OP, [base, values, tiles], [output], name=name, domain=DOMAIN, **PLUGIN_ATTRIBUTES)


def gather_attributes(node: onnx.NodeProto) -> tuple[int, int]:
    """(tile, halo) of a MaskedGather node; ``ValueError`` when missing or out of range."""
    attrs = {a.name: a.i for a in node.attribute if a.name in ("tile", "halo")}
    if "tile" not in attrs:
        raise ValueError(f"{GATHER_OP} node {node.name!r} has no 'tile' attribute")
    tile, halo = attrs["tile"], attrs.get("halo", 0)
    try:
        check_tile_halo(tile, halo)
    except ValueError as exc:
        raise ValueError(f"{GATHER_OP} node {node.name!r}: {exc}") from None
    return tile, halo


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


def _dims(b: _Builder, data: str) -> tuple[str, str, str, str]:
    """``N, C, H, W`` of ``data [N,C,H,W]``, each an int64 [1]."""
    return tuple(b.dim(data, i, i + 1) for i in range(4))  # type: ignore[return-value]


def _tile_origins(b: _Builder, tiles: str, height: str, width: str, tile: str) -> tuple[str, str, str]:
    """(n, y0, x0) of each tile id as int64 [B]: image, top row and left column of its cell."""
    one = b.ints([1])
    rows = b.op("Div", [b.op("Sub", [b.op("Add", [height, tile]), one]), tile])
    cols = b.op("Div", [b.op("Sub", [b.op("Add", [width, tile]), one]), tile])
    ids = b.op("Cast", [tiles], to=TensorProto.INT64)
    per_image = b.op("Mul", [rows, cols])
    n = b.op("Div", [ids, per_image])
    cell = b.op("Sub", [ids, b.op("Mul", [n, per_image])])
    ty = b.op("Div", [cell, cols])
    tx = b.op("Sub", [cell, b.op("Mul", [ty, cols])])
    return n, b.op("Mul", [ty, tile]), b.op("Mul", [tx, tile])


def _axis_positions(b: _Builder, start: str, span: str, limit: str) -> tuple[str, str, str]:
    """For starts [B] and ``span`` offsets [S]: (positions [B,S], clamped into [0, limit), inside [B,S])."""
    pos = b.op("Add", [b.op("Unsqueeze", [start, b.ints([1])]), span])
    inside = b.op("And", [b.op("GreaterOrEqual", [pos, b.ints([0])]), b.op("Less", [pos, limit])])
    clamped = b.op("Min", [b.op("Max", [pos, b.ints([0])]), b.op("Sub", [limit, b.ints([1])])])
    return pos, clamped, inside


def _pixel_rows(b: _Builder, dense: str, c: str) -> str:
    """``dense [N,C,H,W]`` as pixel rows ``[N*H*W, C]``: a pixel's channels lie contiguous."""
    nhwc = b.op("Transpose", [dense], perm=[0, 2, 3, 1])
    return b.op("Reshape", [nhwc, b.op("Concat", [b.ints([-1]), c], axis=0)])


def _pixel_index(b: _Builder, n: str, rows_y: str, cols_x: str, height: str, width: str) -> str:
    """Linear pixel ``n*H*W + y*W + x`` of every (tile, y, x): [B, S, S] from [B], [B,S], [B,S]."""
    image_base = b.op("Mul", [n, b.op("Mul", [height, width])])
    row = b.op("Add", [b.op("Unsqueeze", [image_base, b.ints([1])]), b.op("Mul", [rows_y, width])])
    return b.op("Add", [b.op("Unsqueeze", [row, b.ints([2])]), b.op("Unsqueeze", [cols_x, b.ints([1])])])


def _outer_and(b: _Builder, inside_y: str, inside_x: str) -> str:
    """[B,S] and [B,S] -> [B,S,S]: both coordinates inside the image."""
    return b.op("And", [b.op("Unsqueeze", [inside_y, b.ints([2])]), b.op("Unsqueeze", [inside_x, b.ints([1])])])


def _lower_gather(node: onnx.NodeProto, b: _Builder) -> None:
    """One row ``Gather`` from the map's pixel rows, then a transpose of the tiles.

    The map is transposed once to pixel rows ``[N*H*W, C]`` (ONNX Runtime's common
    subexpression elimination shares that transpose with the stage's scatter, which
    reads the same map), so each gathered pixel moves its C channels as one contiguous
    row rather than C scattered elements. Positions beyond the image read a clamped
    pixel and are then set to 0 with a ``Where`` over the transposed tiles.
    """
    dense, tiles = node.input
    tile, halo = gather_attributes(node)
    _, c, height, width = _dims(b, dense)
    size = tile + 2 * halo
    n, y0, x0 = _tile_origins(b, tiles, height, width, b.ints([tile]))
    span = b.op("Constant", [], value=helper.make_tensor("span", TensorProto.INT64, [size],
                                                           list(range(-halo, tile + halo))))
    _, ys, inside_y = _axis_positions(b, y0, span, height)
    _, xs, inside_x = _axis_positions(b, x0, span, width)
    index = _pixel_index(b, n, ys, xs, height, width)
    gathered = b.op("Gather", [_pixel_rows(b, dense, c), index], axis=0)  # [B, S, S, C]
    # Tile-major [B, C, S*S]: the Where below then broadcasts over S*S contiguous pixels
    # (over C alone on [B, S, S, C]: 10x slower for C = 3, 2.5x for C = 16 on ONNX
    # Runtime's CPU). The Reshape also keeps ONNX Runtime's transpose optimizer from
    # moving the Transpose past the Where, back to where it was slow. Sizes are spelt
    # out, no -1, since B may be 0.
    planes = b.op("Reshape", [b.op("Transpose", [gathered], perm=[0, 3, 1, 2]), b.ints([0, 0, size * size])])
    inside = b.op("Reshape", [_outer_and(b, inside_y, inside_x), b.ints([0, 1, size * size])])  # [B, 1, S*S]
    # A Where, not a multiply by 0: exact for negative and non-finite pixels too (a
    # multiply measured about 30% faster on ONNX Runtime's CPU, but gives -0 and NaN).
    zero = b.op("CastLike", [b.op("Constant", [], value_float=0.0), dense])
    b.op("Reshape", [b.op("Where", [inside, planes, zero]), b.ints([0, 0, size, size])],
         output=node.output[0])


def _lower_scatter(node: onnx.NodeProto, b: _Builder) -> None:
    """One row ``ScatterND`` into the map's pixel rows, then a transpose back.

    Tile pixels beyond the image (partial tiles at the far edges) are dropped first
    with a ``NonZero`` over the [B*t*t] positions, since ScatterND has no bounds mode.
    """
    base, values, tiles = node.input
    _, c, height, width = _dims(b, base)
    tile = b.dim(values, 3, 4)
    n, y0, x0 = _tile_origins(b, tiles, height, width, tile)
    span = b.op("Range", [b.int_scalar(0), b.op("Squeeze", [tile]), b.int_scalar(1)])
    ys, _, inside_y = _axis_positions(b, y0, span, height)
    xs, _, inside_x = _axis_positions(b, x0, span, width)
    index = b.op("Reshape", [_pixel_index(b, n, ys, xs, height, width), b.ints([-1])])
    keep = b.op("Reshape", [b.op("NonZero", [b.op("Reshape", [_outer_and(b, inside_y, inside_x), b.ints([-1])])]),
                            b.ints([-1])])
    updates = b.op("Reshape", [b.op("Transpose", [values], perm=[0, 2, 3, 1]),
                               b.op("Concat", [b.ints([-1]), c], axis=0)])
    scattered = b.op("ScatterND", [_pixel_rows(b, base, c),
                                   b.op("Unsqueeze", [b.op("Gather", [index, keep]), b.ints([1])]),
                                   b.op("Gather", [updates, keep], axis=0)])
    nhwc_shape = b.op("Concat", [b.dim(base, 0, 1), height, width, c], axis=0)
    b.op("Transpose", [b.op("Reshape", [scattered, nhwc_shape])], output=node.output[0], perm=[0, 3, 1, 2])


_LOWERINGS = {GATHER_OP: _lower_gather, SCATTER_OP: _lower_scatter}


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == AttributeProto.GRAPHS:
            yield from attr.graphs


def all_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``graph`` and every subgraph below it (``If`` branches, ``Loop`` bodies), depth first."""
    return [graph] + [g for node in graph.node for sub in subgraphs(node) for g in all_graphs(sub)]


def _lower_graph(graph: onnx.GraphProto, counter: list[int]) -> None:
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for sub in subgraphs(node):
            _lower_graph(sub, counter)
        if node.domain != DOMAIN:
            new_nodes.append(node)
            continue
        lowering = _LOWERINGS.get(node.op_type)
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

    return any(node.domain == DOMAIN for graph in all_graphs(model.graph) for node in graph.node)
