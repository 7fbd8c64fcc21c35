"""Torch ops, ONNX export, ONNX Runtime custom ops and the standard-op lowering vs the reference."""

from __future__ import annotations

import importlib
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from m2ae.trt_plugins import (
    DOMAIN,
    GATHER_OP,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    SCATTER_OP,
    onnx_ops,
    ort_ops,
    reference,
    torch_ops,
)

ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}

# (N, C, H, W, Kt, T, K): odd sizes, batch 2, Kt = 0, K = 0, one pixel, T = 1 and 9.
GATHER_SHAPES = [
    (1, 3, 4, 5, 6, 9, 7),
    (2, 4, 3, 3, 0, 9, 5),
    (1, 2, 3, 3, 4, 1, 0),
    (2, 1, 1, 1, 2, 3, 4),
    (1, 5, 7, 3, 11, 9, 13),
    (2, 3, 5, 2, 1, 1, 9),
]
SCATTER_SHAPES = [(1, 3, 4, 5), (2, 2, 3, 3), (1, 1, 1, 1), (2, 4, 1, 7)]


def gather_case(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> tuple[np.ndarray, ...]:
    n, c, h, w, kt, t, k = shape
    num_pixels = n * h * w
    dense = rng.standard_normal((n, c, h, w)).astype(dtype)
    tokens = rng.standard_normal((c, kt)).astype(dtype)
    table = rng.integers(-1 - num_pixels, kt, size=(t, k)).astype(np.int32)
    if k >= 2:  # always touch the first and last dense pixel
        table[0, :2] = [-2, -1 - num_pixels]
    return dense, tokens, table


def scatter_cases(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> list[tuple[np.ndarray, ...]]:
    n, c, h, w = shape
    num_pixels = n * h * w
    base = rng.standard_normal(shape).astype(dtype)
    cases = []
    for k in sorted({0, 1, num_pixels // 2, num_pixels}):
        index = rng.permutation(num_pixels)[:k].astype(np.int32)
        cases.append((base, rng.standard_normal((c, k)).astype(dtype), index))
    return cases


# ---------------------------------------------------------------- torch ops


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", GATHER_SHAPES)
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_torch_gather_matches_reference(rng: np.random.Generator, dtype: type, shape: tuple[int, ...], mode) -> None:  # noqa: ANN001
    dense, tokens, table = gather_case(rng, shape, dtype)
    with mode():
        got = torch_ops.masked_gather(*map(torch.from_numpy, (dense, tokens, table))).numpy()
    expected = reference.masked_gather(dense, tokens, table)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", SCATTER_SHAPES)
@pytest.mark.parametrize("accumulate", [0, 1])
def test_torch_scatter_matches_reference(rng: np.random.Generator, dtype: type, shape: tuple[int, ...], accumulate: int) -> None:
    for base, values, index in scatter_cases(rng, shape, dtype):
        before = base.copy()
        with torch.inference_mode():
            got = torch_ops.masked_scatter(*map(torch.from_numpy, (base, values, index)), accumulate).numpy()
        np.testing.assert_array_equal(got, reference.masked_scatter(base, values, index, accumulate))
        np.testing.assert_array_equal(base, before)


def test_torch_ops_fake_shapes() -> None:
    dense = torch.empty((2, 5, 7, 3), device="meta")
    tokens = torch.empty((5, 4), device="meta")
    table = torch.empty((9, 11), dtype=torch.int32, device="meta")
    assert torch.ops.m2ae.masked_gather(dense, tokens, table).shape == (45, 11)
    out = torch.ops.m2ae.masked_scatter(dense, torch.empty((5, 6), device="meta"), torch.empty(6, dtype=torch.int32, device="meta"), 1)
    assert out.shape == dense.shape and out.device.type == "meta"


def test_torch_registration_is_idempotent() -> None:
    torch_ops.register_torch_ops()
    reloaded = importlib.reload(torch_ops)
    reloaded.register_torch_ops()
    reloaded.register_onnx_symbolics()
    reloaded.register_onnx_symbolics()
    got = reloaded.masked_gather(torch.ones(1, 1, 1, 1), torch.zeros(1, 0), torch.tensor([[-2]], dtype=torch.int32))
    assert got.tolist() == [[1.0]]


GATHER_ERRORS = [
    ({"dense": torch.zeros(1, 2, 3, 3, dtype=torch.float64)}, "dense must be float32 or float16"),
    ({"table": torch.zeros(1, 1, dtype=torch.int64)}, "table must be int32"),
    ({"dense": torch.zeros(2, 3, 3)}, r"dense must be \[N,C,H,W\]"),
    ({"tokens": torch.zeros(2)}, r"tokens must be \[C,Kt\] and table \[T,K\]"),
    ({"tokens": torch.zeros(2, 3, dtype=torch.float16)}, "tokens dtype torch.float16 differs"),
    ({"tokens": torch.zeros(1, 3)}, "tokens have 1 channels, dense has 2"),
    ({"table": torch.tensor([[3]], dtype=torch.int32)}, "table value 3 out of range"),
    ({"table": torch.tensor([[-11]], dtype=torch.int32)}, "table value -11 out of range"),
]


@pytest.mark.parametrize(("override", "message"), GATHER_ERRORS)
def test_torch_gather_validation(override: dict, message: str) -> None:
    args = {"dense": torch.zeros(1, 2, 3, 3), "tokens": torch.zeros(2, 3), "table": torch.tensor([[2, -10]], dtype=torch.int32)}
    torch_ops.masked_gather(**args)  # the limits themselves are valid
    with pytest.raises(ValueError, match=message):
        torch_ops.masked_gather(**{**args, **override})


SCATTER_ERRORS = [
    ({"base": torch.zeros(1, 2, 3, 3, dtype=torch.float64)}, "base must be float32 or float16"),
    ({"index": torch.zeros(2, dtype=torch.int64)}, "index must be int32"),
    ({"values": torch.zeros(2, 3)}, r"values must be \[2, 2\] to match base and index"),
    ({"accumulate": 3}, "accumulate must be 0 or 1, got 3"),
    ({"index": torch.tensor([0, 9], dtype=torch.int32)}, r"index values must lie in \[0, 9\)"),
    ({"index": torch.tensor([4, 4], dtype=torch.int32)}, "index values must be unique"),
]


@pytest.mark.parametrize(("override", "message"), SCATTER_ERRORS)
def test_torch_scatter_validation(override: dict, message: str) -> None:
    args = {"base": torch.zeros(1, 2, 3, 3), "values": torch.ones(2, 2), "index": torch.tensor([0, 8], dtype=torch.int32), "accumulate": 0}
    torch_ops.masked_scatter(**args)
    with pytest.raises(ValueError, match=message):
        torch_ops.masked_scatter(**{**args, **override})


def test_torch_check_false_skips_only_range_checks() -> None:
    index = torch.tensor([4, 4], dtype=torch.int32)
    out = torch_ops.masked_scatter(torch.zeros(1, 1, 3, 3), torch.ones(1, 2), index, 1, check=False)
    assert out.sum().item() in (1.0, 2.0)  # duplicate indices: defined by neither op, but no error
    with pytest.raises(ValueError, match="int32"):
        torch_ops.masked_scatter(torch.zeros(1, 1, 3, 3), torch.ones(1, 2), index.long(), check=False)


# ---------------------------------------------------------------- numpy kernels of the ORT ops


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_numpy_kernels_match_reference(rng: np.random.Generator, dtype: type) -> None:
    for shape in GATHER_SHAPES:
        case = gather_case(rng, shape, dtype)
        np.testing.assert_array_equal(ort_ops.gather_numpy(*case), reference.masked_gather(*case))
    for shape in SCATTER_SHAPES:
        for base, values, index in scatter_cases(rng, shape, dtype):
            for accumulate in (0, 1):
                expected = reference.masked_scatter(base, values, index, accumulate)
                np.testing.assert_array_equal(ort_ops.scatter_numpy(base, values, index, accumulate), expected)
                inplace = base.copy()
                ort_ops.scatter_numpy(inplace, values, index, accumulate, inplace=True)
                np.testing.assert_array_equal(inplace, expected)


# ---------------------------------------------------------------- ONNX nodes and models


def test_node_builders_set_plugin_attributes() -> None:
    gather = onnx_ops.make_gather_node("d", "t", "tb", "o", name="g")
    scatter = onnx_ops.make_scatter_node("b", "v", "i", "o", accumulate=1)
    for node, op in ((gather, GATHER_OP), (scatter, SCATTER_OP)):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert (node.domain, node.op_type) == (DOMAIN, op)
        assert attrs["plugin_version"] == PLUGIN_VERSION.encode() and attrs["plugin_namespace"] == PLUGIN_NAMESPACE.encode()
    assert {a.name: a.i for a in scatter.attribute if a.name == "accumulate"} == {"accumulate": 1}
    with pytest.raises(ValueError, match="accumulate must be 0 or 1"):
        onnx_ops.make_scatter_node("b", "v", "i", "o", accumulate=2)


def ops_model(dtype: type, opset: int = 17) -> onnx.ModelProto:
    """Graph with one gather and two scatters (replace, add) over fully dynamic inputs."""
    et = ONNX_TYPES[dtype]
    nodes = [
        onnx_ops.make_gather_node("dense", "tokens", "table", "gathered"),
        onnx_ops.make_scatter_node("dense", "values", "index", "replaced", 0),
        onnx_ops.make_scatter_node("dense", "values", "index", "added", 1),
    ]
    inputs = [
        helper.make_tensor_value_info("dense", et, ["n", "c", "h", "w"]),
        helper.make_tensor_value_info("tokens", et, ["c", "kt"]),
        helper.make_tensor_value_info("table", TensorProto.INT32, ["t", "k"]),
        helper.make_tensor_value_info("values", et, ["c", "ks"]),
        helper.make_tensor_value_info("index", TensorProto.INT32, ["ks"]),
    ]
    outputs = [
        helper.make_tensor_value_info("gathered", et, ["tc", "k"]),
        helper.make_tensor_value_info("replaced", et, ["n", "c", "h", "w"]),
        helper.make_tensor_value_info("added", et, ["n", "c", "h", "w"]),
    ]
    graph = helper.make_graph(nodes, "m2ae_ops", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)])


def check_session_against_reference(session: ort.InferenceSession, rng: np.random.Generator, dtype: type) -> None:
    """One session, every shape: dynamic N, C, H, W, Kt, T, K, including K = 0 and Kt = 0."""
    for shape in GATHER_SHAPES:
        dense, tokens, table = gather_case(rng, shape, dtype)
        for base, values, index in scatter_cases(rng, dense.shape, dtype):
            feed = {"dense": base, "tokens": tokens, "table": table, "values": values, "index": index}
            gathered, replaced, added = session.run(None, feed)
            expected = reference.masked_gather(base, tokens, table)
            assert gathered.dtype == dtype and gathered.shape == expected.shape
            np.testing.assert_array_equal(gathered, expected)
            np.testing.assert_array_equal(replaced, reference.masked_scatter(base, values, index, 0))
            np.testing.assert_array_equal(added, reference.masked_scatter(base, values, index, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_ort_custom_ops_match_reference(rng: np.random.Generator, dtype: type) -> None:
    check_session_against_reference(ort_ops.make_session(ops_model(dtype), threads=1), rng, dtype)


def test_ort_registration_is_idempotent(rng: np.random.Generator) -> None:
    ort_ops.register_ops()
    ort_ops.register_ops()
    importlib.reload(ort_ops).register_ops()
    session = ort_ops.make_session(ops_model(np.float32).SerializeToString(), threads=1)
    check_session_against_reference(session, rng, np.float32)


def test_ort_session_options_alone_reject_float16() -> None:
    # Without prepare_model an fp16 node has no kernel: a clean load error, not a crash.
    with pytest.raises(Exception, match=r"tensor\(float16\)"):
        ort.InferenceSession(ops_model(np.float16).SerializeToString(), ort_ops.session_options(), providers=["CPUExecutionProvider"])


def test_ort_custom_op_errors_raise_after_run(rng: np.random.Generator) -> None:
    session = ort_ops.make_session(ops_model(np.float32), threads=1)
    dense, tokens, table = gather_case(rng, (1, 2, 3, 3, 4, 9, 5), np.float32)
    feed = {"dense": dense, "tokens": tokens, "table": table, "values": np.zeros((2, 1), np.float32), "index": np.array([9], np.int32)}
    with pytest.raises(ValueError, match=r"MaskedScatter: index values must lie in \[0, 9\)"):
        session.run(None, feed)
    feed["index"] = np.array([8], np.int32)
    feed["table"] = np.array([[4]], np.int32)
    with pytest.raises(ValueError, match="MaskedGather: table value 4 out of range"):
        session.run(None, feed)
    feed["table"] = table
    session.run(None, feed)  # errors do not stick to the session


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_lowered_graph_matches_reference(rng: np.random.Generator, dtype: type) -> None:
    model = ops_model(dtype)
    lowered = onnx_ops.lower_to_standard_ops(model)
    onnx.checker.check_model(lowered, full_check=True)
    assert not onnx_ops.has_custom_ops(lowered) and onnx_ops.has_custom_ops(model)
    assert DOMAIN not in {o.domain for o in lowered.opset_import}
    assert len(model.graph.node) == 3  # the input model is left alone
    # A plain session: nothing custom registered.
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    check_session_against_reference(session, rng, dtype)


def test_lowering_needs_opset_17() -> None:
    with pytest.raises(ValueError, match="opset >= 17"):
        onnx_ops.lower_to_standard_ops(ops_model(np.float32, opset=16))


def test_lowering_rejects_unknown_m2ae_op() -> None:
    model = ops_model(np.float32)
    model.graph.node[0].op_type = "MaskedMystery"
    with pytest.raises(ValueError, match="unknown m2ae op 'MaskedMystery'"):
        onnx_ops.lower_to_standard_ops(model)


# ---------------------------------------------------------------- torch -> ONNX export


class PrunedToy(torch.nn.Module):
    """Both ops with K from ``nonzero``: tokens from the masked pixels, a 3-tap gather
    (token, zero, next dense pixel), then an accumulating scatter back."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        index = torch.nonzero(mask.reshape(-1) > 0.5).reshape(-1).to(torch.int32)
        num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
        tokens = torch.ops.m2ae.masked_gather(x, x.new_zeros((c, 0)), (-2 - index).reshape(1, -1))
        tokens = tokens * 2.0 + 1.0
        own = torch.cumsum(torch.ones_like(index), 0) - 1
        neighbour = -2 - (index + 1) % num_pixels
        table = torch.stack([own, torch.full_like(index, -1), neighbour]).to(torch.int32)
        taps = torch.ops.m2ae.masked_gather(x, tokens, table)
        update = taps[:c] + taps[c : 2 * c] + taps[2 * c :]
        return torch.ops.m2ae.masked_scatter(x, update, index, 1)


def export_toy() -> onnx.ModelProto:
    torch_ops.register_onnx_symbolics(17)
    x = torch.randn(1, 3, 5, 6)
    mask = (torch.rand(1, 1, 5, 6) > 0.5).float()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            PrunedToy(),
            (x, mask),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x", "mask"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "mask": {0: "n", 2: "h", 3: "w"}},
        )
    return onnx.load_model_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def toy_model() -> onnx.ModelProto:
    return export_toy()


def test_export_writes_plugin_nodes(toy_model: onnx.ModelProto) -> None:
    custom = [n for n in toy_model.graph.node if n.domain == DOMAIN]
    assert sorted(n.op_type for n in custom) == [GATHER_OP, GATHER_OP, SCATTER_OP]
    assert any(n.op_type == "NonZero" for n in toy_model.graph.node)
    for node in custom:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"m2ae"
        assert ("accumulate" in attrs) == (node.op_type == SCATTER_OP)
        if node.op_type == SCATTER_OP:
            assert attrs["accumulate"] == 1
    assert {o.domain: o.version for o in toy_model.opset_import}[DOMAIN] == 1


def toy_inputs(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two sizes (dynamic N, H, W), plus empty (K = 0) and full masks."""
    cases = []
    for n, h, w in ((1, 5, 6), (2, 9, 4)):
        x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
        for fill in (None, 0.0, 1.0):
            mask = rng.random((n, 1, h, w)) if fill is None else np.full((n, 1, h, w), fill)
            cases.append((x, mask.astype(np.float32)))
    return cases


def torch_toy(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return PrunedToy()(torch.from_numpy(x), torch.from_numpy(mask)).numpy()


def test_exported_toy_runs_with_custom_ops(toy_model: onnx.ModelProto, rng: np.random.Generator) -> None:
    session = ort_ops.make_session(toy_model, threads=1)
    for x, mask in toy_inputs(rng):
        (got,) = session.run(None, {"x": x, "mask": mask})
        np.testing.assert_array_equal(got, torch_toy(x, mask))


def test_exported_toy_lowered_runs_without_custom_ops(toy_model: onnx.ModelProto, rng: np.random.Generator) -> None:
    lowered = onnx_ops.lower_to_standard_ops(toy_model)
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    for x, mask in toy_inputs(rng):
        (got,) = session.run(None, {"x": x, "mask": mask})
        np.testing.assert_array_equal(got, torch_toy(x, mask))


def test_toy_torch_matches_reference_composition(rng: np.random.Generator) -> None:
    x, mask = toy_inputs(rng)[3]
    index = np.flatnonzero(mask.reshape(-1) > 0.5).astype(np.int32)
    c, num_pixels = x.shape[1], x.shape[0] * x.shape[2] * x.shape[3]
    tokens = reference.masked_gather(x, np.zeros((c, 0), np.float32), (-2 - index).reshape(1, -1)) * 2 + 1
    table = np.stack([np.arange(index.size), np.full(index.size, -1), -2 - (index + 1) % num_pixels]).astype(np.int32)
    taps = reference.masked_gather(x, tokens, table)
    expected = reference.masked_scatter(x, taps[:c] + taps[c : 2 * c] + taps[2 * c :], index, 1)
    np.testing.assert_array_equal(torch_toy(x, mask), expected)


def test_ort_fills_omitted_attributes_and_rejects_other_versions(rng: np.random.Generator) -> None:
    model = ops_model(np.float32)
    for node in model.graph.node:
        del node.attribute[:]  # lowering and runtime both read accumulate as 0 then
    session = ort_ops.make_session(model, threads=1)
    dense, tokens, table = gather_case(rng, (1, 2, 3, 3, 4, 9, 5), np.float32)
    values, index = np.ones((2, 1), np.float32), np.array([3], np.int32)
    feed = {"dense": dense, "tokens": tokens, "table": table, "values": values, "index": index}
    outputs = session.run(None, feed)
    expected = [reference.masked_gather(dense, tokens, table)] + [reference.masked_scatter(dense, values, index, 0)] * 2
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got, want)
    model.graph.node[0].attribute.append(helper.make_attribute("plugin_version", "2"))
    with pytest.raises(ValueError, match="plugin_version '2'"):
        ort_ops.make_session(model)


def test_lowering_rejects_other_plugin_versions() -> None:
    model = ops_model(np.float32)
    for attr in model.graph.node[1].attribute:
        if attr.name == "plugin_version":
            attr.s = b"7"
    with pytest.raises(ValueError, match="MaskedScatter node .* plugin_version '7'"):
        onnx_ops.lower_to_standard_ops(model)


def test_lowering_reaches_subgraphs(rng: np.random.Generator) -> None:
    def branch(name: str, table: str) -> onnx.GraphProto:
        node = onnx_ops.make_gather_node("dense", "tokens", table, f"{name}_out")
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
        return helper.make_graph([node], name, [], [out])

    if_node = helper.make_node("If", ["cond"], ["out"], then_branch=branch("then", "table_a"), else_branch=branch("else", "table_b"))
    inputs = [
        helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["n", "c", "h", "w"]),
        helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["c", "kt"]),
        helper.make_tensor_value_info("table_a", TensorProto.INT32, ["t", "k"]),
        helper.make_tensor_value_info("table_b", TensorProto.INT32, ["t", "k"]),
    ]
    graph = helper.make_graph([if_node], "sub", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    assert onnx_ops.has_custom_ops(model)
    lowered = onnx_ops.lower_to_standard_ops(model)
    assert not onnx_ops.has_custom_ops(lowered)
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    dense, tokens, table_a = gather_case(rng, (2, 3, 4, 5, 6, 9, 7), np.float32)
    table_b = table_a[::-1].copy()
    for cond, table in ((True, table_a), (False, table_b)):
        feed = {"cond": np.array(cond), "dense": dense, "tokens": tokens, "table_a": table_a, "table_b": table_b}
        (got,) = session.run(None, feed)
        np.testing.assert_array_equal(got, reference.masked_gather(dense, tokens, table))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (2, 2, 3, 3)])
def test_lowered_pick_from_empty_constant_tokens(rng: np.random.Generator, dtype: type, shape: tuple[int, ...]) -> None:
    """A gather whose tokens are an empty constant takes the no-copy pick lowering."""
    n, c, h, w = shape
    pixels = n * h * w
    table = np.stack([-2 - rng.permutation(pixels)[:6], -2 - rng.integers(0, pixels, 6)]).astype(np.int32)
    table[1, :2] = -1  # outside the image: zeros
    empty = onnx.numpy_helper.from_array(np.zeros((c, 0), dtype), "no_tokens")
    graph = helper.make_graph(
        [onnx_ops.make_gather_node("dense", "no_tokens", "table", "out")], "pick",
        [helper.make_tensor_value_info("dense", ONNX_TYPES[dtype], [n, c, h, w]),
         helper.make_tensor_value_info("table", TensorProto.INT32, list(table.shape))],
        [helper.make_tensor_value_info("out", ONNX_TYPES[dtype], None)], initializer=[empty],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    lowered = onnx_ops.lower_to_standard_ops(model)
    # The pick path never assembles a [tokens | 0 | pixels] source (a copy of the dense map).
    assert not [node for node in lowered.graph.node if "no_tokens" in node.input]
    dense = rng.standard_normal(shape).astype(dtype)
    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"dense": dense, "table": table})
    np.testing.assert_array_equal(out, reference.masked_gather(dense, np.zeros((c, 0), dtype), table))
