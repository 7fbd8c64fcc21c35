"""Torch ops, ONNX export, ONNX Runtime custom ops and the standard-op lowering vs the reference.

Every implementation is held bit for bit to ``reference.py`` on the shared cases of
``op_cases.py`` (partial edge tiles, halo wider than the tile, tile 1, B = 0, batch 2)
and on random shapes drawn by hypothesis, in float32 and float16.
"""

from __future__ import annotations

import functools
import importlib
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper
from op_cases import DTYPES, GATHER_CASES, SCATTER_CASES, assert_bit_equal, gather_inputs, random_tiles, scatter_inputs

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
from m2ae.trt_plugins.contract import grid_shape, tile_count

ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}
TORCH_TYPES = {np.float32: torch.float32, np.float16: torch.float16}
BACKENDS = ("lowered", "ortx")
FAST = settings(max_examples=25, deadline=None)

#: random shapes: small maps with partial edge tiles, tiles and halos around their size
shapes = st.fixed_dictionaries({
    "n": st.integers(1, 2), "c": st.integers(1, 3), "h": st.integers(1, 10), "w": st.integers(1, 10),
    "tile": st.integers(1, 4), "halo": st.integers(0, 5), "seed": st.integers(0, 2**32 - 1),
    "dtype": st.sampled_from(DTYPES),
})


def random_gather(s: dict) -> tuple[np.ndarray, np.ndarray]:
    """Dense map and ids for a drawn shape; B from 0 to a few past the cell count (repeats)."""
    rng = np.random.default_rng(s["seed"])
    b = int(rng.integers(0, tile_count(s["n"], s["h"], s["w"], s["tile"]) + 3))
    return gather_inputs(rng, s["n"], s["c"], s["h"], s["w"], s["tile"], b, s["dtype"])


def random_scatter(s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(s["seed"])
    b = int(rng.integers(0, tile_count(s["n"], s["h"], s["w"], s["tile"]) + 1))
    return scatter_inputs(rng, s["n"], s["c"], s["h"], s["w"], s["tile"], b, s["dtype"])


def as_torch(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(a) for a in arrays]


# ---------------------------------------------------------------- torch ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GATHER_CASES)
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_torch_gather_matches_reference(rng: np.random.Generator, dtype: type, case: tuple[int, ...],
                                        mode) -> None:  # noqa: ANN001
    n, c, h, w, tile, halo, b = case
    dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, dtype)
    with mode():
        got = torch_ops.masked_gather(*as_torch(dense, tiles), tile, halo)
    assert got.is_contiguous()
    assert_bit_equal(got.numpy(), reference.masked_gather(dense, tiles, tile, halo))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SCATTER_CASES)
def test_torch_scatter_matches_reference(rng: np.random.Generator, dtype: type, case: tuple[int, ...]) -> None:
    n, c, h, w, tile, b = case
    base, values, tiles = scatter_inputs(rng, n, c, h, w, tile, b, dtype)
    before = base.copy()
    with torch.inference_mode():
        got = torch_ops.masked_scatter(*as_torch(base, values, tiles))
    assert got.is_contiguous()
    assert_bit_equal(got.numpy(), reference.masked_scatter(base, values, tiles))
    assert_bit_equal(base, before)  # the op returns a new map


@FAST
@given(s=shapes)
def test_torch_ops_random_shapes(s: dict) -> None:
    dense, tiles = random_gather(s)
    got = torch.ops.m2ae.masked_gather(*as_torch(dense, tiles), s["tile"], s["halo"])
    assert_bit_equal(got.numpy(), reference.masked_gather(dense, tiles, s["tile"], s["halo"]))
    base, values, tiles = random_scatter(s)
    got = torch.ops.m2ae.masked_scatter(*as_torch(base, values, tiles))
    assert_bit_equal(got.numpy(), reference.masked_scatter(base, values, tiles))


def test_torch_ops_accept_strided_inputs(rng: np.random.Generator) -> None:
    dense, tiles = gather_inputs(rng, 2, 5, 9, 7, 4, 8, np.float32)
    expected = reference.masked_gather(dense, tiles, 4, 2)
    channels_last = torch.from_numpy(dense).to(memory_format=torch.channels_last)
    assert_bit_equal(torch_ops.masked_gather(channels_last, torch.from_numpy(tiles), 4, 2).numpy(), expected)
    values = rng.standard_normal((8, 5, 4, 4)).astype(np.float32)
    transposed = torch.from_numpy(np.ascontiguousarray(values.transpose(0, 1, 3, 2))).transpose(2, 3)
    got = torch_ops.masked_scatter(channels_last, transposed, torch.from_numpy(tiles))
    assert_bit_equal(got.contiguous().numpy(), reference.masked_scatter(dense, values, tiles))


