"""``m2ae export``: files, ONNX contract (opset, checker, metadata, plugin nodes, dynamic
shapes, precisions) and parity of every fp32 variant with PyTorch; fp16/int8 fidelity.

The session's ``exported_models`` (one random-weight checkpoint, every variant x
precision, with and without a mask input) are shared by every test.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from factories import SMALL_CONFIG, ExportedModels
from onnx import TensorProto, numpy_helper

import m2ae.model.checkpoint as checkpoint_module
from m2ae.cli import main
from m2ae.errors import UserError
from m2ae.export.onnx_export import ExportConfig, export_models, model_filename
from m2ae.export.precision import INT8_OPSET
from m2ae.model.checkpoint import load_checkpoint
from m2ae.model.config import M2AEConfig
from m2ae.model.network import M2AENet
from m2ae.model.pruned import DenseGraph, PrunedM2AE, PruningOptions
from m2ae.runtime.onnx_engine import OnnxRuntimeEngine
from m2ae.trt_plugins import DOMAIN, GATHER_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION, SCATTER_OP
from m2ae.trt_plugins.onnx_ops import all_graphs

CONFIG = SMALL_CONFIG
VARIANTS = ("plugin", "portable", "dense")
PRECISIONS = ("fp32", "fp16", "int8")
MASKIN_PRECISIONS = ("fp32", "fp16", "int8")
TOL = 1e-4
#: thresholds for a random-weight tiny model against its own fp32 export
FP16_MIN_PSNR, FP16_MAX_FLIP = 40.0, 0.01
# int8 measured 45.1 dB (synthetic) and 51.0 dB (noise) worst case, no flips: 5 dB of headroom
INT8_MIN_PSNR, INT8_MAX_FLIP = 40.0, 0.02


class Exported:
    def __init__(self, models: ExportedModels) -> None:
        self.checkpoint = models.checkpoint
        self.out = models.out
        self.model = models.model()
        self._engines: dict[str, OnnxRuntimeEngine] = {}

    def path(self, variant: str, precision: str, mask_input: bool = False) -> Path:
        return self.out / model_filename(variant, precision, mask_input)

    def engine(self, variant: str, precision: str, mask_input: bool = False) -> OnnxRuntimeEngine:
        key = model_filename(variant, precision, mask_input)
        if key not in self._engines:
            self._engines[key] = OnnxRuntimeEngine(self.path(variant, precision, mask_input), threads=1)
        return self._engines[key]


@pytest.fixture(scope="module")
def exported(exported_models: ExportedModels) -> Exported:
    return Exported(exported_models)


def all_models() -> list[tuple[str, str, bool]]:
    return [(v, p, False) for v in VARIANTS for p in PRECISIONS] + [(v, p, True) for v in VARIANTS for p in MASKIN_PRECISIONS]


def model_id(case: tuple[str, str, bool]) -> str:
    return model_filename(*case)[: -len(".onnx")]


def images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, height, width), dtype=np.float32)


def masks(n: int, height: int, width: int, fraction: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 1, height, width)) < fraction).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


# ---- files, checker, metadata ------------------------------------------------------------


def test_export_writes_every_requested_file(exported: Exported) -> None:
    expected = {model_filename(*case) for case in all_models()}
    assert {p.name for p in exported.out.iterdir()} == expected
    assert not list(exported.out.glob("*.tmp")) and not list(exported.out.glob(".*"))


def test_export_takes_a_loaded_checkpoint(exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An orchestrator loads once: handed the loaded checkpoint, the export reads no file
    and writes what the export from the path wrote."""
    loaded = load_checkpoint(exported.checkpoint)
    with pytest.raises(UserError, match="not 'tiny'"):
        load_checkpoint(loaded, expect_preset="tiny")

    def no_second_read(path: object) -> None:
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(checkpoint_module, "read_checkpoint", no_second_read)
    (written,) = export_models(ExportConfig(checkpoint=loaded, out=tmp_path, variants=("dense",), progress=False))
    assert written.path.read_bytes() == exported.path("dense", "fp32").read_bytes()


