"""Engine builder: cache keys, sidecars, profiles, platform detection, the build CLI.

Everything but the last section runs without TensorRT. The last section builds real
engines and runs only where TensorRT and an NVIDIA GPU are present.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from factories import one_torch_thread
from onnx import TensorProto, helper

from m2ae import cli
from m2ae.cli_args import parse_size
from m2ae.engine_sidecar import EngineKey, Profile, Sidecar, cache_key, sidecar_path
from m2ae.errors import UserError
from m2ae.export import commands as export_commands
from m2ae.export.engine_cache import (
    CACHE_DIR_ENV,
    EngineCache,
    complete_profile,
    default_cache_dir,
    validate_profile,
)
from m2ae.export.trt_builder import (
    BuildConfig,
    _write_engine,
    build_defaults,
    build_engine,
    check_dla_request,
    input_profile_shapes,
    read_onnx_info,
    strongly_typed_for,
)
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK, OUTPUT_MASK, OUTPUT_RESTORED
from m2ae.platform_info import (
    DESKTOP_INSTALL,
    PlatformInfo,
    detect_platform,
    is_jetson,
    jetson_model,
    require_gpu,
    require_tensorrt,
    tensorrt_unavailable,
)
from m2ae.trt_plugins import DOMAIN, PLUGIN_NAMESPACE, PLUGIN_VERSION
from m2ae.trt_plugins.onnx_ops import all_graphs

PLATFORM = detect_platform()
HAS_TENSORRT = PLATFORM.tensorrt_version is not None
CANNOT_BUILD = tensorrt_unavailable(PLATFORM, running=False)
needs_trt_gpu = pytest.mark.skipif(CANNOT_BUILD is not None, reason=f"needs TensorRT and an NVIDIA GPU: {CANNOT_BUILD}")


def desktop(**changes) -> PlatformInfo:
    base = PlatformInfo(
        tensorrt_version="10.3.0",
        cuda_driver_version="12.6",
        cuda_runtime_version="12.6",
        gpu_name="NVIDIA GeForce RTX 4090",
        compute_capability="8.9",
        is_jetson=False,
        jetson_model=None,
        unified_memory=False,
    )
    return dataclasses.replace(base, **changes)


def jetson(model: str) -> PlatformInfo:
    name = {"orin": "Orin", "thor": "NVIDIA Thor"}[model]
    cc = {"orin": "8.7", "thor": "11.0"}[model]
    return desktop(gpu_name=name, compute_capability=cc, is_jetson=True, jetson_model=model, unified_memory=True)


def make_key(**changes) -> EngineKey:
    key = EngineKey(
        onnx_sha256="a" * 64,
        tensorrt_version="10.3.0",
        gpu_name="Orin",
        compute_capability="8.7",
        plugin_sha256="b" * 64,
        profile=Profile(min=(256, 256), opt=(512, 512), max=(1024, 1024)),
    )
    return dataclasses.replace(key, **changes)


def tiny_onnx(
    path: Path,
    multiple: int | None = 8,
    m2ae_node: bool = False,
    hw: tuple = ("H", "W"),
    precision: str = "fp32",
    min_size: int | str | None = None,
    **metadata: str,
) -> Path:
    """restored = 0.5 * image + 0.25, blur_mask = mean over channels > 0.5 (standard ops);
    ``metadata``: more m2ae.* entries, ``mask_input="1"`` for ``m2ae.mask_input``."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *hw])
    restored = helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["N", 3, *hw])
    mask = helper.make_tensor_value_info("blur_mask", TensorProto.FLOAT, ["N", 1, *hw])
    consts = [
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("quarter", TensorProto.FLOAT, [], [0.25]),
    ]
    nodes = [
        helper.make_node("Mul", ["image", "half"], ["scaled"]),
        helper.make_node("Add", ["scaled", "quarter"], ["restored"]),
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Greater", ["mean", "half"], ["blurred"]),
        helper.make_node("Cast", ["blurred"], ["blur_mask"], to=TensorProto.FLOAT),
    ]
    opsets = [helper.make_opsetid("", 17)]
    if m2ae_node:
        nodes.append(
            helper.make_node(
                "MaskedGather", ["image", "tok", "tab"], ["unused"], domain="m2ae",
                plugin_version="1", plugin_namespace="m2ae",
            )
        )
        opsets.append(helper.make_opsetid("m2ae", 1))
    graph = helper.make_graph(nodes, "tiny", [image], [restored, mask], initializer=consts)
    model = helper.make_model(graph, opset_imports=opsets)
    if multiple is not None:
        props = {"m2ae.multiple": str(multiple), "m2ae.precision": precision}
        if min_size is not None:
            props["m2ae.min_size"] = str(min_size)
        props.update({f"m2ae.{key}": value for key, value in metadata.items()})
        helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- cache keys


