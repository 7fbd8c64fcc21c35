"""``m2ae check``: our exports pass the TensorRT rules; hand-built graphs with each
defect the rules know are flagged with the right severity; the command line's exit codes;
``m2ae build`` stops on errors before TensorRT parses anything; the rule tables agree
with the plugin sources and with ONNX."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from factories import EXPORTED_PRECISIONS, EXPORTED_VARIANTS, ExportedModels
from onnx import TensorProto, helper, numpy_helper

from m2ae.cli import main
from m2ae.errors import UserError
from m2ae.export import trt_builder
from m2ae.export import trt_rules as rules
from m2ae.export.trt_check import Finding, check_before_build, check_onnx
from m2ae.model_info import ModelInfo
from m2ae.trt_plugins import DOMAIN, GATHER_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION, SCATTER_OP

CSRC = Path(__file__).resolve().parents[1] / "trt_plugins" / "csrc"


# ---- our exports (the session's exported_models) -------------------------------------------


def test_export_reports_nothing_against_tensorrt(exported_models: ExportedModels) -> None:
    assert "m2ae export:" not in exported_models.stderr, exported_models.stderr


@pytest.mark.parametrize("tensorrt", ["10.3", "11"])
@pytest.mark.parametrize("precision", EXPORTED_PRECISIONS)
@pytest.mark.parametrize("variant", EXPORTED_VARIANTS)
def test_our_exports_pass(exported_models: ExportedModels, variant: str, precision: str, tensorrt: str) -> None:
    findings = check_onnx(exported_models.path(variant, precision), tensorrt)
    assert not [f for f in findings if f.severity != "info"], "\n".join(map(str, findings))
    # The pruned graphs' NonZero over the tile map is noted (data-dependent tile count).
    assert {f.rule for f in findings} <= {"data-dependent"}
    assert any(f.rule == "data-dependent" for f in findings) == (variant != "dense")


def test_cli_on_an_export_prints_one_line_per_finding_and_exits_0(
    exported_models: ExportedModels, capsys: pytest.CaptureFixture[str]
) -> None:
    path = exported_models.path("plugin", "int8")
    assert main(["check", str(path), "--tensorrt", "11"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines and all(re.match(r"^INFO \S+ \(NonZero\): .+ — .+$", line) for line in lines), out
    assert "0 error(s)" in err and "TensorRT 11" in err


# ---- hand-built defects --------------------------------------------------------------------


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: list[onnx.TensorProto] = (), opset: int = 19) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "defect", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)])


def _value(name: str, dtype: int = TensorProto.FLOAT, shape: list[int | str] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape if shape is not None else ["N", 4, 8, 8])


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _only(findings: list[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def _cumsum_model(inside_if: bool = False) -> onnx.ModelProto:
    cumsum = helper.make_node("CumSum", ["x", "axis"], ["y"], name="index_table")
    if not inside_if:
        return _model([cumsum], [_value("x")], [_value("y")], [_const("axis", np.array(1, np.int64))])
    branch = helper.make_graph([cumsum], "then", [], [_value("y")])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["z"], name="pass")], "else", [], [_value("z")])
    node = helper.make_node("If", ["cond"], ["out"], name="switch", then_branch=branch, else_branch=other)
    return _model([node], [_value("x"), _value("cond", TensorProto.BOOL, [])], [_value("out")],
                  [_const("axis", np.array(1, np.int64))])


@pytest.mark.parametrize("inside_if", [False, True])
def test_cumsum_is_slow_before_10_8_even_inside_an_if(inside_if: bool) -> None:
    model = _cumsum_model(inside_if)
    slow = _only(check_onnx(model, "10.3"), "slow-cumsum")
    assert [(f.severity, f.node, f.op_type) for f in slow] == [("warning", "index_table", "CumSum")]
    assert not _only(check_onnx(model, "10.8"), "slow-cumsum")
    assert not _only(check_onnx(model, "11"), "slow-cumsum")


def _qdq_conv(weight_axis: int = 0, bias_int32: bool = False, zero: int = 0, op: str = "Conv",
              scale_type: type = np.float16) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv/ConvTranspose(DQ(int8 weight)[, DQ(int32 bias)]) -> y."""
    float_type = TensorProto.FLOAT16 if scale_type is np.float16 else TensorProto.FLOAT
    weight_shape = (4, 4, 3, 3)
    channels = weight_shape[weight_axis]
    inits = [
        _const("x_scale", np.array(0.02, scale_type)), _const("x_zero", np.array(zero, np.int8)),
        _const("w", np.ones(weight_shape, np.int8)), _const("w_scale", np.full(channels, 0.01, scale_type)),
        _const("w_zero", np.zeros(channels, np.int8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="x_q"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="x_dq"),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], name="w_dq", axis=weight_axis),
    ]
    conv_inputs = ["xd", "wd"]
    if bias_int32:
        inits += [_const("b", np.ones(4, np.int32)), _const("b_scale", np.full(4, 2e-4, scale_type)),
                  _const("b_zero", np.zeros(4, np.int32))]
        nodes.append(helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zero"], ["bd"], name="bias_dq", axis=0))
        conv_inputs.append("bd")
    nodes.append(helper.make_node(op, conv_inputs, ["y"], name="layer", pads=[1, 1, 1, 1]))
    return _model(nodes, [_value("x", float_type)], [_value("y", float_type)], inits)


def test_well_formed_int8_conv_passes() -> None:
    for op, axis in (("Conv", 0), ("ConvTranspose", 1)):
        assert not [f for f in check_onnx(_qdq_conv(axis, op=op)) if f.severity != "info"], op


def test_weights_quantized_in_the_graph_count_as_constants() -> None:
    """QAT-style weights, float constant -> Q -> DQ, may be per channel (they are rooted at a constant)."""
    model = _qdq_conv()
    weights = {i.name: i for i in model.graph.initializer}
    weights["w"].CopyFrom(_const("w", np.ones((4, 4, 3, 3), np.float16)))
    quantize = helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["wq"], name="w_q", axis=0)
    model.graph.node.insert(0, quantize)
    next(n for n in model.graph.node if n.name == "w_dq").input[0] = "wq"
    assert not [f for f in check_onnx(model) if f.severity != "info"]


