"""``m2ae check``: an ONNX model against what one TensorRT version's ONNX parser and
builder accept and run well, without TensorRT.

``check_onnx`` walks every graph (``If`` branches included) and returns one ``Finding``
per problem: ``error`` (the parse or the build fails, or the engine computes something
else), ``warning`` (it builds, but slowly, in the wrong precision, or not as the graph
says) and ``info`` (worth knowing). The rules, their data and their sources are in
``m2ae.export.trt_rules``; docs/design.md section 5 lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from m2ae.errors import UserError
from m2ae.export import trt_rules as rules
from m2ae.trt_plugins import DOMAIN, PLUGIN_NAMESPACE, PLUGIN_VERSION
from m2ae.trt_plugins.onnx_ops import all_graphs, subgraphs

SEVERITIES = ("error", "warning", "info")
_FLOATS = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})
_QUANTIZED = frozenset({TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4,
                        TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT4E2M1})
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Finding:
    severity: str  # one of SEVERITIES
    node: str  # the node's name (an initializer's name for initializers, "model" for the model)
    op_type: str
    problem: str
    fix: str
    rule: str  # key of trt_rules.RULES: what the finding rests on

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.node} ({self.op_type}): {self.problem} — {self.fix}"


def _dtype(code: int) -> str:
    return TensorProto.DataType.Name(code)


def _attrs(node: onnx.NodeProto) -> dict[str, AttributeProto]:
    return {a.name: a for a in node.attribute}


def _node_name(node: onnx.NodeProto) -> str:
    return node.name or f"<unnamed {node.op_type}>"


# ---------------------------------------------------------------- what the graph holds


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    """A Constant node's value as a tensor (the parser imports it as weights)."""
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = helper.get_attribute_value(attr)
            dtype = np.float32 if attr.name.startswith("value_float") else np.int64
            return numpy_helper.from_array(np.asarray(value, dtype=dtype))
    return None


def _infer_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor ONNX shape inference can type, the m2ae ops included.

    Inference cannot see through a custom op; an m2ae op's output has its first input's
    type (docs/design.md section 3), so those are declared and inference runs again, until
    nothing new is typed.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    while True:
        try:
            work = onnx.shape_inference.infer_shapes(work, strict_mode=False)
        except Exception:  # a graph inference cannot read: keep the types it declares
            pass
        types = _declared_types(work)
        added = False
        for graph in all_graphs(work.graph):
            for node in graph.node:
                if node.domain != DOMAIN or not node.input or node.input[0] not in types:
                    continue
                for out in node.output:
                    if out and out not in types:
                        graph.value_info.append(helper.make_tensor_value_info(out, types[node.input[0]], None))
                        types[out] = types[node.input[0]]
                        added = True
        if not added:
            return types


def _declared_types(model: onnx.ModelProto) -> dict[str, int]:
    types: dict[str, int] = {}
    for graph in all_graphs(model.graph):
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if value.type.tensor_type.elem_type:
                types[value.name] = value.type.tensor_type.elem_type
        for init in graph.initializer:
            types[init.name] = init.data_type
        for node in graph.node:
            if node.op_type == "Constant" and (value := _constant_value(node)) is not None:
                types[node.output[0]] = value.data_type
    return types