def test_torch_fake_kernels_give_output_shapes() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        dense = torch.empty((2, 5, 7, 3), dtype=torch.float16)
        tiles = torch.empty(9, dtype=torch.int32)
        gathered = torch.ops.m2ae.masked_gather(dense, tiles, 4, 3)
        scattered = torch.ops.m2ae.masked_scatter(dense, torch.empty((9, 5, 4, 4), dtype=torch.float16), tiles)
    assert gathered.shape == (9, 5, 10, 10) and gathered.dtype == torch.float16
    assert scattered.shape == dense.shape and scattered.dtype == torch.float16 and scattered.is_contiguous()
    # The meta device runs the fake kernels too, and the wrappers' host-only id checks skip it.
    meta_ids = torch.empty(0, dtype=torch.int32, device="meta")
    meta = torch_ops.masked_gather(torch.empty((1, 2, 5, 5), device="meta"), meta_ids, 1, 0)
    assert meta.shape == (0, 2, 1, 1) and meta.device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_torch_opcheck(dtype: torch.dtype) -> None:
    # Fake kernels agree with the real ones (shape, dtype, strides); schema and autograd registration are sound.
    dense = torch.randn(2, 3, 7, 9, dtype=dtype)
    tiles = torch.tensor([0, 5, 11, 6], dtype=torch.int32)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    for op, args in (
        (torch.ops.m2ae.masked_gather.default, (dense, tiles, 4, 1)),
        (torch.ops.m2ae.masked_gather.default, (dense, tiles[:0], 2, 5)),
        (torch.ops.m2ae.masked_scatter.default, (dense, torch.randn(4, 3, 4, 4, dtype=dtype), tiles)),
    ):
        result = torch.library.opcheck(op, args, test_utils=utils)
        assert set(result.values()) == {"SUCCESS"}, result


def test_torch_registration_is_idempotent() -> None:
    torch_ops.register_torch_ops()
    reloaded = importlib.reload(torch_ops)
    reloaded.register_torch_ops()
    reloaded.register_onnx_symbolics()
    reloaded.register_onnx_symbolics()
    got = reloaded.masked_gather(torch.arange(4.0).reshape(1, 1, 2, 2), torch.tensor([3], dtype=torch.int32), 1, 1)
    assert got[0, 0].tolist() == [[0.0, 1.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 0.0]]


def _gather_args() -> dict:
    # 2 images, 3x3, tile 2: ids 0..7.
    return {"dense": torch.zeros(2, 2, 3, 3), "tiles": torch.tensor([0, 7], dtype=torch.int32), "tile": 2, "halo": 1}


TORCH_GATHER_ERRORS = [
    ({"dense": torch.zeros(2, 2, 3, 3, dtype=torch.float64)}, "dense must be float32 or float16, got torch.float64"),
    ({"dense": torch.zeros(2, 2, 3, 3, dtype=torch.bfloat16)}, "dense must be float32 or float16, got torch.bfloat16"),
    ({"dense": torch.zeros(2, 3, 3)}, r"dense must be \[N,C,H,W\], got shape \(2, 3, 3\)"),
    ({"tile": 0}, "tile must be >= 1 and halo >= 0, got tile=0, halo=1"),
    ({"halo": -2}, "tile must be >= 1 and halo >= 0, got tile=2, halo=-2"),
    ({"tiles": torch.tensor([0, 7])}, "tiles must be int32, got torch.int64"),
    ({"tiles": torch.tensor([[0, 7]], dtype=torch.int32)}, r"tiles must be \[B\], got shape \(1, 2\)"),
    ({"tiles": torch.tensor([0, 8], dtype=torch.int32)}, r"tile ids must lie in \[0, 8\), got \[0, 8\]"),
    ({"tiles": torch.tensor([-1, 2], dtype=torch.int32)}, r"tile ids must lie in \[0, 8\), got \[-1, 2\]"),
]


@pytest.mark.parametrize(("override", "message"), TORCH_GATHER_ERRORS)
def test_torch_gather_validation(override: dict, message: str) -> None:
    torch_ops.masked_gather(**_gather_args())  # the range limits themselves are valid
    with pytest.raises(ValueError, match=f"^{message}$"):
        torch_ops.masked_gather(**{**_gather_args(), **override})


def _scatter_args() -> dict:
    return {"base": torch.zeros(2, 2, 3, 3), "values": torch.ones(2, 2, 2, 2),
            "tiles": torch.tensor([0, 7], dtype=torch.int32)}