def test_int32_dequantize_is_an_error_on_every_version() -> None:
    for version in rules.TENSORRT_VERSIONS:
        found = _only(check_onnx(_qdq_conv(bias_int32=True), version), "dq-input")
        assert [(f.severity, f.node) for f in found] == [("error", "bias_dq")]
        assert "QuantizeBias" in found[0].fix


@pytest.mark.parametrize("op, wrong_axis", [("Conv", 1), ("ConvTranspose", 0)])
def test_weight_scales_off_the_output_channel_axis_are_errors(op: str, wrong_axis: int) -> None:
    found = _only(check_onnx(_qdq_conv(wrong_axis, op=op)), "weight-axis")
    assert [(f.severity, f.node) for f in found] == [("error", "w_dq")]
    assert f"axis {1 - wrong_axis}" in found[0].fix


@pytest.mark.parametrize("weight_is_a, axis, wrong", [(True, 1, True), (True, 0, False), (False, 0, True),
                                                      (False, 1, False)])
def test_matmul_weight_scales_must_lie_on_the_output_axis(weight_is_a: bool, axis: int, wrong: bool) -> None:
    """W @ X (W [M, K]: outputs on axis 0) and X @ W (W [K, N]: outputs on axis 1); K is summed."""
    weight = np.ones((6, 5), np.int8)
    inits = [_const("w", weight), _const("w_scale", np.full(weight.shape[axis], 0.01, np.float16)),
             _const("w_zero", np.zeros(weight.shape[axis], np.int8))]
    dq = helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], name="w_dq", axis=axis)
    matmul = helper.make_node("MatMul", ["wd", "x"] if weight_is_a else ["x", "wd"], ["y"], name="gemm")
    x_shape = [5, 3] if weight_is_a else [3, 6]
    model = _model([dq, matmul], [_value("x", TensorProto.FLOAT16, x_shape)],
                   [_value("y", TensorProto.FLOAT16, [6, 3] if weight_is_a else [3, 5])], inits)
    found = _only(check_onnx(model), "weight-axis")
    assert [(f.severity, f.node) for f in found] == ([("error", "w_dq")] if wrong else [])