@pytest.mark.parametrize("case", all_models(), ids=model_id)
def test_model_checker_opset_and_metadata(exported: Exported, case: tuple[str, str, bool]) -> None:
    variant, precision, mask_input = case
    path = exported.path(*case)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets.get("", opsets.get("ai.onnx", 0)) >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["m2ae.preset"] == CONFIG.preset
    assert float(meta["m2ae.threshold"]) == CONFIG.threshold
    assert int(meta["m2ae.opset"]) >= 17
    assert meta["m2ae.checkpoint_sha256"] == hashlib.sha256(exported.checkpoint.read_bytes()).hexdigest()
    assert meta["m2ae.variant"] == variant
    assert meta["m2ae.precision"] == precision
    assert int(meta["m2ae.multiple"]) == CONFIG.multiple
    assert int(meta["m2ae.min_size"]) == CONFIG.min_size
    assert meta["m2ae.mask_input"] == ("1" if mask_input else "0")
    inputs = [i.name for i in model.graph.input]
    assert inputs == (["image", "mask"] if mask_input else ["image"])
    assert [o.name for o in model.graph.output] == ["restored", "blur_mask"]
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT, f"{value.name} must stay float32"
        dims = value.type.tensor_type.shape.dim
        assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3])), f"{value.name}: N, H, W dynamic"
        assert dims[1].dim_value == (1 if value.name in ("mask", "blur_mask") else 3)


def _all_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for g in all_graphs(model.graph) for n in g.node]


def _all_initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for g in all_graphs(model.graph) for i in g.initializer}


def _custom_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in _all_nodes(model) if n.domain == DOMAIN]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_plugin_nodes_follow_the_contract(exported: Exported, precision: str) -> None:
    model = onnx.load(exported.path("plugin", precision))
    nodes = _custom_nodes(model)
    assert {n.op_type for n in nodes} == {GATHER_OP, SCATTER_OP}
    assert {o.domain: o.version for o in model.opset_import}.get(DOMAIN) == 1
    for node in nodes:
        attrs = {a.name: a for a in node.attribute}
        for name, value in (("plugin_version", PLUGIN_VERSION), ("plugin_namespace", PLUGIN_NAMESPACE)):
            assert attrs[name].type == onnx.AttributeProto.STRING, f"{node.name}: {name} must be a string"
            assert attrs[name].s.decode() == value
        if node.op_type == SCATTER_OP:
            assert set(attrs) == {"plugin_version", "plugin_namespace"}
            assert len(node.input) == 3
        else:
            assert set(attrs) == {"plugin_version", "plugin_namespace", "tile", "halo"}
            assert attrs["tile"].type == attrs["halo"].type == onnx.AttributeProto.INT
            assert attrs["tile"].i >= 1 and attrs["halo"].i >= 0
            assert len(node.input) == 2
    # Custom ops live in the tiled branch only; the top level holds the head and the switch.
    assert not [n for n in model.graph.node if n.domain == DOMAIN]
    metadata = {p.key: p.value for p in model.metadata_props}
    default = PruningOptions().resolve(CONFIG.preset)
    assert metadata["m2ae.tiles"] == ",".join(str(default.tile(s)) for s in range(CONFIG.num_scales))
    assert float(metadata["m2ae.dense_above"]) == default.dense_above
    assert int(metadata["m2ae.blocks_per_gather"]) == default.blocks_per_gather


@pytest.mark.parametrize("variant", ["plugin", "portable"])
def test_pruned_graph_skips_all_sharp_frames_and_switches_to_dense(exported: Exported, variant: str) -> None:
    """The composed graph: an ``If`` on any blurred pixel around an ``If`` on tile occupancy;
    no index table uses CumSum and no constant is empty."""
    model = onnx.load(exported.path(variant, "fp32", True))
    ifs = [n for n in model.graph.node if n.op_type == "If"]
    assert len(ifs) == 1 and ifs[0].output[0] == "restored"
    branches = {a.name: a.g for a in ifs[0].attribute}
    assert [n.op_type for n in branches["else_branch"].node] == ["Identity"]
    assert branches["else_branch"].node[0].input[0] == "image"
    inner = [n for n in branches["then_branch"].node if n.op_type == "If"]
    assert len(inner) == 1
    conv_counts = {a.name: sum(n.op_type == "Conv" for g in all_graphs(a.g) for n in g.node) for a in inner[0].attribute}
    assert conv_counts["then_branch"] > 0 and conv_counts["else_branch"] > 0
    nodes = _all_nodes(model)
    assert not [n for n in nodes if n.op_type == "CumSum"]
    assert not [i.name for i in _all_initializers(model).values() if 0 in i.dims]
    for node in nodes:
        if node.op_type == "Constant":
            assert 0 not in node.attribute[0].t.dims, f"{node.name} is an empty constant"