def test_cache_key_is_stable_for_equal_inputs():
    assert cache_key(make_key()) == cache_key(make_key())
    assert len(cache_key(make_key())) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "c" * 64},
        {"tensorrt_version": "10.3.1"},
        {"gpu_name": "NVIDIA Thor"},
        {"compute_capability": "8.9"},
        {"plugin_sha256": None},
        {"plugin_sha256": "d" * 64},
        {"profile": Profile(min=(256, 256), opt=(512, 512), max=(1024, 2048))},
        {"profile": Profile(min=(256, 256), opt=(512, 768), max=(1024, 1024))},
        {"profile": Profile(min=(128, 256), opt=(512, 512), max=(1024, 1024))},
        {"batch": 2},
        {"legacy_fp16": True},
        {"dla_core": 0},
        {"workspace_mib": 1024},
    ],
)
def test_cache_key_changes_with_every_component(change):
    assert cache_key(make_key(**change)) != cache_key(make_key())


def test_cache_key_does_not_confuse_height_and_width():
    transposed = Profile(min=(256, 256), opt=(512, 512), max=(2048, 1024))
    assert cache_key(make_key(profile=transposed)) != cache_key(
        make_key(profile=Profile(min=(256, 256), opt=(512, 512), max=(1024, 2048)))
    )


# ---------------------------------------------------------------- profiles


def profile_of(low: str, opt: str, high: str, multiple: int = 1, min_size: int = 1) -> Profile:
    """What `m2ae build --min LOW --opt OPT --max HIGH` validates."""
    sides = (parse_size(low, "--min"), parse_size(opt, "--opt"), parse_size(high, "--max"))
    return validate_profile(Profile(*sides), multiple, min_size)


def test_profile_options_read_height_by_width():
    profile = profile_of("256x320", "720x1280", "1088X1920", multiple=16)
    assert profile == Profile(min=(256, 320), opt=(720, 1280), max=(1088, 1920))
    assert profile_of("256", "512", "1024").opt == (512, 512), "one side is a square, as in every m2ae size option"


@pytest.mark.parametrize("text", ["256x", "x256", "axb", "256*256", "256x256x3", "-1x256", "1.5x2", ""])
def test_size_options_reject_bad_strings(text):
    with pytest.raises(UserError, match="--min"):
        parse_size(text, "--min")


@pytest.mark.parametrize("text", ["0x256", "256x0"])
def test_size_options_reject_zero(text):
    with pytest.raises(UserError, match="positive"):
        parse_size(text, "--max")


@pytest.mark.parametrize(
    "low, opt, high",
    [("512x512", "256x512", "1024x1024"), ("256x256", "512x2048", "1024x1024"), ("256x512", "256x256", "512x512")],
)
def test_profile_requires_min_opt_max_order_per_dimension(low, opt, high):
    with pytest.raises(UserError, match="min <= opt <= max"):
        profile_of(low, opt, high)


def test_profile_requires_multiples_and_suggests_one():
    with pytest.raises(UserError, match=r"--max 1080x1920.*multiples of 32.*try 1088x1920"):
        profile_of("256x256", "512x512", "1080x1920", multiple=32)
    with pytest.raises(UserError, match=r"--min 250x256"):
        profile_of("250x256", "512x512", "1024x1024", multiple=8)
    assert profile_of("250x256", "512x512", "1080x1920", multiple=1).min == (250, 256)


def test_complete_profile_fills_missing_sides_around_given_ones():
    defaults = Profile(min=(256, 256), opt=(1024, 1024), max=(2160, 3840))
    assert complete_profile(None, None, None, defaults) == defaults
    only_max = complete_profile(None, None, "512x768", defaults)
    assert only_max == Profile(min=(256, 256), opt=(512, 768), max=(512, 768))
    only_min = complete_profile("2304x256", None, None, defaults)
    assert only_min == Profile(min=(2304, 256), opt=(2304, 1024), max=(2304, 3840))
    only_opt = complete_profile(None, "128x4096", None, defaults)
    assert only_opt == Profile(min=(128, 256), opt=(128, 4096), max=(2160, 4096))
    with pytest.raises(UserError, match="multiples of 32"):
        complete_profile(None, None, "500x500", defaults, multiple=32)