def test_ort_default_quantization_is_caught(tmp_path: Path) -> None:
    """ONNX Runtime's quantize_static with its defaults (int32 biases) fails the check."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    inits = [_const("w", rng.standard_normal((4, 4, 3, 3)).astype(np.float32)), _const("b", np.ones(4, np.float32))]
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    source, target = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(_model([conv], [_value("x", shape=[1, 4, 8, 8])], [_value("y", shape=[1, 4, 8, 8])], inits, 17), source)
    feeds = iter([{"x": rng.random((1, 4, 8, 8), dtype=np.float32)} for _ in range(2)])
    reader = SimpleNamespace(get_next=lambda: next(feeds, None))
    quantize_static(source, target, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    findings = check_onnx(target)
    assert [f.severity for f in _only(findings, "dq-input")] == ["error"]
    assert [f.severity for f in _only(findings, "strong-typing")] == ["warning"]


def test_nonzero_zero_point_per_channel_activation_and_fp32_scales() -> None:
    assert [f.severity for f in _only(check_onnx(_qdq_conv(zero=3)), "zero-point")] == ["error", "error"]
    fp32 = _only(check_onnx(_qdq_conv(scale_type=np.float32), "11"), "strong-typing")
    assert [(f.severity, f.node) for f in fp32] == [("warning", "layer")]
    model = _qdq_conv()
    scale = next(i for i in model.graph.initializer if i.name == "x_scale")
    scale.CopyFrom(_const("x_scale", np.full(4, 0.02, np.float16)))
    for init in model.graph.initializer:
        if init.name == "x_zero":
            init.CopyFrom(_const("x_zero", np.zeros(4, np.int8)))
    found = _only(check_onnx(model), "per-channel-activation")
    assert [(f.severity, f.node) for f in found] == [("error", "x_q"), ("error", "x_dq")]


def test_mixed_float_inputs_are_an_error() -> None:
    add = helper.make_node("Add", ["a", "b"], ["c"], name="residual")
    model = _model([add], [_value("a"), _value("b", TensorProto.FLOAT16)], [_value("c")])
    found = _only(check_onnx(model), "strong-typing")
    assert [(f.severity, f.node, f.op_type) for f in found] == [("error", "residual", "Add")]
    # Inputs bound to different type parameters may differ: Resize's X (T1) and scales (float).
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear")
    model = _model([resize], [_value("x", TensorProto.FLOAT16)], [_value("y", TensorProto.FLOAT16)],
                   [_const("scales", np.array([1, 1, 2, 2], np.float32))])
    assert not _only(check_onnx(model), "strong-typing")


def _gather(**attrs: object) -> onnx.ModelProto:
    values = {"tile": 4, "halo": 1, "plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE, **attrs}
    node = helper.make_node(GATHER_OP, ["x", "tiles"], ["y"], name="gather", domain=DOMAIN,
                            **{k: v for k, v in values.items() if v is not None})
    return _model([node], [_value("x"), _value("tiles", TensorProto.INT32, ["B"])], [_value("y", shape=None)])


def test_plugin_node_against_the_creator_fields() -> None:
    assert not [f for f in check_onnx(_gather()) if f.severity != "info"]
    cases = [
        (dict(accumulate=1), "warning", "'accumulate' is not a field"),
        (dict(tile=None), "error", "no 'tile'"),
        (dict(tile=0), "error", "tile=0"),
        (dict(halo=1.5), "error", "halo is not one integer"),
        (dict(plugin_version="1"), "error", "plugin_version '1'"),
        (dict(plugin_version=None), "error", "no plugin_version"),
    ]
    for attrs, severity, text in cases:
        found = _only(check_onnx(_gather(**attrs)), "plugin")
        assert [(f.severity, f.node) for f in found] == [(severity, "gather")], (attrs, found)
        assert text in found[0].problem


def test_plugin_namespace_comes_from_the_domain_from_10_10() -> None:
    model = _gather(plugin_namespace=None)
    assert [f.severity for f in _only(check_onnx(model, "10.8"), "plugin")] == ["error"]
    assert not _only(check_onnx(model, "11"), "plugin")


def test_plugin_inputs_and_types() -> None:
    scatter = helper.make_node(SCATTER_OP, ["base", "values", "tiles"], ["y"], name="scatter", domain=DOMAIN,
                               plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE)
    model = _model([scatter], [_value("base"), _value("values", TensorProto.FLOAT16),
                               _value("tiles", TensorProto.INT64, ["B"])], [_value("y")])
    findings = check_onnx(model)
    assert [f.severity for f in _only(findings, "strong-typing")] == ["error"]  # FLOAT base, FLOAT16 values
    assert [f.problem for f in _only(findings, "plugin")] == ["tile ids are INT64; the plugin takes INT32"]


def test_zero_size_constants() -> None:
    empty = _const("empty", np.zeros((0,), np.int32))
    scatter = helper.make_node(SCATTER_OP, ["x", "v", "empty"], ["y"], name="scatter", domain=DOMAIN,
                               plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE)
    model = _model([scatter], [_value("x"), _value("v", shape=[0, 4, 4, 4])], [_value("y")], [empty])
    assert [(f.severity, f.node) for f in _only(check_onnx(model), "zero-size")] == [("error", "empty")]
    concat = helper.make_node("Concat", ["shape", "nothing"], ["joined"], name="join", axis=0)
    constant = helper.make_node("Constant", [], ["nothing"], name="nothing_const",
                                value=_const("v", np.zeros((0,), np.int64)))
    model = _model([constant, concat], [_value("shape", TensorProto.INT64, [2])],
                   [_value("joined", TensorProto.INT64, [2])])
    assert [(f.severity, f.node) for f in _only(check_onnx(model), "zero-size")] == [("warning", "nothing_const")]


def test_ops_by_version() -> None:
    stft = helper.make_node("STFT", ["signal", "step"], ["spectrum"], name="stft")
    model = _model([stft], [_value("signal", shape=[1, 64, 1])], [_value("spectrum", shape=None)],
                   [_const("step", np.array(8, np.int64))])
    found = _only(check_onnx(model, "10.3"), "op-version")
    assert [(f.severity, f.node) for f in found] == [("error", "stft")] and "10.5" in found[0].problem
    assert not _only(check_onnx(model, "10.8"), "op-version")
    unique = helper.make_node("Unique", ["x"], ["y"], name="unique")
    model = _model([unique], [_value("x", shape=[8])], [_value("y", shape=None)])
    for version in rules.TENSORRT_VERSIONS:
        assert [f.severity for f in _only(check_onnx(model, version), "op-unsupported")] == ["error"]


def test_attributes_and_dtypes() -> None:
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear", antialias=1)
    mod = helper.make_node("Mod", ["x", "x"], ["r"], name="mod")
    cast = helper.make_node("Cast", ["x"], ["s"], name="to_int16", to=TensorProto.INT16)
    relu = helper.make_node("LeakyRelu", ["i"], ["j"], name="int_relu")
    model = _model([resize, mod, cast, relu], [_value("x"), _value("i", TensorProto.INT32)],
                   [_value("y"), _value("r"), _value("s", TensorProto.INT16), _value("j", TensorProto.INT32)],
                   [_const("scales", np.array([1, 1, 2, 2], np.float32))])
    findings = check_onnx(model)
    assert {(f.severity, f.node, f.rule) for f in findings} == {
        ("error", "up", "attribute"), ("error", "mod", "attribute"), ("error", "to_int16", "cast-target"),
        ("error", "int_relu", "dtype"),
    }


def test_scatter_nd_reduction_attribute_by_version() -> None:
    scatter = helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], name="scatter", reduction="none")
    model = _model([scatter], [_value("x", shape=[8, 4]), _value("idx", TensorProto.INT64, [2, 1]),
                               _value("upd", shape=[2, 4])], [_value("y", shape=[8, 4])])
    assert [f.severity for f in _only(check_onnx(model, "10.3"), "attribute")] == ["error"]
    assert not _only(check_onnx(model, "11"), "attribute")


# ---- the command line and the builder ------------------------------------------------------


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean, broken = tmp_path / "clean.onnx", tmp_path / "broken.onnx"
    onnx.save(_qdq_conv(), clean)
    onnx.save(_qdq_conv(bias_int32=True), broken)
    assert main(["check", str(clean)]) == 0
    assert main(["check", str(broken), "--tensorrt", "11"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^ERROR bias_dq \(DequantizeLinear\): dequantizes INT32; .+ — .+$", out, re.M), out
    assert main(["check", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.onnx" in err and len(err.splitlines()) == 1
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert main(["check", str(tmp_path / "junk.onnx")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _image_model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    image = _value("image", shape=["N", 3, "H", "W"])
    return _model(nodes, [image], [_value("restored", shape=["N", 3, "H", "W"])], initializers, 17)


def test_build_stops_on_errors_before_tensorrt_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mixed.onnx"
    add = helper.make_node("Add", ["image", "offset"], ["restored"], name="mixed_add")
    model = _image_model([add], [_const("offset", np.zeros((1, 3, 1, 1), np.float16))])
    helper.set_model_props(model, ModelInfo(multiple=4, min_size=4).to_metadata())  # the builder takes only m2ae models
    onnx.save(model, path)
    monkeypatch.setattr(trt_builder, "require_tensorrt", lambda platform=None: SimpleNamespace(__version__="10.3.0.26"))
    monkeypatch.setattr(trt_builder, "require_gpu", lambda platform: None)

    def no_parsing(*args: object) -> None:
        raise AssertionError("TensorRT work started despite the check's errors")

    monkeypatch.setattr(trt_builder, "_load_plugin", no_parsing)
    config = trt_builder.BuildConfig(onnx=path, cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="would not build on TensorRT 10.3.0.26.*mixed_add"):
        trt_builder.build_engine(config, trt_builder.detect_platform())


def test_check_before_build_returns_the_warnings(tmp_path: Path) -> None:
    path = tmp_path / "cumsum.onnx"
    cumsum = helper.make_node("CumSum", ["image", "axis"], ["restored"], name="index_table")
    onnx.save(_image_model([cumsum], [_const("axis", np.array(1, np.int64))]), path)
    assert [f.rule for f in check_before_build(path, "10.3.0.26")] == ["slow-cumsum"]
    assert check_before_build(path, "11.1.0") == []


# ---- the tables ----------------------------------------------------------------------------


def test_installed_versions_map_to_the_newest_rules_not_newer() -> None:
    assert [rules.for_installed(v) for v in ("10.0.1", "10.3.0.26", "10.7.0", "10.8.0.43", "10.16.1", "11.1.0")] == [
        "10.3", "10.3", "10.3", "10.8", "10.8", "11"]


def test_element_type_codes_are_onnx_s() -> None:
    for member in rules.ElemType:
        assert getattr(TensorProto, member.name) == member.value


def test_every_rule_cites_known_sources() -> None:
    for name, rule in rules.RULES.items():
        assert rule.sources and set(rule.sources) <= set(rules.SOURCES), name


def test_plugin_fields_mirror_the_creators() -> None:
    """PLUGIN_FIELDS is what the C++ creators register (kAttributes), and the version matches."""
    for op, header in ((GATHER_OP, "masked_gather_plugin.h"), (SCATTER_OP, "masked_scatter_plugin.h")):
        text = (CSRC / header).read_text()
        declared = re.search(r"kAttributes\{\{?(.*?)\}?\};", text, re.S)
        assert declared is not None, header
        fields = re.findall(r'\{"(\w+)",\s*(-?\d+),\s*[^,]+,\s*(true|false)', declared.group(1))
        assert [(n, int(lo), req == "true") for n, lo, req in fields] == [
            (f.name, f.minimum, f.required) for f in rules.PLUGIN_FIELDS[op]], header
    common = (CSRC / "plugin_common.h").read_text()
    assert f'kPluginVersion = "{PLUGIN_VERSION}"' in common
    assert f'kPluginNamespace = "{PLUGIN_NAMESPACE}"' in common