TORCH_SCATTER_ERRORS = [
    ({"base": torch.zeros(2, 2, 3, 3, dtype=torch.float64)}, "base must be float32 or float16, got torch.float64"),
    ({"base": torch.zeros(2, 3, 3)}, r"base must be \[N,C,H,W\], got shape \(2, 3, 3\)"),
    ({"values": torch.ones(2, 2, 2)}, r"values must be \[B,C,tile,tile\], got shape \(2, 2, 2\)"),
    ({"values": torch.ones(2, 2, 2, 3)}, r"values must be \[B,C,tile,tile\], got shape \(2, 2, 2, 3\)"),
    ({"values": torch.ones(2, 2, 0, 0)}, "values must hold tiles of at least 1x1 pixel"),
    ({"values": torch.ones(2, 2, 2, 2, dtype=torch.float16)},
     "values dtype torch.float16 differs from base dtype torch.float32"),
    ({"values": torch.ones(3, 2, 2, 2)},
     r"values must be \[B, 2, tile, tile\] and tiles \[B\], got \(3, 2, 2, 2\) and \(2,\)"),
    ({"values": torch.ones(2, 1, 2, 2)},
     r"values must be \[B, 2, tile, tile\] and tiles \[B\], got \(2, 1, 2, 2\) and \(2,\)"),
    ({"tiles": torch.tensor([0, 7])}, "tiles must be int32, got torch.int64"),
    ({"tiles": torch.tensor([0, 8], dtype=torch.int32)}, r"tile ids must lie in \[0, 8\), got \[0, 8\]"),
    ({"values": torch.ones(2, 2, 3, 3)}, r"tile ids must lie in \[0, 2\), got \[0, 7\]"),  # tile 3: 1 cell per image
    ({"tiles": torch.tensor([5, 5], dtype=torch.int32)}, "tile ids must be unique"),
]


@pytest.mark.parametrize(("override", "message"), TORCH_SCATTER_ERRORS)
def test_torch_scatter_validation(override: dict, message: str) -> None:
    torch_ops.masked_scatter(**_scatter_args())
    with pytest.raises(ValueError, match=f"^{message}$"):
        torch_ops.masked_scatter(**{**_scatter_args(), **override})


def test_torch_check_false_skips_only_id_checks() -> None:
    tiles = torch.tensor([4, 4], dtype=torch.int32)
    base = torch.zeros(1, 1, 6, 6)
    out = torch_ops.masked_scatter(base, torch.ones(2, 1, 2, 2), tiles, check=False)  # duplicates: no error
    assert out[0, 0, 2:4, 2:4].eq(1).all() and out.sum().item() == 4.0
    with pytest.raises(ValueError, match="tile ids must be unique"):
        torch_ops.masked_scatter(base, torch.ones(2, 1, 2, 2), tiles)
    with pytest.raises(ValueError, match="tiles must be int32"):
        torch_ops.masked_scatter(base, torch.ones(2, 1, 2, 2), tiles.long(), check=False)
    with pytest.raises(ValueError, match="tile must be >= 1"):
        torch_ops.masked_gather(base, tiles, 0, 0, check=False)


# ---------------------------------------------------------------- numpy kernels of the ORT ops


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_kernels_match_reference(rng: np.random.Generator, dtype: type) -> None:
    for n, c, h, w, tile, halo, b in GATHER_CASES:
        dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, dtype)
        expected = reference.masked_gather(dense, tiles, tile, halo)
        assert_bit_equal(ort_ops.gather_numpy(dense, tiles, tile, halo), expected)
    for n, c, h, w, tile, b in SCATTER_CASES:
        base, values, tiles = scatter_inputs(rng, n, c, h, w, tile, b, dtype)
        expected = reference.masked_scatter(base, values, tiles)
        before = base.copy()
        assert_bit_equal(ort_ops.scatter_numpy(base, values, tiles), expected)
        assert_bit_equal(base, before)
        target = base.copy()
        assert ort_ops.scatter_numpy(target, values, tiles, inplace=True) is target
        assert_bit_equal(target, expected)


@FAST
@given(s=shapes)
def test_numpy_kernels_random_shapes(s: dict) -> None:
    dense, tiles = random_gather(s)
    got = ort_ops.gather_numpy(dense, tiles, s["tile"], s["halo"])
    assert_bit_equal(got, reference.masked_gather(dense, tiles, s["tile"], s["halo"]))
    base, values, tiles = random_scatter(s)
    expected = reference.masked_scatter(base, values, tiles)
    assert_bit_equal(ort_ops.scatter_numpy(base, values, tiles), expected)
    ort_ops.scatter_numpy(base, values, tiles, inplace=True)
    assert_bit_equal(base, expected)


# ---------------------------------------------------------------- ONNX nodes and models