def test_profile_dict_round_trip():
    profile = profile_of("256x256", "512x768", "1024x2048")
    assert Profile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    assert not profile.is_static and Profile((64, 96), (64, 96), (64, 96)).is_static


@pytest.mark.parametrize("low", ["8x64", "64x8", "8x8"])
def test_profile_min_below_the_network_min_size_is_refused(low):
    with pytest.raises(UserError, match=rf"--min {low}: .*at least 16 .*m2ae.min_size.*try --min") as info:
        profile_of(low, "64x64", "128x128", multiple=8, min_size=16)
    suggested = info.value.args[0].rsplit("--min ", 1)[1]
    assert profile_of(suggested, "64x64", "128x128", multiple=8, min_size=16).min == parse_size(suggested, "--min")
    with pytest.raises(UserError, match="at least 16"):
        complete_profile(low, None, None, Profile((256, 256), (512, 512), (1024, 1024)), multiple=8, min_size=16)
    assert profile_of("16x16", "64x64", "128x128", multiple=8, min_size=16).min == (16, 16)


# ---------------------------------------------------------------- sidecars and the cache


def make_sidecar(**changes) -> Sidecar:
    key = make_key()
    sidecar = Sidecar(
        key=key,
        cache_key=cache_key(key),
        onnx_path="/models/m2ae tiny.onnx",
        onnx_metadata={"m2ae.multiple": "16", "m2ae.preset": "tiny"},
        plugin_path="/opt/m2ae/libm2ae_plugins.so",
        build_seconds=12.5,
        built_at="2026-11-24T05:00:00+00:00",
        command=["m2ae", "build", "--onnx", "/models/m2ae tiny.onnx"],
        m2ae_version="0.1.0",
    )
    return dataclasses.replace(sidecar, **changes)