@pytest.mark.parametrize("case", [c for c in all_models() if c[0] != "plugin"], ids=model_id)
def test_portable_and_dense_have_no_custom_nodes(exported: Exported, case: tuple[str, str, bool]) -> None:
    model = onnx.load(exported.path(*case))
    assert not _custom_nodes(model)
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)


# ---- precisions --------------------------------------------------------------------------


def _mask_head_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in _all_nodes(model) if "/mask_head/" in n.name or n.op_type == "Softmax"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_fp16_keeps_mask_head_fp32(exported: Exported, variant: str) -> None:
    model = onnx.load(exported.path(variant, "fp16"))
    inits = _all_initializers(model)
    fp16_weights = [i for i in inits.values() if i.data_type == TensorProto.FLOAT16 and len(i.dims) == 4]
    assert fp16_weights, "the body's conv weights should be float16"
    head = _mask_head_nodes(model)
    assert any(n.op_type == "Softmax" for n in head) and any(n.op_type == "Conv" for n in head)
    for node in head:
        if node.op_type == "Conv":
            for name in node.input[1:]:
                assert inits[name].data_type == TensorProto.FLOAT, f"{node.name}: {name} must stay float32"
    # No value on the mask path is rounded to float16 on its way in (Cast chains included).
    producer = {out: n for n in _all_nodes(model) for out in n.output}
    for node in head + [n for n in model.graph.node if n.op_type == "Greater"]:
        for name in node.input:
            source = producer.get(name)
            while source is not None and source.op_type == "Cast":
                to = next(a.i for a in source.attribute if a.name == "to")
                assert to != TensorProto.FLOAT16, f"{node.name} reads {name}, rounded to float16 by {source.name}"
                source = producer.get(source.input[0])
            if name in inits:
                assert inits[name].data_type != TensorProto.FLOAT16, f"{node.name} reads float16 {name}"
    # Value types: shape inference over the graph (custom ops are opaque to it, so plugin
    # graphs are checked on their mask head only, which sits before any custom op).
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for node in head:
        if node.op_type in ("Conv", "LeakyRelu", "Resize", "Softmax"):
            for out in node.output:
                assert types.get(out) == TensorProto.FLOAT, f"{node.name} ({node.op_type}) output {out} must be float32"


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    init = _all_initializers(model).get(name)
    if init is not None:
        return numpy_helper.to_array(init)
    for node in _all_nodes(model):
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