def test_node_builders_set_plugin_attributes() -> None:
    gather = onnx_ops.make_gather_node("d", "t", "o", tile=8, halo=2, name="g")
    scatter = onnx_ops.make_scatter_node("b", "v", "t", "o")
    for node, op in ((gather, GATHER_OP), (scatter, SCATTER_OP)):
        attrs = {a.name: a for a in node.attribute}
        assert (node.domain, node.op_type) == (DOMAIN, op)
        assert attrs["plugin_version"].s == PLUGIN_VERSION.encode() == b"2"
        assert attrs["plugin_namespace"].s == PLUGIN_NAMESPACE.encode() == b"m2ae"
        assert "accumulate" not in attrs
    assert {a.name: (a.type, a.i) for a in gather.attribute if a.name in ("tile", "halo")} == {
        "tile": (AttributeProto.INT, 8), "halo": (AttributeProto.INT, 2)}
    assert not {"tile", "halo"} & {a.name for a in scatter.attribute}
    assert onnx_ops.gather_attributes(gather) == (8, 2)
    with pytest.raises(ValueError, match="tile must be >= 1 and halo >= 0, got tile=0, halo=0"):
        onnx_ops.make_gather_node("d", "t", "o", tile=0, halo=0)
    with pytest.raises(ValueError, match="halo >= 0, got tile=1, halo=-1"):
        onnx_ops.make_gather_node("d", "t", "o", tile=1, halo=-1)


def test_gather_attributes_checks() -> None:
    node = onnx_ops.make_gather_node("d", "t", "o", tile=3, halo=1, name="g")
    no_halo = [a for a in node.attribute if a.name != "halo"]
    del node.attribute[:]
    node.attribute.extend(no_halo)
    assert onnx_ops.gather_attributes(node) == (3, 0)  # halo defaults to 0
    node.attribute.extend([helper.make_attribute("halo", -1)])
    with pytest.raises(ValueError, match="MaskedGather node 'g': tile must be >= 1 and halo >= 0, got tile=3, halo=-1"):
        onnx_ops.gather_attributes(node)
    del node.attribute[:]
    with pytest.raises(ValueError, match="MaskedGather node 'g' has no 'tile' attribute"):
        onnx_ops.gather_attributes(node)


def test_check_plugin_version() -> None:
    node = onnx_ops.make_scatter_node("b", "v", "t", "o", name="s")
    assert onnx_ops.check_plugin_version(node) is None  # version 2 passes
    for attr in node.attribute:
        if attr.name == "plugin_version":
            attr.s = b"1"
    message = "MaskedScatter node 's' asks for plugin_version '1'; this toolkit implements '2'"
    with pytest.raises(ValueError, match=message):
        onnx_ops.check_plugin_version(node)
    del node.attribute[:]
    onnx_ops.check_plugin_version(node)  # no version attribute: ours


def _opsets(opset: int = 17) -> list[onnx.OperatorSetIdProto]:
    return [helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)]


def gather_model(dtype: type, tile: int, halo: int, opset: int = 17) -> onnx.ModelProto:
    et = ONNX_TYPES[dtype]
    graph = helper.make_graph(
        [onnx_ops.make_gather_node("dense", "tiles", "out", tile, halo, name="gather")], "gather",
        [helper.make_tensor_value_info("dense", et, ["n", "c", "h", "w"]),
         helper.make_tensor_value_info("tiles", TensorProto.INT32, ["b"])],
        [helper.make_tensor_value_info("out", et, ["b", "c", tile + 2 * halo, tile + 2 * halo])],
    )
    return helper.make_model(graph, opset_imports=_opsets(opset))


def scatter_model(dtype: type, opset: int = 17) -> onnx.ModelProto:
    """Fully dynamic, symbols independent (so ORT lets mismatched shapes reach the kernel)."""
    et = ONNX_TYPES[dtype]
    graph = helper.make_graph(
        [onnx_ops.make_scatter_node("base", "values", "tiles", "out", name="scatter")], "scatter",
        [helper.make_tensor_value_info("base", et, ["n", "c", "h", "w"]),
         helper.make_tensor_value_info("values", et, ["b", "vc", "t0", "t1"]),
         helper.make_tensor_value_info("tiles", TensorProto.INT32, ["b2"])],
        [helper.make_tensor_value_info("out", et, ["n", "c", "h", "w"])],
    )
    return helper.make_model(graph, opset_imports=_opsets(opset))


def make_backend(backend: str, model: onnx.ModelProto) -> ort.InferenceSession:
    if backend == "ortx":
        return ort_ops.make_session(model, threads=1)
    lowered = onnx_ops.lower_to_standard_ops(model)
    assert not onnx_ops.has_custom_ops(lowered)
    # A plain session: nothing custom registered.
    return ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def gather_session(backend: str, dtype: type, tile: int, halo: int) -> ort.InferenceSession:
    return make_backend(backend, gather_model(dtype, tile, halo))