@dataclass
class _Model:
    """What the rules look up: types, constants, producers and readers, over all graphs."""

    model: onnx.ModelProto
    version: rules.TrtVersion
    types: dict[str, int] = field(init=False, default_factory=dict)
    constants: dict[str, TensorProto] = field(init=False, default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(init=False, default_factory=dict)
    readers: dict[str, list[onnx.NodeProto]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.types = _infer_types(self.model)
        for graph in all_graphs(self.model.graph):
            self.constants.update((init.name, init) for init in graph.initializer)
            for node in graph.node:
                self.producer.update((out, node) for out in node.output)
                for name in _reads(node):
                    self.readers.setdefault(name, []).append(node)
                if node.op_type == "Constant" and (value := _constant_value(node)) is not None:
                    self.constants[node.output[0]] = value

    def nodes(self) -> Iterator[onnx.NodeProto]:
        for graph in all_graphs(self.model.graph):
            yield from graph.node

    def type_of(self, name: str) -> int | None:
        return self.types.get(name) if name else None

    def array(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


def _reads(node: onnx.NodeProto) -> Iterator[str]:
    """The tensors a node reads, its subgraphs' reads of outer tensors included."""
    yield from (name for name in node.input if name)
    for graph in subgraphs(node):
        inner = set()
        for sub in all_graphs(graph):
            inner |= {value.name for value in sub.input} | {init.name for init in sub.initializer}
            inner |= {out for n in sub.node for out in n.output}
        for sub in all_graphs(graph):
            for n in sub.node:
                yield from (name for name in n.input if name and name not in inner)


# ---------------------------------------------------------------- the rules

Check = Callable[[_Model], Iterator[Finding]]


def _finding(severity: str, node: onnx.NodeProto, problem: str, fix: str, rule: str) -> Finding:
    return Finding(severity, _node_name(node), node.op_type, problem, fix, rule)


def _version_text(version: rules.TrtVersion) -> str:
    return next(text for text, v in rules.TENSORRT_VERSIONS.items() if v == version)


def _check_opset(m: _Model) -> Iterator[Finding]:
    opset = next((o.version for o in m.model.opset_import if o.domain in _STANDARD_DOMAINS), None)
    highest = rules.MAX_OPSET.get(m.version)
    if opset is None:
        return
    if opset < rules.MIN_OPSET or (highest is not None and opset > highest):
        covered = f"{rules.MIN_OPSET} to {highest}" if highest is not None else f"{rules.MIN_OPSET} and newer"
        yield Finding(
            "warning", "model", "opset_import",
            f"default-domain opset {opset}; TensorRT {_version_text(m.version)} parses opsets {covered}",
            "export with an opset in that range", "opset",
        )


def _check_ops(m: _Model) -> Iterator[Finding]:
    version_text = _version_text(m.version)
    for node in m.nodes():
        if node.domain == DOMAIN:
            continue  # _check_plugins
        if node.domain not in _STANDARD_DOMAINS:
            yield _finding("warning", node, f"op of domain {node.domain!r}: TensorRT imports it only as a plugin named "
                           f"{node.op_type!r} (attributes plugin_version, plugin_namespace)",
                           "register such a plugin before parsing, or rewrite the node in standard ops", "custom-op")
            continue
        op = node.op_type
        since = rules.OPS_SINCE.get(op)
        if op in rules.UNSUPPORTED_OPS:
            yield _finding("error", node, "no TensorRT version imports this op (the parser then looks for a plugin "
                           "of that name and fails)", "rewrite it in supported ops", "op-unsupported")
        elif since is not None and m.version < since:
            yield _finding("error", node, f"imported from TensorRT {since[0]}.{since[1]} on, not by {version_text}",
                           f"rewrite it in older ops, or build with TensorRT {since[0]}.{since[1]} or newer",
                           "op-version")
        elif since is None and op not in rules.SUPPORTED_OPS:
            yield _finding("info", node, "not in m2ae's rule table", "see onnx-tensorrt's docs/operators.md for "
                           f"TensorRT {version_text}", "op-unknown")
        yield from _check_dtype(m, node)


def _check_dtype(m: _Model, node: onnx.NodeProto) -> Iterator[Finding]:
    op = node.op_type
    if op == "Cast":
        to = _attrs(node).get("to")
        if to is not None and to.i == TensorProto.DOUBLE:
            yield _finding("warning", node, "casts to DOUBLE, which TensorRT computes as FLOAT",
                           "cast to FLOAT", "cast-target")
        elif to is not None and to.i not in rules.CAST_TARGETS:
            yield _finding("error", node, f"casts to {_dtype(to.i)}, which TensorRT's Cast does not produce",
                           "cast to FLOAT, FLOAT16, BFLOAT16, INT32, INT64, UINT8 or BOOL", "cast-target")
        return
    spec = rules.OP_TYPES.get(op)
    if spec is None or len(node.input) <= spec.index:
        return
    dtype = m.type_of(node.input[spec.index])
    allowed = spec.types
    gained = rules.OP_TYPES_FROM.get(op)
    if gained is not None and m.version >= gained[0]:
        allowed = allowed + gained[1]
    if dtype is None or dtype in allowed:
        return
    if dtype == TensorProto.DOUBLE:
        yield _finding("warning", node, "reads DOUBLE, which TensorRT casts down to FLOAT (clamping)",
                       "export in float32", "dtype")
    elif dtype in _QUANTIZED:
        yield _finding("error", node, f"reads {_dtype(dtype)}; TensorRT takes quantized types only through "
                       "DequantizeLinear (and UINT8 only as network I/O)", "dequantize first, or cast", "dtype")
    else:
        names = ", ".join(_dtype(t) for t in allowed)
        yield _finding("error", node, f"reads {_dtype(dtype)}; TensorRT's {op} takes {names}",
                       "cast the input to a supported type", "dtype")


def _is_constant(m: _Model, name: str) -> bool:
    return name in m.constants


def _check_attributes(m: _Model) -> Iterator[Finding]:
    for node in m.nodes():
        if node.domain not in _STANDARD_DOMAINS:
            continue
        attrs = _attrs(node)
        op = node.op_type
        if op in ("MaxPool", "AveragePool"):
            dilations = list(attrs["dilations"].ints) if "dilations" in attrs else []
            if any(d != 1 for d in dilations):
                yield _finding("error", node, f"dilations {dilations}; TensorRT pools without dilation",
                               "use dilations of 1", "attribute")
            if op == "MaxPool" and len([o for o in node.output if o]) > 1:
                yield _finding("error", node, "asks for the Indices output, which TensorRT does not compute",
                               "drop the second output", "attribute")
        elif op == "Resize":
            yield from _check_resize(node, attrs)
        elif op == "ScatterND" and "reduction" in attrs:
            reduction = attrs["reduction"].s.decode()
            if m.version < rules.SCATTER_ND_REDUCTION_NONE_FROM:
                yield _finding("error", node, f"has a reduction attribute ({reduction!r}), which this TensorRT's "
                               "importer refuses even when 'none'", "drop the attribute", "attribute")
            elif reduction != "none":
                yield _finding("error", node, f"reduction {reduction!r}; TensorRT scatters without reduction",
                               "use reduction 'none'", "attribute")
        elif op == "Mod" and not (attrs["fmod"].i if "fmod" in attrs else 0):
            dtype = m.type_of(node.input[0])
            if dtype in _FLOATS:
                yield _finding("error", node, f"fmod=0 on {_dtype(dtype)}: TensorRT's Mod with fmod=0 takes integers",
                               "set fmod=1 for floats", "attribute")
        elif op == "CumSum":
            yield from _check_cumsum(m, node)
        elif op == "If":
            yield from _check_if(node, attrs)
        axes = rules.CONSTANT_AXES.get(op)
        if axes is not None and len(node.input) > axes[0] and node.input[axes[0]]:
            until = axes[1]
            if (until is None or m.version < until) and not _is_constant(m, node.input[axes[0]]):
                fix = "make the axes an initializer or a Constant"
                if until is not None:
                    fix += f", or build with TensorRT {until[0]}.{until[1]} or newer"
                yield _finding("error", node, "axes come from a computed tensor; the parser needs them constant",
                               fix, "constant-axes")


def _check_resize(node: onnx.NodeProto, attrs: dict[str, AttributeProto]) -> Iterator[Finding]:
    mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
    transform = (attrs["coordinate_transformation_mode"].s.decode()
                 if "coordinate_transformation_mode" in attrs else "half_pixel")
    if mode not in rules.RESIZE_MODES:
        yield _finding("error", node, f"mode {mode!r}", f"use one of {', '.join(sorted(rules.RESIZE_MODES))}",
                       "attribute")
    if transform not in rules.RESIZE_TRANSFORMS:
        yield _finding("error", node, f"coordinate_transformation_mode {transform!r}",
                       f"use one of {', '.join(sorted(rules.RESIZE_TRANSFORMS))}", "attribute")
    if "antialias" in attrs and attrs["antialias"].i:
        yield _finding("error", node, "antialias=1, which TensorRT does not implement", "set antialias=0",
                       "attribute")
    if "keep_aspect_ratio_policy" in attrs and attrs["keep_aspect_ratio_policy"].s.decode() != "stretch":
        yield _finding("error", node, "keep_aspect_ratio_policy other than 'stretch'", "resize with 'stretch'",
                       "attribute")


def _check_cumsum(m: _Model, node: onnx.NodeProto) -> Iterator[Finding]:
    if m.version >= rules.CUMSUM_LAYER_FROM:
        return
    if len(node.input) > 1 and not _is_constant(m, node.input[1]):
        yield _finding("error", node, "axis comes from a computed tensor; before 10.8 it must be an initializer",
                       "make the axis a constant", "constant-axes")
    yield _finding("warning", node, f"TensorRT {_version_text(m.version)} builds CumSum as a loop with one "
                   "iteration per element along the axis (a cumulative layer from 10.8 on)",
                   "avoid CumSum in index tables (e.g. NonZero over a mask gives the indices directly)", "slow-cumsum")


def _check_if(node: onnx.NodeProto, attrs: dict[str, AttributeProto]) -> Iterator[Finding]:
    if "then_branch" not in attrs or "else_branch" not in attrs:
        return
    then, other = attrs["then_branch"].g, attrs["else_branch"].g
    if len(then.output) != len(other.output):
        yield _finding("error", node, "the branches have different numbers of outputs",
                       "give both branches the same outputs", "if-branches")
    same = [a.name for a, b in zip(then.output, other.output) if a.name == b.name]
    if same:
        yield _finding("error", node, f"both branches name an output {same[0]!r}",
                       "give the branches' outputs different names (an Identity in one branch)", "if-branches")


def _check_data_dependent(m: _Model) -> Iterator[Finding]:
    for node in m.nodes():
        if node.domain in _STANDARD_DOMAINS and node.op_type in ("NonZero", "NonMaxSuppression"):
            yield _finding("info", node, "output size depends on the data: TensorRT sizes it at run time "
                           "(INonZeroLayer), within the bound it derives from the input shape",
                           "nothing to do; a network output of such a size needs an output allocator",
                           "data-dependent")


# ---------------------------------------------------------------- quantization


def _weight(m: _Model, name: str) -> TensorProto | None:
    """The constant a tensor is built from at parse time, through Q/DQ, Cast and Identity
    (TensorRT takes per-channel scales on tensors "rooted at an IConstantLayer")."""
    while name not in m.constants:
        source = m.producer.get(name)
        if source is None or source.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity"):
            return None
        name = source.input[0]
    return m.constants[name]


def _output_axis(m: _Model, consumer: onnx.NodeProto, index: int) -> int | None:
    """The axis of ``consumer``'s input ``index`` (a weight) that indexes its output channels."""
    op = consumer.op_type
    if op == "Conv" and index == 1:
        return 0
    if op == "ConvTranspose" and index == 1:
        return 1
    if op == "MatMul" and index in (0, 1):
        weight = _weight(m, consumer.input[index])
        if weight is None or len(weight.dims) < 2:
            return None
        # x @ W: W [..., K, N], outputs on the last axis; W @ x: W [..., M, K], on the one before.
        return len(weight.dims) - 1 if index == 1 else len(weight.dims) - 2
    if op == "Gemm" and index in (0, 1):
        flag = _attrs(consumer).get("transB" if index == 1 else "transA")
        transposed = flag is not None and flag.i != 0
        # B is [K, N] ([N, K] transposed), A is [M, K] ([K, M] transposed).
        return (0 if transposed else 1) if index == 1 else (1 if transposed else 0)
    return None


def _check_quantization(m: _Model) -> Iterator[Finding]:
    allowed = rules.at_version(rules.DEQUANTIZE_INPUTS, m.version)
    fp32_layers: list[onnx.NodeProto] = []
    for node in m.nodes():
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.domain not in _STANDARD_DOMAINS:
            continue
        dq = node.op_type == "DequantizeLinear"
        data = m.type_of(node.input[0])
        if dq and data is not None and data not in allowed:
            yield _finding("error", node, f"dequantizes {_dtype(data)}; TensorRT's dequantize layer takes "
                           f"{', '.join(_dtype(t) for t in sorted(allowed))}",
                           "keep biases in float (ONNX Runtime: extra_options QuantizeBias=False)"
                           if data == TensorProto.INT32 else "quantize to INT8", "dq-input")
        zero = node.input[2] if len(node.input) > 2 else ""
        if zero:
            zero_type = m.type_of(zero)
            values = m.array(zero)
            if zero_type == TensorProto.UINT8:
                yield _finding("error", node, "UINT8 zero point: TensorRT quantizes to signed INT8 only",
                               "quantize to INT8 with zero point 0", "zero-point")
            elif values is not None and values.any():
                yield _finding("error", node, "non-zero zero point: TensorRT quantizes symmetrically",
                               "use zero point 0 (symmetric quantization)", "zero-point")
        scale = m.array(node.input[1])
        per_channel = scale is not None and scale.size > 1
        weight = _weight(m, node.input[0])
        if per_channel and weight is None:
            yield _finding("error", node, "per-channel scales on an activation; TensorRT takes them on weights "
                           "(constants) only", "quantize activations per tensor", "per-channel-activation")
        if not dq:
            continue
        axis_attr = _attrs(node).get("axis")
        axis = axis_attr.i if axis_attr is not None else 1
        if weight is not None and axis < 0:
            axis += len(weight.dims)
        for reader in m.readers.get(node.output[0], []):
            index = list(reader.input).index(node.output[0]) if node.output[0] in reader.input else -1
            if reader.op_type in rules.WEIGHTED_OPS:
                if per_channel:
                    want = _output_axis(m, reader, index)
                    if want is not None and want != axis:
                        yield _finding("error", node, f"per-channel scales on axis {axis} of {reader.op_type} "
                                       f"{_node_name(reader)}'s input {index}, not its output-channel axis {want}: "
                                       "scales on a summed axis cannot be factored out of the int8 product",
                                       f"quantize per channel along axis {want}", "weight-axis")
                if scale is not None and scale.dtype == np.float32 and weight is None:
                    fp32_layers.append(reader)
            elif weight is None and reader.op_type != "QuantizeLinear":
                yield _finding("info", node, f"feeds {reader.op_type} {_node_name(reader)}: outside the inputs of "
                               "weighted layers TensorRT may keep the pair as a round trip (a rounding, no int8 "
                               "compute)", "place Q/DQ on the inputs of Conv, ConvTranspose, MatMul, Gemm",
                               "qdq-placement")
    if fp32_layers:
        first = fp32_layers[0]
        yield _finding("warning", first, f"{len(fp32_layers)} int8 layer(s) dequantize to float32 (float32 "
                       "scales): a strongly typed build (every TensorRT 11 build, and m2ae build on 10) runs them "
                       "and the unquantized layers around them in fp32",
                       "quantize an fp16 graph (float16 scales, opset 19 or newer)", "strong-typing")


# ---------------------------------------------------------------- strong typing


def _type_groups(node: onnx.NodeProto, version: int) -> list[list[int]] | None:
    """Input indices that share one type parameter in the op's ONNX schema (None: no schema)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, version, node.domain)
    except onnx.defs.SchemaError:
        return None
    groups: dict[str, list[int]] = {}
    formals = list(schema.inputs)
    for index in range(len(node.input)):
        if not formals:
            break
        formal = formals[min(index, len(formals) - 1)]
        if index >= len(formals) and formal.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
            break
        if formal.type_str in {c.type_param_str for c in schema.type_constraints}:
            groups.setdefault(formal.type_str, []).append(index)
    return list(groups.values())


def _check_mixed_floats(m: _Model) -> Iterator[Finding]:
    opset = next((o.version for o in m.model.opset_import if o.domain in _STANDARD_DOMAINS), 1)
    for node in m.nodes():
        if node.domain in _STANDARD_DOMAINS:
            groups = _type_groups(node, opset)
            if groups is None:
                continue
        elif node.domain == DOMAIN:
            # The m2ae ops compute in their first input's type (docs/design.md section 3).
            groups = [list(range(len(node.input)))]
        else:
            continue
        for group in groups:
            floats = {m.type_of(node.input[i]) for i in group if m.type_of(node.input[i]) in _FLOATS}
            if len(floats) > 1:
                names = " and ".join(sorted(_dtype(t) for t in floats))
                yield _finding("error", node, f"mixes {names} inputs; a strongly typed network does not convert "
                               "between them", "cast the inputs to one float type", "strong-typing")


# ---------------------------------------------------------------- the m2ae plugin


def _check_plugins(m: _Model) -> Iterator[Finding]:
    for node in m.nodes():
        if node.domain == DOMAIN:
            yield from _check_plugin(m, node)


def _check_plugin(m: _Model, node: onnx.NodeProto) -> Iterator[Finding]:
    fields = rules.PLUGIN_FIELDS.get(node.op_type)
    if fields is None:
        yield _finding("error", node, f"the m2ae plugin library has no {node.op_type!r} creator",
                       f"use one of {', '.join(rules.PLUGIN_FIELDS)}", "plugin")
        return
    attrs = _attrs(node)
    parser_defaults = (("plugin_version", PLUGIN_VERSION, "1"), ("plugin_namespace", PLUGIN_NAMESPACE, ""))
    for name, expected, default in parser_defaults:
        attr = attrs.get(name)
        if attr is not None and attr.type != AttributeProto.STRING:
            yield _finding("error", node, f"{name} is not a string", f"set {name}={expected!r}", "plugin")
            continue
        value = attr.s.decode() if attr is not None else None
        if value is None and name == "plugin_namespace" and m.version >= rules.NAMESPACE_FROM_DOMAIN:
            value = node.domain
        if value is None:
            yield _finding("error", node, f"no {name}: the parser looks for {default!r}",
                           f"set {name}={expected!r}", "plugin")
        elif value != expected:
            yield _finding("error", node, f"{name} {value!r}; the m2ae plugin registers {expected!r}",
                           f"set {name}={expected!r} (re-export with this m2ae)", "plugin")
    known = {f.name: f for f in fields}
    for name, attr in attrs.items():
        if name in rules.PARSER_PLUGIN_ATTRIBUTES:
            continue
        spec = known.get(name)
        if spec is None:
            yield _finding("warning", node, f"attribute {name!r} is not a field of the {node.op_type} creator "
                           f"({', '.join(known) or 'it has none'}): the parser drops it",
                           "remove it, or use a plugin version that has it", "plugin")
        elif attr.type != AttributeProto.INT:
            yield _finding("error", node, f"{name} is not one integer; the creator rejects it",
                           f"set {name} as an int attribute", "plugin")
        elif attr.i < spec.minimum or attr.i > np.iinfo(np.int32).max:
            yield _finding("error", node, f"{name}={attr.i} is outside [{spec.minimum}, 2^31-1]",
                           f"set {name} within that range", "plugin")
    for spec in fields:
        if spec.required and spec.name not in attrs:
            yield _finding("error", node, f"no {spec.name!r} attribute, which the creator requires",
                           f"set {spec.name}", "plugin")
    expected_inputs = rules.PLUGIN_INPUTS[node.op_type]
    if len(node.input) != expected_inputs:
        yield _finding("error", node, f"{len(node.input)} inputs; {node.op_type} takes {expected_inputs}",
                       "see docs/design.md section 3", "plugin")
        return
    ids = m.type_of(node.input[-1])
    if ids is not None and ids != TensorProto.INT32:
        yield _finding("error", node, f"tile ids are {_dtype(ids)}; the plugin takes INT32",
                       "cast the ids to INT32", "plugin")
    for name in node.input[:-1]:
        dtype = m.type_of(name)
        if dtype is not None and dtype not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            yield _finding("error", node, f"input {name!r} is {_dtype(dtype)}; the plugin takes FLOAT or FLOAT16",
                           "cast it to FLOAT or FLOAT16", "plugin")


# ---------------------------------------------------------------- zero-size constants


def _check_zero_size(m: _Model) -> Iterator[Finding]:
    for name, tensor in m.constants.items():
        if 0 not in tensor.dims:
            continue
        readers = m.readers.get(name, [])
        plugin = next((r for r in readers if r.domain == DOMAIN), None)
        source = m.producer.get(name)
        where, op = (_node_name(source), source.op_type) if source is not None else (name, "initializer")
        if plugin is not None:
            yield Finding("error", where, op, f"zero-size constant {list(tensor.dims)} read by plugin node "
                          f"{_node_name(plugin)}: the parser reads empty weights as an absent input",
                          "compute the tensor in the graph, or drop the input", "zero-size")
        elif readers:
            yield Finding("warning", where, op, f"zero-size constant {list(tensor.dims)}: the parser reads empty "
                          "weights as an absent input", "avoid empty constants (compute them, or drop the input)",
                          "zero-size")


_CHECKS: tuple[Check, ...] = (
    _check_opset, _check_ops, _check_attributes, _check_data_dependent, _check_quantization, _check_mixed_floats,
    _check_plugins, _check_zero_size,
)


def check_onnx(path_or_model: str | Path | onnx.ModelProto, tensorrt: str = rules.DEFAULT_TENSORRT) -> list[Finding]:
    """Findings for an ONNX model against TensorRT ``tensorrt`` (a key of
    ``trt_rules.TENSORRT_VERSIONS``), errors first. UserError for an unreadable file or an
    unknown version."""
    try:
        version = rules.resolve(tensorrt)
    except ValueError as exc:
        raise UserError(f"--tensorrt: {exc}") from None
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
    else:
        path = Path(path_or_model)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a bad file
            raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    context = _Model(model, version)
    findings = [finding for check in _CHECKS for finding in check(context)]
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def export_report(paths: list[Path], versions: tuple[str, ...] = ("10.3", "11")) -> list[str]:
    """One line per warning or error in ``paths`` for any of ``versions``, each naming the
    versions it holds for (what ``m2ae export`` prints about what it wrote)."""
    lines = []
    for path in paths:
        seen: dict[str, list[str]] = {}
        for version in versions:
            for finding in check_onnx(path, version):
                if finding.severity != "info":
                    seen.setdefault(str(finding), []).append(version)
        lines += [f"{path}: {text} [TensorRT {', '.join(found)}]" for text, found in seen.items()]
    return lines


def check_before_build(path: Path, tensorrt_version: str) -> list[Finding]:
    """Check ``path`` against the rules of an installed TensorRT (``tensorrt.__version__``):
    UserError naming the errors if there are any, else the warnings."""
    key = rules.for_installed(tensorrt_version)
    findings = check_onnx(path, key)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise UserError(
            f"{path} would not build on TensorRT {tensorrt_version} ({len(errors)} error(s); first: {errors[0]}); "
            f"`m2ae check {path} --tensorrt {key}` lists them all"
        )
    return [f for f in findings if f.severity == "warning"]