def test_sidecar_json_round_trip(tmp_path):
    sidecar = make_sidecar()
    assert Sidecar.from_json(sidecar.to_json()) == sidecar
    path = sidecar.write(tmp_path / "m.engine.json")
    assert Sidecar.read(path) == sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine.json"], "no temp files left behind"
    data = json.loads(path.read_text())
    for field in ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "plugin_sha256", "profile"):
        assert field in data["key"]
    assert data["build_seconds"] == 12.5 and data["command"][:2] == ["m2ae", "build"]
    assert data["onnx_metadata"] == {"m2ae.multiple": "16", "m2ae.preset": "tiny"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"format": 99}', "format 1"),
        ("[1, 2]", "format 1"),
        ('{"format": 1, "cache_key": "x"}', "malformed"),
    ],
)
def test_sidecar_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.engine.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        Sidecar.read(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_sidecar_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such engine sidecar"):
        Sidecar.read(tmp_path / "nothing.engine.json")


def test_sidecar_path_appends_json():
    assert sidecar_path(Path("/a/model.engine")) == Path("/a/model.engine.json")


def test_engine_write_never_leaves_an_old_sidecar_beside_a_new_engine(tmp_path):
    out = tmp_path / "m.engine"
    old = make_sidecar()
    _write_engine(lambda tmp: tmp.write_bytes(b"old plan"), old, out)
    assert out.read_bytes() == b"old plan" and Sidecar.read(sidecar_path(out)) == old

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half a pl")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _write_engine(crash, make_sidecar(build_seconds=1.0), out)
    assert out.read_bytes() == b"old plan", "the engine is replaced whole or not at all"
    assert not sidecar_path(out).exists(), "the old sidecar no longer describes what may be there"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine"]
    new = make_sidecar(build_seconds=2.0)
    _write_engine(lambda tmp: tmp.write_bytes(b"new plan"), new, out)
    assert out.read_bytes() == b"new plan" and Sidecar.read(sidecar_path(out)) == new


def test_engine_cache_store_and_lookup(tmp_path):
    cache = EngineCache.at(tmp_path / "cache")
    sidecar = make_sidecar()
    assert cache.lookup(sidecar.cache_key) is None
    engine = cache.store(b"plan-bytes", sidecar)
    assert cache.lookup(sidecar.cache_key) == engine
    assert engine.read_bytes() == b"plan-bytes"
    assert Sidecar.read(sidecar_path(engine)) == sidecar


def test_engine_cache_ignores_incomplete_or_foreign_entries(tmp_path):
    cache = EngineCache.at(tmp_path)
    sidecar = make_sidecar()
    cache.engine_path(sidecar.cache_key).write_bytes(b"plan")  # engine without its sidecar
    assert cache.lookup(sidecar.cache_key) is None
    other = make_sidecar(cache_key="f" * 64)
    other.write(sidecar_path(cache.engine_path(sidecar.cache_key)))  # sidecar for another key
    assert cache.lookup(sidecar.cache_key) is None


def test_cache_dir_default_env_and_argument(tmp_path, monkeypatch):
    assert default_cache_dir({CACHE_DIR_ENV: str(tmp_path / "x")}) == tmp_path / "x"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "m2ae" / "engines"
    assert default_cache_dir({}) == Path.home() / ".cache" / "m2ae" / "engines"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env"))
    assert EngineCache.at().root == tmp_path / "env"
    assert EngineCache.at(tmp_path / "arg").root == tmp_path / "arg"


def test_timing_cache_path_separates_versions_and_gpus(tmp_path):
    cache = EngineCache.at(tmp_path)
    paths = {
        cache.timing_cache_path("10.3.0", "Orin", "8.7"),
        cache.timing_cache_path("10.3.1", "Orin", "8.7"),
        cache.timing_cache_path("10.3.0", "NVIDIA Thor", "11.0"),
    }
    assert len(paths) == 3
    assert all(p.parent == tmp_path / "timing" and " " not in p.name for p in paths)


# ---------------------------------------------------------------- platform


def test_jetson_detected_from_release_file(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    assert is_jetson(release, None)
    assert not is_jetson(tmp_path / "missing", None)


@pytest.mark.parametrize(
    "name, expected, model",
    [
        ("Orin", True, "orin"),
        ("NVIDIA Thor", True, "thor"),
        ("Xavier", True, None),
        ("NVIDIA GeForce RTX 4090", False, None),
        ("NVIDIA H100 80GB HBM3", False, None),
        (None, False, None),
    ],
)
def test_jetson_detected_from_device_name(tmp_path, name, expected, model):
    assert is_jetson(tmp_path / "missing", name) is expected
    assert jetson_model(name) == model


def test_jetson_model_from_board_model_string():
    assert jetson_model(None, "NVIDIA Jetson AGX Orin Developer Kit") == "orin"
    assert jetson_model("", "NVIDIA Jetson AGX Thor Developer Kit") == "thor"


def test_detect_platform_never_raises_and_reads_the_release_file(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release)\n")
    board = tmp_path / "model"
    board.write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    info = detect_platform(release_file=release, model_file=board)
    assert info.is_jetson
    if info.gpu_name is None:
        assert info.jetson_model == "orin" and info.compute_capability is None and not info.unified_memory
    plain = detect_platform(release_file=tmp_path / "missing", model_file=tmp_path / "missing")
    if plain.gpu_name is None:
        assert not plain.is_jetson and plain.jetson_model is None
    if importlib.util.find_spec("tensorrt") is None:  # a look of its own: no package, no version
        assert plain.tensorrt_version is None


def test_tensorrt_unavailable_says_what_is_missing():
    """The one answer to "can TensorRT build (and run) engines here?", for commands and test markers."""
    assert tensorrt_unavailable(desktop(), running=False) is None
    assert tensorrt_unavailable(desktop(cuda_binding="cuda-python 13.0.1")) is None
    assert tensorrt_unavailable(desktop()).startswith("CUDA binding: none installed; the TensorRT runtime needs one")
    missing = tensorrt_unavailable(desktop(tensorrt_version=None), running=False)
    assert missing == f"TensorRT is not installed; install it with: {DESKTOP_INSTALL}"
    assert "python3-libnvinfer" in tensorrt_unavailable(dataclasses.replace(jetson("orin"), tensorrt_version=None))
    no_driver = desktop(gpu_name=None, compute_capability=None, cuda_driver_version=None)
    assert tensorrt_unavailable(no_driver, running=False) == "TensorRT needs an NVIDIA GPU and no CUDA driver was found"


# ---------------------------------------------------------------- what to build


def test_build_defaults_desktop_and_jetson():
    desk = build_defaults(desktop())
    assert desk.profile == Profile(min=(256, 256), opt=(1024, 1024), max=(2160, 3840))
    assert desk.workspace_mib is None
    for model in ("orin", "thor"):
        small = build_defaults(jetson(model))
        assert small.workspace_mib is not None
        assert np.prod(small.profile.max) < np.prod(desk.profile.max)
    assert build_defaults(jetson("orin")).workspace_mib < build_defaults(jetson("thor")).workspace_mib


def test_build_defaults_respect_the_network_min_size():
    for platform in (desktop(), jetson("orin"), jetson("thor")):
        profile = build_defaults(platform, multiple=16, min_size=300).profile
        assert min(profile.min) >= 300 and profile.min[0] % 16 == 0 and profile.min[1] % 16 == 0
        validate_profile(profile, 16, 300)


@pytest.mark.parametrize("multiple", [1, 8, 16, 32, 64])
def test_build_defaults_round_up_to_the_network_multiple(multiple):
    for platform in (desktop(), jetson("orin"), jetson("thor")):
        profile = build_defaults(platform, multiple).profile
        plain = build_defaults(platform, 1).profile
        for got, named in zip((profile.min, profile.opt, profile.max), (plain.min, plain.opt, plain.max)):
            assert got[0] % multiple == 0 and got[1] % multiple == 0
            assert named[0] <= got[0] < named[0] + multiple and named[1] <= got[1] < named[1] + multiple


def test_strongly_typed_unless_legacy_fp16_on_tensorrt_10():
    onnx_path = Path("m.onnx")
    assert strongly_typed_for(False, "fp16", 11, onnx_path) is True
    assert strongly_typed_for(False, None, 10, onnx_path) is True
    assert strongly_typed_for(True, "fp32", 10, onnx_path) is False
    assert strongly_typed_for(True, None, 10, onnx_path) is False


def test_fp16_flag_on_tensorrt_11_explains_the_fp16_export():
    with pytest.raises(UserError, match=r"--fp16: TensorRT 11 .*m2ae export --precision fp16") as info:
        strongly_typed_for(True, "fp32", 11, Path("m.onnx"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp16_flag_on_reduced_precision_onnx_is_refused(precision):
    with pytest.raises(UserError, match=f"already a {precision} ONNX"):
        strongly_typed_for(True, precision, 10, Path("m.onnx"))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_cli_fp16_on_a_reduced_precision_onnx_needs_no_tensorrt_to_explain(
    tmp_path, monkeypatch, capsys, precision
):
    onnx_path = tiny_onnx(tmp_path / "m.onnx", precision=precision)
    assert run_cli(monkeypatch, ["build", "--onnx", str(onnx_path), "--fp16"]) == 2
    err = capsys.readouterr().err
    assert f"is already a {precision} ONNX" in err and "drop --fp16" in err and err.count("\n") == 1


def test_dla_only_on_jetson():
    check_dla_request(None, desktop())
    check_dla_request(0, jetson("orin"), onnx_precision="fp16")
    with pytest.raises(UserError, match="only on Jetson"):
        check_dla_request(0, desktop())
    with pytest.raises(UserError, match="0 or more"):
        check_dla_request(-1, jetson("orin"))
    with pytest.raises(UserError, match="Jetson Thor has no DLA"):
        check_dla_request(0, jetson("thor"))


def test_dla_needs_one_fixed_size_and_reduced_precision():
    fixed = Profile((720, 1280), (720, 1280), (720, 1280))
    check_dla_request(0, jetson("orin"), fixed, "fp16")
    check_dla_request(1, jetson("orin"), fixed, "int8")
    check_dla_request(0, jetson("orin"), fixed, "fp32", fp16=True)  # TensorRT 10's weakly typed fp16
    dynamic = Profile((256, 256), (720, 1280), (1088, 1920))
    with pytest.raises(UserError, match=r"fixed sizes only.*--min 720x1280 --opt 720x1280 --max 720x1280"):
        check_dla_request(0, jetson("orin"), dynamic, "fp16")
    for precision in ("fp32", None):
        with pytest.raises(UserError, match=r"fp16 and int8 layers only.*m2ae export --precision fp16") as info:
            check_dla_request(0, jetson("orin"), fixed, precision)
        assert "\n" not in str(info.value)


def test_input_profile_shapes_for_image_and_mask():
    profile = Profile(min=(64, 96), opt=(128, 128), max=(256, 512))
    shapes = input_profile_shapes({"image": ("N", 3, "H", "W"), "mask": (-1, 1, -1, -1)}, profile, 2, Path("m.onnx"))
    assert shapes["image"] == ((2, 3, 64, 96), (2, 3, 128, 128), (2, 3, 256, 512))
    assert shapes["mask"] == ((2, 1, 64, 96), (2, 1, 128, 128), (2, 1, 256, 512))


def test_input_profile_shapes_rejects_what_cannot_build():
    profile = Profile(min=(64, 64), opt=(128, 128), max=(256, 256))
    with pytest.raises(UserError, match="no input named 'image'"):
        input_profile_shapes({"x": ("N", 3, "H", "W")}, profile, 1, Path("m.onnx"))
    with pytest.raises(UserError, match="unexpected input 'extra'"):
        input_profile_shapes({"image": ("N", 3, "H", "W"), "extra": (1,)}, profile, 1, Path("m.onnx"))
    with pytest.raises(UserError, match="fixed batch of 1"):
        input_profile_shapes({"image": (1, 3, "H", "W")}, profile, 4, Path("m.onnx"))
    with pytest.raises(UserError, match="fixed size 128x128.*--min 128x128"):
        input_profile_shapes({"image": ("N", 3, 128, 128)}, profile, 1, Path("m.onnx"))
    fixed = Profile(min=(128, 128), opt=(128, 128), max=(128, 128))
    assert input_profile_shapes({"image": (1, 3, 128, 128)}, fixed, 1, Path("m.onnx"))["image"][0] == (1, 3, 128, 128)


def test_read_onnx_info(tmp_path):
    info = read_onnx_info(tiny_onnx(tmp_path / "plain.onnx", multiple=16))
    assert info.model.multiple == 16 and info.model.precision == "fp32" and not info.uses_m2ae_ops
    assert info.model.min_size == 16, "without m2ae.min_size the network takes one multiple"
    assert read_onnx_info(tiny_onnx(tmp_path / "small.onnx", min_size=24)).model.min_size == 24
    odd = tiny_onnx(tmp_path / "odd.onnx", min_size="tiny")
    with pytest.raises(UserError, match=rf"^{re.escape(str(odd))}: metadata m2ae.min_size='tiny' is not"):
        read_onnx_info(odd)
    assert info.inputs == {"image": ("N", 3, "H", "W")}
    assert len(info.sha256) == 64
    with_ops = read_onnx_info(tiny_onnx(tmp_path / "plugin.onnx", m2ae_node=True))
    assert with_ops.uses_m2ae_ops and with_ops.sha256 != info.sha256


def test_read_onnx_info_refuses_an_onnx_without_m2ae_metadata(tmp_path):
    bare = tiny_onnx(tmp_path / "nometa.onnx", multiple=None)
    with pytest.raises(UserError, match=r"nometa\.onnx: not an m2ae model \(no m2ae metadata\); export one with") as info:
        read_onnx_info(bare)
    assert "\n" not in str(info.value)


def test_the_graph_decides_whether_the_model_takes_a_mask(tmp_path):
    """Metadata saying m2ae.mask_input=1 over a graph without a mask input reads as no mask input."""
    claimed = read_onnx_info(tiny_onnx(tmp_path / "claims.onnx", mask_input="1"))
    assert not claimed.model.mask_input and claimed.model.multiple == 8


def test_read_onnx_info_bad_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_onnx_info(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 not a protobuf \xff" * 10)
    with pytest.raises(UserError, match="not a readable ONNX"):
        read_onnx_info(junk)


@pytest.fixture(scope="module")
def tiny_plugin_exports(tmp_path_factory) -> dict[bool, Path]:
    """The shipped tiny checkpoint's plugin ONNX, predicting its mask (False) or taking one (True)."""
    from m2ae.export.onnx_export import ExportConfig, export_models

    out = tmp_path_factory.mktemp("tiny_plugin")
    paths = {}
    with one_torch_thread():
        for mask_input in (False, True):
            (model,) = export_models(ExportConfig(out=out, variants=("plugin",), mask_input=mask_input, progress=False))
            paths[mask_input] = model.path
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("mask_input", [False, True])
def test_tiny_plugin_export_fits_what_the_builder_and_runtime_expect(tiny_plugin_exports, mask_input):
    info = read_onnx_info(tiny_plugin_exports[mask_input])
    assert info.uses_m2ae_ops, "--plugin auto must load the plugin for this export"
    assert set(info.inputs) == ({INPUT_IMAGE, INPUT_MASK} if mask_input else {INPUT_IMAGE})
    model = onnx.load(str(info.path), load_external_data=False)
    assert {o.name for o in model.graph.output} == {OUTPUT_RESTORED, OUTPUT_MASK}
    # TensorRT's ONNX parser finds a plugin by op_type plus these two attributes.
    custom = [node for graph in all_graphs(model.graph) for node in graph.node if node.domain == DOMAIN]
    assert custom
    for node in custom:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_version"] == PLUGIN_VERSION.encode()
        assert attrs["plugin_namespace"] == PLUGIN_NAMESPACE.encode()
    assert info.model.mask_input is mask_input and info.model.variant == "plugin"
    for platform in (desktop(), jetson("orin"), jetson("thor")):
        profile = build_defaults(platform, info.model.multiple, info.model.min_size).profile
        validate_profile(profile, info.model.multiple, info.model.min_size)
        shapes = input_profile_shapes(info.inputs, profile, 2, info.path)
        assert shapes[INPUT_IMAGE] == tuple((2, 3, *side) for side in (profile.min, profile.opt, profile.max))
        if mask_input:
            assert shapes[INPUT_MASK] == tuple((2, 1, *side) for side in (profile.min, profile.opt, profile.max))
    below = info.model.min_size - 1
    if below >= 1:
        with pytest.raises(UserError, match="m2ae.min_size"):
            validate_profile(Profile((below, below), (256, 256), (512, 512)), 1, info.model.min_size)


# ---------------------------------------------------------------- missing TensorRT / GPU


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here, so the missing-TensorRT message cannot show")
def test_require_tensorrt_names_the_install_command():
    with pytest.raises(UserError, match=re.escape(DESKTOP_INSTALL)) as info:
        require_tensorrt(desktop())
    assert "GPU" not in str(info.value), "a machine with a GPU needs only TensorRT"
    with pytest.raises(UserError, match="python3-libnvinfer.*--system-site-packages"):
        require_tensorrt(jetson("orin"))
    no_gpu = desktop(gpu_name=None, compute_capability=None, cuda_driver_version=None)
    with pytest.raises(UserError, match=re.escape(DESKTOP_INSTALL) + r".*also needs an NVIDIA GPU.*no CUDA driver"):
        require_tensorrt(no_gpu)


def test_require_gpu_without_driver_or_device():
    with pytest.raises(UserError, match="no CUDA driver"):
        require_gpu(desktop(gpu_name=None, compute_capability=None, cuda_driver_version=None))
    with pytest.raises(UserError, match="sees no GPU"):
        require_gpu(desktop(gpu_name=None, compute_capability=None))
    require_gpu(desktop())


# ---------------------------------------------------------------- the CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2ae")
    export_commands.register(parser.add_subparsers(dest="command"))
    return parser


def run_cli(monkeypatch, argv: list[str]) -> int:
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ("m2ae.export.commands",))
    return cli.main(argv)


def test_build_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--help"])
    text = capsys.readouterr().out
    for option in ("--onnx", "--plugin", "--min", "--opt", "--max", "--workspace", "--dla", "--fp16", "--out",
                   "--no-progress"):
        assert option in text
    assert "m2ae export --precision fp16" in text and "python3-libnvinfer" in text
    assert "--quiet" not in text, "the old spelling is accepted, not advertised"


@pytest.mark.parametrize("flags, progress", [([], True), (["--no-progress"], False), (["--quiet"], False)])
def test_build_progress_option_and_its_old_spelling(flags, progress):
    args = build_parser().parse_args(["build", "--onnx", "m.onnx", *flags])
    assert args.no_progress is not progress


def test_build_cli_records_the_command():
    args = build_parser().parse_args(
        ["build", "--onnx", "m.onnx", "--min", "64x64", "--max", "512x512", "--fp16", "--batch", "2"]
    )
    line = export_commands._command_line(args)
    assert line[:4] == ["m2ae", "build", "--onnx", "m.onnx"]
    assert line[line.index("--min") + 1] == "64x64" and "--fp16" in line and "--opt" not in line
    assert line[line.index("--batch") + 1] == "2" and "--plugin" not in line


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--min", "64by64"], "--min '64by64'"),
        (["--max", "100x100"], "--max 100x100: height and width must be multiples of 8"),
        (["--opt", "512x512", "--max", "256x256"], "min <= opt <= max"),
    ],
)
def test_build_cli_bad_profile_is_one_line_exit_2(tmp_path, monkeypatch, capsys, extra, message):
    onnx_path = tiny_onnx(tmp_path / "m.onnx", multiple=8)
    assert run_cli(monkeypatch, ["build", "--onnx", str(onnx_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "m.engine").exists()


def test_build_cli_min_below_min_size_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    onnx_path = tiny_onnx(tmp_path / "m.onnx", multiple=8, min_size=32)
    assert run_cli(monkeypatch, ["build", "--onnx", str(onnx_path), "--min", "16x16", "--opt", "64x64"]) == 2
    err = capsys.readouterr().err
    assert "--min 16x16: height and width must be at least 32" in err and err.count("\n") == 1
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.skipif(PLATFORM.is_jetson, reason="this machine is a Jetson, where --dla is a valid request")
def test_build_cli_checks_dla_before_looking_for_tensorrt(tmp_path, monkeypatch, capsys):
    onnx_path = tiny_onnx(tmp_path / "m.onnx", precision="fp16")
    assert run_cli(monkeypatch, ["build", "--onnx", str(onnx_path), "--dla", "0"]) == 2
    err = capsys.readouterr().err
    assert "--dla 0: DLA cores exist only on Jetson" in err and err.count("\n") == 1


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here, so the missing-TensorRT message cannot show")
def test_build_cli_without_tensorrt_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    assert run_cli(monkeypatch, ["build", "--onnx", str(onnx_path), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("m2ae build: error: TensorRT is not installed") and err.count("\n") == 1
    assert "pip install 'm2ae[trt]'" in err or "python3-libnvinfer" in err
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "c").exists()


# ---------------------------------------------------------------- real builds


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_trt_gpu
def test_build_engine_writes_engine_sidecar_and_hits_the_cache(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx", multiple=8)
    profile = Profile(min=(32, 32), opt=(64, 64), max=(128, 128))
    config = BuildConfig(onnx=onnx_path, profile=profile, cache_dir=tmp_path / "cache", progress=False,
                         command=("m2ae", "build"))
    first = build_engine(config)
    assert not first.cached and first.engine_path == tmp_path / "m.engine"
    assert first.engine_path.stat().st_size > 0
    sidecar = Sidecar.read(first.sidecar_path)
    assert sidecar.key.onnx_sha256 == read_onnx_info(onnx_path).sha256
    assert sidecar.key.tensorrt_version == PLATFORM.tensorrt_version
    assert sidecar.key.compute_capability == PLATFORM.compute_capability
    assert sidecar.key.profile == profile and sidecar.strongly_typed
    assert sidecar.onnx_metadata["m2ae.multiple"] == "8" and sidecar.key.plugin_sha256 is None
    assert any((tmp_path / "cache" / "timing").iterdir()), "timing cache persisted"

    again = build_engine(dataclasses.replace(config, out=tmp_path / "copy.engine"))
    assert again.cached and again.sidecar.cache_key == sidecar.cache_key
    assert again.engine_path.read_bytes() == first.engine_path.read_bytes()
    wider = build_engine(dataclasses.replace(config, profile=Profile((32, 32), (64, 64), (256, 256))))
    assert not wider.cached and wider.sidecar.cache_key != sidecar.cache_key


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_trt_gpu
def test_build_engine_rejects_non_multiple_profile_before_building(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx", multiple=8)
    config = BuildConfig(onnx=onnx_path, profile=Profile((30, 32), (64, 64), (128, 128)), cache_dir=tmp_path / "c")
    with pytest.raises(UserError, match="multiples of 8"):
        build_engine(config)
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_trt_gpu
def test_legacy_fp16_flag_follows_the_tensorrt_major_version(tmp_path):
    trt = require_tensorrt(PLATFORM)
    onnx_path = tiny_onnx(tmp_path / "m.onnx", multiple=8)
    config = BuildConfig(onnx=onnx_path, fp16=True, profile=Profile((32, 32), (64, 64), (64, 64)),
                         cache_dir=tmp_path / "c", progress=False)
    if int(trt.__version__.split(".")[0]) >= 11:
        with pytest.raises(UserError, match="m2ae export --precision fp16"):
            build_engine(config)
    else:
        result = build_engine(config)
        assert result.sidecar.key.legacy_fp16 and not result.sidecar.strongly_typed