@functools.lru_cache(maxsize=None)
def scatter_session(backend: str, dtype: type) -> ort.InferenceSession:
    return make_backend(backend, scatter_model(dtype))


def run_gather(backend: str, dense: np.ndarray, tiles: np.ndarray, tile: int, halo: int) -> np.ndarray:
    (out,) = gather_session(backend, dense.dtype.type, tile, halo).run(None, {"dense": dense, "tiles": tiles})
    return out


def run_scatter(backend: str, base: np.ndarray, values: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    (out,) = scatter_session(backend, base.dtype.type).run(None, {"base": base, "values": values, "tiles": tiles})
    return out




@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ort_backends_match_reference(rng: np.random.Generator, backend: str, dtype: type) -> None:
    """The shared cases, B = 0 included, in one session per (tile, halo) and one for every scatter."""
    check = assert_bit_equal
    for n, c, h, w, tile, halo, b in GATHER_CASES:
        dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, dtype)
        check(run_gather(backend, dense, tiles, tile, halo), reference.masked_gather(dense, tiles, tile, halo))
    for n, c, h, w, tile, b in SCATTER_CASES:
        base, values, tiles = scatter_inputs(rng, n, c, h, w, tile, b, dtype)
        assert_bit_equal(run_scatter(backend, base, values, tiles), reference.masked_scatter(base, values, tiles))


#: (tile, halo) of the shared cases: the random test reuses their sessions (building one costs ~0.1 s)
CASE_WINDOWS = sorted({(case[4], case[5]) for case in GATHER_CASES})


@FAST
@given(s=shapes, window=st.sampled_from(CASE_WINDOWS), backend=st.sampled_from(BACKENDS))
def test_ort_backends_random_shapes(s: dict, window: tuple[int, int], backend: str) -> None:
    s = {**s, "tile": window[0], "halo": window[1]}
    dense, tiles = random_gather(s)
    got = run_gather(backend, dense, tiles, s["tile"], s["halo"])
    assert_bit_equal(got, reference.masked_gather(dense, tiles, s["tile"], s["halo"]))
    base, values, tiles = random_scatter(s)
    assert_bit_equal(run_scatter(backend, base, values, tiles), reference.masked_scatter(base, values, tiles))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lowered_gather_halo_is_positive_zero(dtype: type) -> None:
    dense = np.full((1, 1, 2, 2), -1.0, dtype)
    got = run_gather("lowered", dense, np.array([0], np.int32), 2, 1)
    assert_bit_equal(got, reference.masked_gather(dense, np.array([0], np.int32), 2, 1))