@pytest.mark.parametrize("case", [(v, "int8", m) for v in VARIANTS for m in (False, True)], ids=model_id)
def test_int8_is_symmetric_qdq_on_the_fp16_graph(exported: Exported, case: tuple[str, str, bool]) -> None:
    """What TensorRT runs as int8 layers: int8 Q/DQ in front of Conv/ConvTranspose only,
    weights per output channel, activations per tensor, zero points 0, float16 scales,
    biases and all other layers float16; the mask head stays float32 and unquantized."""
    model = onnx.load(exported.path(*case))
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets.get("", opsets.get("ai.onnx", 0)) >= INT8_OPSET, "float16 Q/DQ scales need opset 19"
    nodes = _all_nodes(model)
    inits = _all_initializers(model)
    producer = {out: n for n in nodes for out in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    q = [n for n in nodes if n.op_type == "QuantizeLinear"]
    dq = [n for n in nodes if n.op_type == "DequantizeLinear"]
    assert q and dq
    for node in q + dq:
        assert len(node.input) == 3, f"{node.name}: zero point must be explicit"
        zero_point, scale = _initializer(model, node.input[2]), _initializer(model, node.input[1])
        assert zero_point is not None and zero_point.dtype == np.int8, f"{node.name}: int8 zero point"
        assert not zero_point.any(), f"{node.name}: symmetric quantisation has zero point 0"
        assert scale is not None and scale.dtype == np.float16 and (scale > 0).all(), f"{node.name}: float16 scale"
    for node in dq:
        data = _initializer(model, node.input[0])
        # Only weights are stored quantized, as int8: no int32 (quantized bias) anywhere.
        assert data is None or data.dtype == np.int8, f"{node.name} dequantizes {data.dtype}"
        fused = {r.op_type for r in readers[node.output[0]]} <= {"Conv", "ConvTranspose"}
        assert fused, f"{node.name}: Q/DQ feeds a layer TensorRT does not fuse it into"
    head = {n.name for n in _mask_head_nodes(model)}
    quantized = 0
    for node in nodes:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        if node.name in head:
            weight = _initializer(model, node.input[1])
            assert weight is not None and weight.dtype == np.float32, f"{node.name} must keep fp32 weights"
            source = producer.get(node.input[0])
            assert source is None or source.op_type != "DequantizeLinear", f"{node.name} reads a quantised input"
            continue
        quantized += 1
        act, weight_dq = producer[node.input[0]], producer[node.input[1]]
        assert act.op_type == weight_dq.op_type == "DequantizeLinear", f"{node.name}: input and weight both quantized"
        assert _initializer(model, act.input[1]).size == 1, f"{node.name}: activations per tensor"
        weight = _initializer(model, weight_dq.input[0])
        scale = _initializer(model, weight_dq.input[1])
        axis = {a.name: a.i for a in weight_dq.attribute}.get("axis", 1)
        # Output channels: Conv weights are [C_out, C_in, k, k], ConvTranspose weights [C_in, C_out, k, k].
        assert axis == (0 if node.op_type == "Conv" else 1), f"{node.name}: weight scales on axis {axis}"
        assert scale.shape == (weight.shape[axis],), f"{node.name}: one weight scale per output channel"
        if len(node.input) > 2:
            bias = inits.get(node.input[2])
            assert bias is not None and bias.data_type == TensorProto.FLOAT16, f"{node.name}: float16 bias, not quantized"
    assert quantized, "no int8 layer"
    # The image reaches the output (sharp pixels) unquantised: only convs read its Q/DQ copy.
    quantized_image = {n.output[0] for n in dq if producer.get(n.input[0]) is not None
                       and producer[n.input[0]].input[0] == "image"}
    for node in nodes:
        if node.op_type not in ("Conv", "ConvTranspose"):
            assert not quantized_image & set(node.input), f"{node.name} ({node.op_type}) reads the quantised image"


# ---- running the exports -----------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_dynamic_shapes_and_batch(exported: Exported, variant: str) -> None:
    engine = exported.engine(variant, "fp32")
    for n, height, width in ((1, 32, 32), (2, 36, 44), (1, 24, 60)):
        out = engine.infer(images(n, height, width, seed=height))
        assert out.restored.shape == (n, 3, height, width)
        assert out.mask.shape == (n, 1, height, width)
        assert np.isfinite(out.restored).all()
        assert set(np.unique(out.mask)) <= {0.0, 1.0}


def _torch_references(exported: Exported, image: np.ndarray, mask: np.ndarray | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    x = torch.from_numpy(image)
    m = None if mask is None else torch.from_numpy(mask)
    with torch.no_grad():
        dense = DenseGraph(exported.model)(x, m)
        pruned = PrunedM2AE(exported.model)(x, m)
    return [("torch dense", *(t.numpy() for t in dense)), ("torch pruned", *(t.numpy() for t in pruned))]


PARITY_CASES = [(1, 32, 32, 0.1), (2, 36, 44, 0.3), (1, 28, 52, 1.0), (2, 32, 40, 0.0)]


@pytest.mark.parametrize("n, height, width, fraction", PARITY_CASES)
def test_fp32_parity_given_mask(exported: Exported, n: int, height: int, width: int, fraction: float) -> None:
    image = images(n, height, width, seed=n * height + width)
    mask = masks(n, height, width, fraction, seed=width)
    if n == 2 and fraction == 0.0:
        mask[1] = 1.0  # one image empty, the other full
    results = _torch_references(exported, image, mask)
    results += [(f"ORT {v}", *vars(exported.engine(v, "fp32", True).infer(image, mask)).values()) for v in VARIANTS]
    reference = results[0][1]
    for name, restored, used in results:
        np.testing.assert_array_equal(used, mask, err_msg=name)
        diff = np.abs(restored - reference).max()
        assert diff <= TOL, f"{name}: max abs {diff} vs torch dense"
        sharp = np.broadcast_to(mask == 0, image.shape)
        np.testing.assert_array_equal(restored[sharp], image[sharp], err_msg=f"{name}: sharp pixels must pass through")


@pytest.mark.parametrize("n, height, width", [(1, 32, 32), (2, 36, 44)])
def test_fp32_parity_predicted_mask(exported: Exported, n: int, height: int, width: int) -> None:
    image = images(n, height, width, seed=99 + height)
    results = _torch_references(exported, image, None)
    results += [(f"ORT {v}", *vars(exported.engine(v, "fp32").infer(image)).values()) for v in VARIANTS]
    _, reference, ref_mask = results[0]
    assert 0.05 < ref_mask.mean() < 0.95, "the predicted mask should be partial for this test to mean much"
    for name, restored, mask in results:
        np.testing.assert_array_equal(mask, ref_mask, err_msg=name)
        diff = np.abs(restored - reference).max()
        assert diff <= TOL, f"{name}: max abs {diff} vs torch dense"


def _export_fp32_fp16(config: M2AEConfig, tmp_path: Path) -> M2AENet:
    """A perturbed model of ``config``, saved and exported (fp32 and fp16, every variant)
    to ``tmp_path / "onnx"``; returns the model."""
    from factories import one_torch_thread, perturbed_model

    from m2ae.model.checkpoint import save_checkpoint

    model = perturbed_model(config, seed=3)
    checkpoint = save_checkpoint(tmp_path / "model.pt", {"config": config.to_dict(), "step": 1, "model": model.state_dict()})
    with one_torch_thread():
        export_models(ExportConfig(checkpoint=checkpoint, out=tmp_path / "onnx", precisions=("fp32", "fp16"),
                                   progress=False))
    return model


@pytest.mark.slow
def test_conv_mask_head_exports_exactly(tmp_path: Path) -> None:
    """The conv mask head (``mask_stem="conv"``, a context level) through every variant:
    fp32 ONNX Runtime against torch, mask and restored image; fp16 keeps it float32."""
    from m2ae.model.heads import ConvMaskHead

    model = _export_fp32_fp16(dataclasses.replace(SMALL_CONFIG, mask_stem="conv", mask_context=1), tmp_path)
    assert isinstance(model.mask_head, ConvMaskHead)
    image = images(2, 32, 48, seed=5)
    with torch.no_grad():
        ref_restored, ref_mask = (t.numpy() for t in DenseGraph(model)(torch.from_numpy(image), None))
    assert 0.05 < ref_mask.mean() < 0.95, "the predicted mask should be partial for this test to mean much"
    for variant in VARIANTS:
        out = OnnxRuntimeEngine(tmp_path / "onnx" / model_filename(variant, "fp32", False), threads=1).infer(image)
        np.testing.assert_array_equal(out.mask, ref_mask, err_msg=variant)
        assert np.abs(out.restored - ref_restored).max() <= TOL, variant
        fp16 = onnx.load(tmp_path / "onnx" / model_filename(variant, "fp16", False))
        inits = _all_initializers(fp16)
        head_convs = [n for n in _mask_head_nodes(fp16) if n.op_type == "Conv"]
        assert len(head_convs) >= 7, variant
        for node in head_convs:
            assert all(inits[name].data_type == TensorProto.FLOAT for name in node.input[1:]), node.name


@pytest.mark.slow
def test_mask_opening_exports_exactly(tmp_path: Path) -> None:
    """``mask_opening`` in every variant's mask graph: fp32 and fp16 ONNX Runtime masks equal
    torch's, and the opening removes marks the plain mask has; the metadata records it."""
    from m2ae.model_info import ModelInfo

    config = dataclasses.replace(SMALL_CONFIG, mask_opening=1)
    model = _export_fp32_fp16(config, tmp_path)
    image = images(2, 32, 48, seed=5)
    with torch.no_grad():
        ref_restored, ref_mask = (t.numpy() for t in DenseGraph(model)(torch.from_numpy(image), None))
        model.config = dataclasses.replace(config, mask_opening=0)
        _, plain_mask = (t.numpy() for t in DenseGraph(model)(torch.from_numpy(image), None))
    assert 0 < ref_mask.sum() < plain_mask.sum(), "the opening should remove some marks for this test to mean much"
    for variant in VARIANTS:
        for precision in ("fp32", "fp16"):
            path = tmp_path / "onnx" / model_filename(variant, precision, False)
            out = OnnxRuntimeEngine(path, threads=1).infer(image)
            np.testing.assert_array_equal(out.mask, ref_mask, err_msg=f"{variant} {precision}")
            if precision == "fp32":
                assert np.abs(out.restored - ref_restored).max() <= TOL, variant
            assert ModelInfo.from_onnx(onnx.load(path), path).mask_opening == 1


def synthetic_images(count: int, size: int) -> np.ndarray:
    """Held-out synthetic blurred images: the distribution int8 calibration sees."""
    from m2ae.model.data.synthetic import SyntheticConfig, make_sample

    config = SyntheticConfig(size=size, split="heldout")
    return np.stack([make_sample(config, 11 + i).blurred for i in range(count)]).astype(np.float32)


def _fidelity(exported: Exported, variant: str, precision: str, batches: list[np.ndarray]) -> tuple[float, float]:
    """(worst PSNR of restored, worst mask flip rate) of ``precision`` against fp32, same variant."""
    psnrs, flips = [], []
    for image in batches:
        ref = exported.engine(variant, "fp32").infer(image)
        out = exported.engine(variant, precision).infer(image)
        assert out.restored.dtype == np.float32 and out.mask.dtype == np.float32
        psnrs.append(psnr(out.restored, ref.restored))
        flips.append(float(np.mean(out.mask != ref.mask)))
    return min(psnrs), max(flips)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "precision, min_psnr, max_flip", [("fp16", FP16_MIN_PSNR, FP16_MAX_FLIP), ("int8", INT8_MIN_PSNR, INT8_MAX_FLIP)]
)
@pytest.mark.parametrize("inputs", ["synthetic", "noise"])
def test_reduced_precision_fidelity(exported: Exported, variant: str, precision: str, min_psnr: float,
                                    max_flip: float, inputs: str) -> None:
    if inputs == "synthetic":
        batches = [synthetic_images(2, 64), synthetic_images(2, 48)]
    else:  # uniform noise: far from the calibration images, the hard case for int8
        batches = [images(2, h, w, seed=500 + h) for h, w in ((32, 32), (40, 48), (64, 64))]
    worst_psnr, worst_flip = _fidelity(exported, variant, precision, batches)
    print(f"{variant} {precision} {inputs}: worst PSNR {worst_psnr:.2f} dB, worst mask flip rate {100 * worst_flip:.3f}%")
    assert worst_psnr >= min_psnr
    assert worst_flip <= max_flip


def test_reduced_precision_with_mask_input(exported: Exported) -> None:
    """Given masks: int8 keeps the mask exactly and sharp pixels bit for bit."""
    image = images(2, 36, 44, seed=3)
    mask = masks(2, 36, 44, 0.3, seed=4)
    for variant in VARIANTS:
        ref = exported.engine(variant, "fp32", True).infer(image, mask)
        out = exported.engine(variant, "int8", True).infer(image, mask)
        np.testing.assert_array_equal(out.mask, mask)
        sharp = np.broadcast_to(mask == 0, image.shape)
        np.testing.assert_array_equal(out.restored[sharp], image[sharp])
        assert psnr(out.restored, ref.restored) >= INT8_MIN_PSNR


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_returns_sharp_pixels_bit_for_bit(exported: Exported, precision: str) -> None:
    """A mask small enough for the tiled body (one 32x32 tile in four), and one that takes
    the dense body: the float16 body rounds the image it reads, yet every sharp pixel
    comes out as it went in, in every variant."""
    image = images(2, 64, 64, seed=11)
    small = np.zeros((2, 1, 64, 64), dtype=np.float32)
    small[0, :, 10:16, 12:20] = small[1, :, 40:44, 50:53] = 1.0
    for mask in (small, masks(2, 64, 64, 0.3, seed=12)):
        sharp = np.broadcast_to(mask == 0, image.shape)
        for variant in VARIANTS:
            out = exported.engine(variant, precision, True).infer(image, mask)
            np.testing.assert_array_equal(out.restored[sharp], image[sharp])
            assert not np.array_equal(out.restored, image), f"{variant}: the masked pixels should change"
    rounded = image.astype(np.float16).astype(np.float32)
    assert not np.array_equal(rounded[sharp], image[sharp]), "the test image must not be float16-exact"


# ---- user mistakes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--variants", "plugin,fancy"], "--variants"),
        (["--precision", "fp8"], "--precision"),
        (["--opset", "16"], "--opset"),
        # Slow: the calibration folder is only read after the fp32 graphs are traced.
        pytest.param(["--precision", "int8", "--calib", "no/such/folder"], "--calib", marks=pytest.mark.slow),
    ],
)
def test_export_rejects_bad_options(exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    extra: list[str], needle: str) -> None:
    out = tmp_path / "out"
    code = main(["export", "--checkpoint", str(exported.checkpoint), "--out", str(out), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_export_rejects_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"definitely not a torch file")
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(bad), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