def test_lowered_gather_halo_ignores_non_finite_border_pixels() -> None:
    dense = np.zeros((1, 1, 3, 3), np.float32)
    dense[0, 0, 0, 0], dense[0, 0, 2, 2] = np.inf, np.nan
    tiles = np.array([0, 3], np.int32)
    expected = reference.masked_gather(dense, tiles, 2, 1)
    assert expected[0, 0, 0, 0] == 0 and np.isinf(expected[0, 0, 1, 1])  # halo 0, the pixel itself kept
    np.testing.assert_array_equal(run_gather("lowered", dense, tiles, 2, 1), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lowered_models_are_valid_and_inputs_untouched(dtype: type) -> None:
    for model in (gather_model(dtype, 3, 2), scatter_model(dtype)):
        before = model.SerializeToString()
        lowered = onnx_ops.lower_to_standard_ops(model)
        onnx.checker.check_model(lowered, full_check=True)
        assert onnx_ops.has_custom_ops(model) and not onnx_ops.has_custom_ops(lowered)
        assert all(node.domain in ("", "ai.onnx") for node in lowered.graph.node)
        assert DOMAIN not in {o.domain for o in lowered.opset_import}
        assert model.SerializeToString() == before


def test_lowering_needs_opset_17() -> None:
    with pytest.raises(ValueError, match="lowering needs ONNX opset >= 17, the model imports opset 16"):
        onnx_ops.lower_to_standard_ops(gather_model(np.float32, 2, 1, opset=16))
    assert not onnx_ops.has_custom_ops(onnx_ops.lower_to_standard_ops(scatter_model(np.float32, opset=18)))


def test_lowering_rejects_unknown_m2ae_op() -> None:
    model = scatter_model(np.float32)
    model.graph.node[0].op_type = "MaskedMystery"
    with pytest.raises(ValueError, match="unknown m2ae op 'MaskedMystery' in node 'scatter'"):
        onnx_ops.lower_to_standard_ops(model)


def _set_version(model: onnx.ModelProto, version: bytes) -> None:
    for attr in model.graph.node[0].attribute:
        if attr.name == "plugin_version":
            attr.s = version


@pytest.mark.parametrize("build", [lambda: gather_model(np.float32, 2, 1), lambda: scatter_model(np.float16)])
def test_version_1_models_are_rejected(build) -> None:  # noqa: ANN001
    model = build()
    _set_version(model, b"1")
    message = r"node '(gather|scatter)' asks for plugin_version '1'; this toolkit implements '2'"
    with pytest.raises(ValueError, match=message):
        onnx_ops.lower_to_standard_ops(model)
    with pytest.raises(ValueError, match=message):
        ort_ops.prepare_model(model)
    with pytest.raises(ValueError, match=message):
        ort_ops.make_session(model)


def test_ort_fills_omitted_plugin_attributes(rng: np.random.Generator) -> None:
    model = gather_model(np.float32, 3, 1)
    kept = [a for a in model.graph.node[0].attribute if a.name in ("tile", "halo")]
    del model.graph.node[0].attribute[:]
    model.graph.node[0].attribute.extend(kept)
    dense, tiles = gather_inputs(rng, 1, 2, 7, 8, 3, 6, np.float32)
    (got,) = ort_ops.make_session(model, threads=1).run(None, {"dense": dense, "tiles": tiles})
    assert_bit_equal(got, reference.masked_gather(dense, tiles, 3, 1))


def test_ort_registration_is_idempotent(rng: np.random.Generator) -> None:
    ort_ops.register_ops()
    count = len(ort_ops._registered_op_types())
    ort_ops.register_ops()
    ort_ops.session_options()
    assert len(ort_ops._registered_op_types()) == count
    assert {f"{DOMAIN}::{GATHER_OP}", f"{DOMAIN}::{SCATTER_OP}"} <= ort_ops._registered_op_types()
    base, values, tiles = scatter_inputs(rng, 1, 3, 5, 5, 2, 4, np.float32)
    session = ort_ops.make_session(scatter_model(np.float32).SerializeToString(), threads=1)  # from bytes
    (got,) = session.run(None, {"base": base, "values": values, "tiles": tiles})
    assert_bit_equal(got, reference.masked_scatter(base, values, tiles))


def test_ort_session_options_alone_reject_float16() -> None:
    # Without prepare_model an fp16 node has no kernel: a clean load error, not a crash.
    with pytest.raises(Exception, match=r"tensor\(float16\)"):
        ort.InferenceSession(gather_model(np.float16, 2, 1).SerializeToString(), ort_ops.session_options(),
                             providers=["CPUExecutionProvider"])


def test_prepare_model_wraps_only_float16_nodes() -> None:
    f32 = gather_model(np.float32, 2, 1)
    assert ort_ops.prepare_model(f32).graph.node == f32.graph.node
    prepared = ort_ops.prepare_model(scatter_model(np.float16))
    ops = [n.op_type for n in prepared.graph.node]
    assert ops == ["Cast", "Cast", SCATTER_OP, "CastLike"]
    scatter = prepared.graph.node[2]
    assert list(scatter.input[:2]) == [n.output[0] for n in prepared.graph.node[:2]]
    assert all(helper.get_attribute_value(n.attribute[0]) == TensorProto.FLOAT for n in prepared.graph.node[:2])
    assert list(prepared.graph.node[3].input) == [scatter.output[0], "base"]
    assert prepared.graph.node[3].output[0] == "out"


ERROR_CASES = [
    # (op, feed changes); the base feed is valid. Each error is the reference's message, prefixed with the op.
    (GATHER_OP, {"tiles": np.array([0, 8], np.int32)}),
    (GATHER_OP, {"tiles": np.array([-3, 1], np.int32)}),
    (SCATTER_OP, {"tiles": np.array([0, 8], np.int32)}),
    (SCATTER_OP, {"values": np.ones((2, 2, 2, 3))}),
    (SCATTER_OP, {"values": np.ones((3, 2, 2, 2))}),
    (SCATTER_OP, {"values": np.ones((2, 3, 2, 2))}),
    (SCATTER_OP, {"values": np.ones((2, 2, 3, 3))}),  # tile 3: one cell per image
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("op", "change"), ERROR_CASES)
def test_ort_custom_op_errors_raise_after_run(dtype: type, op: str, change: dict) -> None:
    # 2 images, 3x3, tile 2: ids 0..7.
    dense = np.arange(36, dtype=dtype).reshape(2, 2, 3, 3)
    if op == GATHER_OP:
        session = ort_ops.make_session(gather_model(dtype, 2, 1), threads=1)
        feed = {"dense": dense, "tiles": np.array([0, 7], np.int32)}
        check = functools.partial(reference.masked_gather, tile=2, halo=1)
    else:
        session = ort_ops.make_session(scatter_model(dtype), threads=1)
        feed = {"base": dense, "values": np.ones((2, 2, 2, 2), dtype), "tiles": np.array([0, 7], np.int32)}
        check = reference.masked_scatter
    (good,) = session.run(None, feed)
    assert_bit_equal(good, check(*feed.values()))
    bad = {**feed, **{k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in change.items()}}
    with pytest.raises(ValueError) as expected:
        check(*bad.values())
    with pytest.raises(ValueError, match="^" + op) as raised:
        session.run(None, bad)
    assert str(raised.value) == f"{op}: {expected.value}"
    (again,) = session.run(None, feed)  # errors do not stick to the session
    assert_bit_equal(again, good)


# ---------------------------------------------------------------- If subgraphs


def if_model(dtype: type) -> onnx.ModelProto:
    """An If whose branches each hold a gather and a scatter, the then-branch on an intermediate."""
    et = ONNX_TYPES[dtype]

    def out(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, et, [None] * 4)

    then_branch = helper.make_graph(
        [helper.make_node("Neg", ["dense"], ["negated"]),
         onnx_ops.make_gather_node("negated", "tiles2", "then_gathered", 2, 1, name="then_gather"),
         onnx_ops.make_scatter_node("negated", "values", "tiles2", "then_scattered", name="then_scatter")],
        "then", [], [out("then_gathered"), out("then_scattered")])
    else_branch = helper.make_graph(
        [onnx_ops.make_gather_node("dense", "tiles3", "else_gathered", 3, 2, name="else_gather"),
         onnx_ops.make_scatter_node("dense", "values", "tiles2", "else_scattered", name="else_scatter")],
        "else", [], [out("else_gathered"), out("else_scattered")])
    if_node = helper.make_node("If", ["cond"], ["gathered", "scattered"],
                               then_branch=then_branch, else_branch=else_branch)
    inputs = [
        helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        helper.make_tensor_value_info("dense", et, ["n", "c", "h", "w"]),
        helper.make_tensor_value_info("values", et, ["b", "c", 2, 2]),
        helper.make_tensor_value_info("tiles2", TensorProto.INT32, ["b"]),
        helper.make_tensor_value_info("tiles3", TensorProto.INT32, ["b3"]),
    ]
    graph = helper.make_graph([if_node], "branches", inputs, [out("gathered"), out("scattered")])
    return helper.make_model(graph, opset_imports=_opsets())


def if_expected(cond: bool, feed: dict) -> tuple[np.ndarray, np.ndarray]:
    dense, values, tiles2, tiles3 = feed["dense"], feed["values"], feed["tiles2"], feed["tiles3"]
    if cond:
        return reference.masked_gather(-dense, tiles2, 2, 1), reference.masked_scatter(-dense, values, tiles2)
    return reference.masked_gather(dense, tiles3, 3, 2), reference.masked_scatter(dense, values, tiles2)


def test_lowering_reaches_subgraphs() -> None:
    model = if_model(np.float32)
    assert onnx_ops.has_custom_ops(model)
    onnx.checker.check_model(model, full_check=True)
    lowered = onnx_ops.lower_to_standard_ops(model)
    assert not onnx_ops.has_custom_ops(lowered)
    assert DOMAIN not in {o.domain for o in lowered.opset_import}
    for attr in lowered.graph.node[0].attribute:
        assert all(node.domain == "" for node in attr.g.node) and len(attr.g.node) > 3
    onnx.checker.check_model(lowered, full_check=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_if_branches_match_reference(rng: np.random.Generator, backend: str, dtype: type) -> None:
    session = make_backend(backend, if_model(dtype))
    for n, h, w, b in ((1, 7, 5, 4), (2, 4, 9, 0), (2, 5, 5, 18)):
        feed = {
            "dense": rng.standard_normal((n, 3, h, w)).astype(dtype),
            "values": rng.standard_normal((b, 3, 2, 2)).astype(dtype),
            "tiles2": random_tiles(rng, b, n, h, w, 2),
            "tiles3": random_tiles(rng, b + 1, n, h, w, 3),
        }
        for cond in (True, False):
            gathered, scattered = session.run(None, {"cond": np.array(cond), **feed})
            expected_gathered, expected_scattered = if_expected(cond, feed)
            assert_bit_equal(gathered, expected_gathered)
            assert_bit_equal(scattered, expected_scattered)


def test_prepare_model_wraps_float16_nodes_in_branches() -> None:
    prepared = ort_ops.prepare_model(if_model(np.float16))
    for attr in prepared.graph.node[0].attribute:
        nodes = list(attr.g.node)
        produced_by = {out: node for node in nodes for out in node.output}
        custom = [node for node in nodes if node.domain == DOMAIN]
        assert len(custom) == 2
        for node in custom:
            slots = (0,) if node.op_type == GATHER_OP else (0, 1)
            for slot in slots:
                cast = produced_by[node.input[slot]]
                assert cast.op_type == "Cast" and helper.get_attribute_value(cast.attribute[0]) == TensorProto.FLOAT
            (back,) = [n for n in nodes if node.output[0] in n.input]
            assert back.op_type == "CastLike"
        assert {out.name for out in attr.g.output} <= set(produced_by)


# ---------------------------------------------------------------- torch -> ONNX export

TOY_TILE, TOY_HALO = 4, 1


class TileToy(torch.nn.Module):
    """Both ops with B from ``nonzero``: gather the chosen tiles with a halo, mix each
    centre with its up-left shifted copy (reads the halo), scatter the result back."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tiles = torch.nonzero(mask.reshape(-1) > 0.5).reshape(-1).to(torch.int32)
        windows = torch.ops.m2ae.masked_gather(x, tiles, TOY_TILE, TOY_HALO)
        t, h = TOY_TILE, TOY_HALO
        update = windows[:, :, h : h + t, h : h + t] * 2.0 + windows[:, :, :t, :t]
        return torch.ops.m2ae.masked_scatter(x, update, tiles)


def export_toy() -> onnx.ModelProto:
    torch_ops.register_onnx_symbolics(17)
    x = torch.randn(1, 3, 7, 9)
    mask = torch.tensor([[[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]]])  # [N, 1, rows, cols]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TileToy(), (x, mask), buffer, dynamo=False, opset_version=17,
            input_names=["x", "mask"], output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "mask": {0: "n", 2: "rows", 3: "cols"}},
        )
    return onnx.load_model_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def toy_model() -> onnx.ModelProto:
    return export_toy()


def test_export_writes_plugin_nodes(toy_model: onnx.ModelProto) -> None:
    custom = [n for n in toy_model.graph.node if n.domain == DOMAIN]
    assert sorted(n.op_type for n in custom) == [GATHER_OP, SCATTER_OP]
    assert any(n.op_type == "NonZero" for n in toy_model.graph.node)
    for node in custom:
        attrs = {a.name: a for a in node.attribute}
        assert attrs["plugin_version"].type == AttributeProto.STRING and attrs["plugin_version"].s == b"2"
        assert attrs["plugin_namespace"].type == AttributeProto.STRING and attrs["plugin_namespace"].s == b"m2ae"
        assert "accumulate" not in attrs
        if node.op_type == GATHER_OP:
            assert set(attrs) == {"tile", "halo", "plugin_version", "plugin_namespace"}
            assert (attrs["tile"].type, attrs["tile"].i) == (AttributeProto.INT, TOY_TILE)
            assert (attrs["halo"].type, attrs["halo"].i) == (AttributeProto.INT, TOY_HALO)
            assert len(node.input) == 2
        else:
            assert set(attrs) == {"plugin_version", "plugin_namespace"} and len(node.input) == 3
        onnx_ops.check_plugin_version(node)
    assert DOMAIN in {o.domain for o in toy_model.opset_import}


def toy_inputs(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two sizes (dynamic N, H, W; partial edge tiles), plus empty (B = 0) and full masks."""
    cases = []
    for n, h, w in ((1, 7, 9), (2, 9, 4)):
        x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
        rows, cols = grid_shape(h, w, TOY_TILE)
        for fill in (None, 0.0, 1.0):
            mask = rng.random((n, 1, rows, cols)) if fill is None else np.full((n, 1, rows, cols), fill)
            cases.append((x, mask.astype(np.float32)))
    return cases


def torch_toy(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return TileToy()(*as_torch(x, mask)).numpy()


def reference_toy(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    tiles = np.flatnonzero(mask.reshape(-1) > 0.5).astype(np.int32)
    windows = reference.masked_gather(x, tiles, TOY_TILE, TOY_HALO)
    t, h = TOY_TILE, TOY_HALO
    update = windows[:, :, h : h + t, h : h + t] * np.float32(2) + windows[:, :, :t, :t]
    return reference.masked_scatter(x, update, tiles)


def test_toy_torch_matches_reference(rng: np.random.Generator) -> None:
    for x, mask in toy_inputs(rng):
        expected = reference_toy(x, mask)
        assert_bit_equal(torch_toy(x, mask), expected)
        assert (not np.array_equal(expected, x)) == bool(mask.any())


@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_toy_runs(toy_model: onnx.ModelProto, rng: np.random.Generator, backend: str) -> None:
    session = make_backend(backend, toy_model)
    for x, mask in toy_inputs(rng):
        (got,) = session.run(None, {"x": x, "mask": mask})
        assert_bit_equal(got, reference_toy(x, mask))
