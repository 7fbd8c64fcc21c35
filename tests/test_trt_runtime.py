"""TensorRT runtime: compatibility checks and messages (everywhere), inference (GPU only).

The mismatch check is a pure function of the sidecar and a ``PlatformInfo``, tested
here without TensorRT. Inference tests build real engines and compare them with ONNX
Runtime (standard ops) or the numpy reference (plugin ops); they run only where
TensorRT, a CUDA binding (cuda-python or pycuda) and an NVIDIA GPU are present.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from m2ae.engine_sidecar import EngineKey, Profile, Sidecar, cache_key, sidecar_path
from m2ae.errors import UserError
from m2ae.platform_info import (
    CUDA_BINDINGS,
    PlatformInfo,
    cuda_binding_version,
    detect_platform,
    tensorrt_unavailable,
)
from m2ae.runtime.base import EngineOutputs, open_engine
from m2ae.runtime.trt_engine import TensorRTEngine, check_engine_compatible
from m2ae.trt_plugins import PLUGIN_VERSION, reference

PLATFORM = detect_platform()
HAS_TENSORRT = PLATFORM.tensorrt_version is not None
CANNOT_RUN = tensorrt_unavailable(PLATFORM)
needs_gpu_runtime = pytest.mark.skipif(
    CANNOT_RUN is not None,
    reason=f"needs TensorRT, a CUDA binding (cuda-python or pycuda) and an NVIDIA GPU: {CANNOT_RUN}",
)
INSTALLED_BINDINGS = [binding for binding in CUDA_BINDINGS if cuda_binding_version(binding) is not None]


def machine(**changes) -> PlatformInfo:
    base = PlatformInfo(
        tensorrt_version="10.3.0.30",
        cuda_driver_version="12.6",
        cuda_runtime_version="12.6",
        gpu_name="Orin",
        compute_capability="8.7",
        is_jetson=True,
        jetson_model="orin",
        unified_memory=True,
    )
    return dataclasses.replace(base, **changes)


def sidecar_for(platform: PlatformInfo, **key_changes) -> Sidecar:
    key = EngineKey(
        onnx_sha256="0" * 64,
        tensorrt_version=platform.tensorrt_version or "",
        gpu_name=platform.gpu_name or "",
        compute_capability=platform.compute_capability or "",
        plugin_sha256=None,
        profile=Profile(min=(256, 256), opt=(720, 1280), max=(1088, 1920)),
    )
    key = dataclasses.replace(key, **key_changes)
    return Sidecar(
        key=key,
        cache_key=cache_key(key),
        onnx_path="/models/m2ae_plugin_fp16.onnx",
        onnx_metadata={"m2ae.multiple": "16", "m2ae.preset": "tiny"},
    )


# ---------------------------------------------------------------- compatibility


def test_compatible_engine_passes_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_engine_compatible(sidecar_for(machine()), machine(), "m.engine")


def test_tensorrt_version_mismatch_says_how_to_rebuild():
    sidecar = sidecar_for(machine(tensorrt_version="10.3.0.26"))
    with pytest.raises(UserError) as info:
        check_engine_compatible(sidecar, machine(), "/e/m.engine")
    message = str(info.value)
    assert "10.3.0.26" in message and "10.3.0.30" in message and "/e/m.engine" in message
    assert (
        "m2ae build --onnx /models/m2ae_plugin_fp16.onnx --min 256x256 --opt 720x1280 --max 1088x1920 "
        "--out /e/m.engine" in message
    )
    assert "\n" not in message


def test_compute_capability_mismatch_names_both_gpus():
    sidecar = sidecar_for(machine(gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9"))
    with pytest.raises(UserError, match=r"RTX 4090 \(compute capability 8\.9\).*Orin \(compute capability 8\.7\)"):
        check_engine_compatible(sidecar, machine(), "m.engine")


def test_other_gpu_of_same_architecture_only_warns():
    sidecar = sidecar_for(machine(gpu_name="NVIDIA GeForce RTX 4080", compute_capability="8.9"))
    here = machine(gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9", is_jetson=False)
    with pytest.warns(UserWarning, match="RTX 4080.*RTX 4090.*m2ae build"):
        check_engine_compatible(sidecar, here, "m.engine")


def test_missing_tensorrt_or_gpu_is_explained():
    sidecar = sidecar_for(machine())
    with pytest.raises(UserError, match="needs TensorRT 10.3.0.30.*python3-libnvinfer"):
        check_engine_compatible(sidecar, machine(tensorrt_version=None), "m.engine")
    desktop = machine(tensorrt_version=None, is_jetson=False, jetson_model=None)
    with pytest.raises(UserError, match=r"pip install 'm2ae\[trt\]'"):
        check_engine_compatible(sidecar, desktop, "m.engine")
    with pytest.raises(UserError, match="NVIDIA GPU"):
        check_engine_compatible(sidecar, machine(gpu_name=None, compute_capability=None), "m.engine")
    nothing = dataclasses.replace(desktop, gpu_name=None, compute_capability=None, cuda_driver_version=None)
    with pytest.raises(UserError, match=r"not installed; install it with: .*also needs an NVIDIA GPU.*no CUDA driver"):
        check_engine_compatible(sidecar, nothing, "m.engine")


def test_rebuild_command_carries_every_build_option():
    sidecar = sidecar_for(machine(), legacy_fp16=True, dla_core=1, workspace_mib=512, batch=2)
    sidecar = dataclasses.replace(sidecar, onnx_path="/my models/m.onnx", plugin_path="/p/libm2ae.so")
    command = sidecar.rebuild_command("out dir/m.engine")
    assert command.startswith("m2ae build --onnx '/my models/m.onnx' --min 256x256")
    parts = ("--plugin /p/libm2ae.so", "--batch 2", "--fp16", "--dla 1", "--workspace 512", "--out 'out dir/m.engine'")
    for part in parts:
        assert part in command


# ---------------------------------------------------------------- opening engines


def write_fake_engine(tmp_path: Path, sidecar: Sidecar | None) -> Path:
    """Engine bytes that are never deserialized: every test below stops before that."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a plan")
    if sidecar is not None:
        sidecar.write(sidecar_path(engine))
    return engine


def test_missing_engine_or_sidecar(tmp_path):
    with pytest.raises(UserError, match="no such engine file"):
        TensorRTEngine(tmp_path / "none.engine")
    engine = write_fake_engine(tmp_path, None)
    with pytest.raises(UserError, match=r"no sidecar m\.engine\.json.*m2ae build"):
        TensorRTEngine(engine)
    with pytest.raises(UserError, match="no sidecar"):
        open_engine(engine)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"m2ae.multiple": "sixteen"}, "m2ae.multiple='sixteen' is not a positive integer"),
        ({"m2ae.multiple": "0"}, "m2ae.multiple='0' is not a positive integer"),
        ({"m2ae.multiple": "16", "m2ae.min_size": "big"}, "m2ae.min_size='big' is not a positive integer"),
        ({"m2ae.preset": "tiny"}, "not an m2ae model"),
    ],
)
def test_bad_metadata_in_the_sidecar_names_the_sidecar(tmp_path, metadata, message):
    sidecar = dataclasses.replace(sidecar_for(machine()), onnx_metadata=metadata)
    engine = write_fake_engine(tmp_path, sidecar)
    with pytest.raises(UserError, match=message) as info:
        TensorRTEngine(engine)
    assert str(info.value).startswith(f"{sidecar_path(engine)}: ")


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here, so the missing-TensorRT message cannot show")
def test_engine_on_machine_without_tensorrt_explains_install(tmp_path):
    engine = write_fake_engine(tmp_path, sidecar_for(machine()))
    with pytest.raises(UserError, match=r"needs TensorRT 10\.3\.0\.30, which is not installed; install it with"):
        open_engine(engine)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here, so the missing-TensorRT message cannot show")
def test_infer_cli_with_an_engine_but_no_tensorrt_is_one_line_exit_2(tmp_path, capsys):
    from m2ae.cli import main
    from m2ae.imageio import write_image
    from m2ae.platform_info import install_hint

    engine = write_fake_engine(tmp_path, sidecar_for(machine(is_jetson=False, jetson_model=None)))
    write_image(tmp_path / "a.png", np.full((32, 32, 3), 0.5))
    assert main(["infer", "--model", str(engine), "--input", str(tmp_path / "a.png"),
                 "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("m2ae infer: error: ") and err.count("\n") == 1
    assert "needs TensorRT 10.3.0.30, which is not installed" in err and install_hint(PLATFORM) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu_runtime
def test_mismatched_engine_fails_before_deserializing(tmp_path):
    other = dataclasses.replace(PLATFORM, tensorrt_version="9.9.9.9")
    engine = write_fake_engine(tmp_path, sidecar_for(other))
    with pytest.raises(UserError, match=r"built with TensorRT 9\.9\.9\.9.*rebuild it on this machine: m2ae build"):
        TensorRTEngine(engine)


# ---------------------------------------------------------------- inference on a GPU


def plain_onnx(path: Path, mask_input: bool) -> Path:
    """restored = 0.5 * image + 0.25 (+ 0.1 * mask); blur_mask = mean(image) > 0.5, or the input mask."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, "H", "W"])
    blur_mask = helper.make_tensor_value_info("blur_mask", TensorProto.FLOAT, ["N", 1, "H", "W"])
    restored = helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["N", 3, "H", "W"])
    scalars = (("half", 0.5), ("quarter", 0.25)) + ((("tenth", 0.1),) if mask_input else ())
    consts = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in scalars]
    nodes = [helper.make_node("Mul", ["image", "half"], ["scaled"])]
    if mask_input:
        nodes += [
            helper.make_node("Mul", ["mask", "tenth"], ["bump"]),
            helper.make_node("Add", ["scaled", "bump"], ["shifted"]),
            helper.make_node("Add", ["shifted", "quarter"], ["restored"]),
            helper.make_node("Identity", ["mask"], ["blur_mask"]),
        ]
        inputs, outputs = [image, mask], [restored, blur_mask]
    else:
        nodes += [
            helper.make_node("Add", ["scaled", "quarter"], ["restored"]),
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=1),
            helper.make_node("Greater", ["mean", "half"], ["blurred"]),
            helper.make_node("Cast", ["blurred"], ["blur_mask"], to=TensorProto.FLOAT),
        ]
        inputs, outputs = [image], [restored, blur_mask]
    model = helper.make_model(
        helper.make_graph(nodes, "plain", inputs, outputs, initializer=consts),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    helper.set_model_props(model, {"m2ae.multiple": "8", "m2ae.precision": "fp32"})
    onnx.save(model, str(path))
    return path


def build(onnx_path: Path, tmp_path: Path, plugin: str = "auto") -> Path:
    from m2ae.export.trt_builder import BuildConfig, build_engine

    config = BuildConfig(
        onnx=onnx_path, plugin=plugin, profile=Profile((16, 16), (64, 64), (128, 128)), batch=2,
        cache_dir=tmp_path / "cache", progress=False,
    )
    return build_engine(config).engine_path


def onnxruntime_outputs(onnx_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu_runtime
@pytest.mark.parametrize("binding", INSTALLED_BINDINGS)
@pytest.mark.parametrize("mask_input", [False, True])
def test_engine_matches_onnxruntime_across_shapes(tmp_path, rng, mask_input, binding):
    onnx_path = plain_onnx(tmp_path / "plain.onnx", mask_input)
    with TensorRTEngine(build(onnx_path, tmp_path), cuda_binding=binding) as engine:
        assert engine.backend == "tensorrt" and engine.multiple == 8 and engine.takes_mask is mask_input
        assert engine.cuda_binding_line.startswith(f"CUDA binding: {binding} ")
        assert engine.metadata["m2ae.precision"] == "fp32"
        for h, w in ((16, 16), (64, 40), (128, 128), (64, 40)):  # reallocation, then reuse
            image = rng.random((2, 3, h, w), dtype=np.float32)
            feeds = {"image": image}
            if mask_input:
                feeds["mask"] = (rng.random((2, 1, h, w)) > 0.5).astype(np.float32)
            got = engine.infer(image, feeds.get("mask"))
            want = onnxruntime_outputs(onnx_path, feeds)
            np.testing.assert_allclose(got.restored, want["restored"], atol=1e-6)
            np.testing.assert_array_equal(got.mask, want["blur_mask"])
            assert got.restored.dtype == np.float32 and got.restored.shape == (2, 3, h, w)


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu_runtime
def test_engine_rejects_inputs_outside_its_profile(tmp_path, rng):
    with TensorRTEngine(build(plain_onnx(tmp_path / "plain.onnx", False), tmp_path)) as engine:
        with pytest.raises(UserError, match="outside the engine's profile"):
            engine.infer(rng.random((2, 3, 256, 64), dtype=np.float32))
        # Arrays no engine takes are ValueErrors, as with the ONNX Runtime and torch engines.
        with pytest.raises(ValueError, match="multiples of 8"):
            engine.infer(rng.random((2, 3, 60, 64), dtype=np.float32))
        with pytest.raises(ValueError, match="predicts its own mask"):
            engine.infer(rng.random((2, 3, 64, 64), dtype=np.float32), np.ones((2, 1, 64, 64), np.float32))


TILE, HALO = 8, 2


def plugin_onnx(path: Path, tiles: np.ndarray) -> Path:
    """restored = image with the given 8x8 tiles doubled, via MaskedGather (halo 2) + MaskedScatter."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    restored = helper.make_tensor_value_info("restored", TensorProto.FLOAT, [1, 3, "H", "W"])
    mask = helper.make_tensor_value_info("blur_mask", TensorProto.FLOAT, [1, 1, "H", "W"])
    inits = [
        helper.make_tensor("tiles", TensorProto.INT32, [tiles.size], tiles.astype(np.int32).tolist()),
        helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
        helper.make_tensor("starts", TensorProto.INT64, [2], [HALO, HALO]),
        helper.make_tensor("ends", TensorProto.INT64, [2], [HALO + TILE, HALO + TILE]),
        helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
    ]
    attrs = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": "m2ae"}
    nodes = [
        helper.make_node("MaskedGather", ["image", "tiles"], ["picked"], domain="m2ae", tile=TILE, halo=HALO,
                         **attrs),
        helper.make_node("Slice", ["picked", "starts", "ends", "axes"], ["centres"]),
        helper.make_node("Mul", ["centres", "two"], ["doubled"]),
        helper.make_node("MaskedScatter", ["image", "doubled", "tiles"], ["restored"], domain="m2ae", **attrs),
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["mean", "two"], ["blur_mask"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "plugin", [image], [restored, mask], initializer=inits),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("m2ae", 1)],
    )
    helper.set_model_props(model, {"m2ae.multiple": "8", "m2ae.variant": "plugin"})
    onnx.save(model, str(path))
    return path


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu_runtime
def test_plugin_engine_matches_the_numpy_reference(tmp_path, rng):
    try:
        from m2ae.trt_plugins.loader import load

        load()
    except (ImportError, UserError) as exc:
        pytest.skip(f"the m2ae TensorRT plugin library is not available: {exc}")
    tiles = np.array([0, 1, 3], dtype=np.int32)  # inside the smallest 16x16 image (2 x 2 tiles)
    onnx_path = plugin_onnx(tmp_path / "plugin.onnx", tiles)
    from m2ae.export.trt_builder import BuildConfig, build_engine

    result = build_engine(BuildConfig(onnx=onnx_path, profile=Profile((16, 16), (32, 32), (64, 64)),
                                      cache_dir=tmp_path / "cache", progress=False))
    assert result.sidecar.key.plugin_sha256 is not None
    with TensorRTEngine(result.engine_path) as engine:
        for h, w in ((16, 16), (32, 48), (64, 64)):
            image = rng.random((1, 3, h, w), dtype=np.float32)
            picked = reference.masked_gather(image, tiles, TILE, HALO)[:, :, HALO:-HALO, HALO:-HALO]
            want = reference.masked_scatter(image, np.ascontiguousarray(picked * 2), tiles)
            np.testing.assert_allclose(engine.infer(image).restored, want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the shipped tiny checkpoint on a GPU


def assert_restored_agrees_away_from_flips(got: EngineOutputs, want: EngineOutputs, reach: int) -> float:
    """``restored`` within fp32 tolerance at every pixel no flipped mask pixel reaches; returns
    the share of pixels compared. A mask pixel at the threshold may flip between backends, and
    with it every restored pixel within the network's receptive field (``reach``) may change."""
    far = np.ones(got.mask[:, 0].shape, dtype=bool)
    for n, y, x in np.argwhere(got.mask[:, 0] != want.mask[:, 0]):
        far[n, max(y - reach, 0) : y + reach + 1, max(x - reach, 0) : x + reach + 1] = False
    far = np.broadcast_to(far[:, None], got.restored.shape)
    np.testing.assert_allclose(got.restored[far], want.restored[far], atol=1e-4)
    return float(far.mean())


def test_restored_is_compared_everywhere_but_near_flipped_mask_pixels():
    """The check above can fail: away from a flip a difference counts, near one it does not."""
    mask = np.zeros((1, 1, 64, 64), np.float32)
    want = EngineOutputs(np.zeros((1, 3, 64, 64), np.float32), mask)
    flipped = mask.copy()
    flipped[0, 0, 10, 10] = 1.0
    near = EngineOutputs(want.restored.copy(), flipped)
    near.restored[0, :, 14, 6] = 0.5  # 4 pixels from the flip
    assert assert_restored_agrees_away_from_flips(near, want, reach=4) == pytest.approx(1 - 81 / 64**2)
    far = EngineOutputs(want.restored.copy(), flipped)
    far.restored[0, 1, 15, 10] = 0.5  # 5 pixels from it
    with pytest.raises(AssertionError):
        assert_restored_agrees_away_from_flips(far, want, reach=4)
    assert assert_restored_agrees_away_from_flips(want, want, reach=4) == 1.0


def export_tiny(out: Path, variant: str, mask_input: bool) -> Path:
    from factories import one_torch_thread

    from m2ae.export.onnx_export import ExportConfig, export_models

    with one_torch_thread():
        (model,) = export_models(ExportConfig(out=out, variants=(variant,), mask_input=mask_input, progress=False))
    return model.path


def plugin_library_or_skip() -> None:
    try:
        from m2ae.trt_plugins.loader import load

        load()
    except (ImportError, UserError) as exc:
        pytest.skip(f"the m2ae TensorRT plugin library is not available: {exc}")


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu_runtime
@pytest.mark.parametrize("variant, mask_input", [("plugin", False), ("plugin", True), ("portable", False)])
def test_tiny_checkpoint_engine_matches_onnxruntime(tmp_path, rng, variant, mask_input):
    """fp32 engines of the shipped checkpoint against ONNX Runtime on the same ONNX file."""
    if variant == "plugin":
        plugin_library_or_skip()
    from m2ae.export.trt_builder import BuildConfig, build_engine
    from m2ae.runtime.onnx_engine import OnnxRuntimeEngine

    onnx_path = export_tiny(tmp_path, variant, mask_input)
    result = build_engine(BuildConfig(onnx=onnx_path, profile=Profile((64, 64), (128, 128), (256, 256)),
                                      cache_dir=tmp_path / "cache", progress=False))
    assert (result.sidecar.key.plugin_sha256 is not None) is (variant == "plugin")
    reference = OnnxRuntimeEngine(onnx_path)
    with TensorRTEngine(result.engine_path) as engine:
        assert engine.takes_mask is mask_input and engine.info == reference.info
        reach = reference.info.receptive_field
        for h, w in ((64, 64), (128, 192), (256, 256), (128, 192)):
            image = rng.random((1, 3, h, w), dtype=np.float32)
            mask = (rng.random((1, 1, h, w)) > 0.9).astype(np.float32) if mask_input else None
            got, want = engine.infer(image, mask), reference.infer(image, mask)
            assert got.restored.shape == want.restored.shape and got.mask.shape == want.mask.shape
            flips = float(np.mean(got.mask != want.mask))
            assert flips <= 1e-3, f"{flips:.2%} of mask pixels differ at {h}x{w}"
            compared = assert_restored_agrees_away_from_flips(got, want, reach)
            assert flips > 0 or compared == 1.0


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu_runtime
def test_infer_cli_with_an_engine_writes_what_it_writes_with_the_onnx(tmp_path, rng, capsys):
    from m2ae.cli import main
    from m2ae.export.trt_builder import BuildConfig, build_engine
    from m2ae.imageio import read_image, write_image

    onnx_path = export_tiny(tmp_path, "portable", False)
    engine_path = build_engine(BuildConfig(onnx=onnx_path, profile=Profile((64, 64), (128, 128), (256, 256)),
                                           cache_dir=tmp_path / "cache", progress=False)).engine_path
    images = tmp_path / "images"
    write_image(images / "a.png", rng.random((90, 130, 3)))  # padded to the multiple inside the profile
    assert main(["infer", "--model", str(onnx_path), "--input", str(images), "--output", str(tmp_path / "ort"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["infer", "--model", str(engine_path), "--input", str(images), "--output", str(tmp_path / "trt"),
                 "--no-progress"]) == 0
    assert capsys.readouterr().err.count("CUDA binding: ") == 1  # which binding runs the engine, in one line
    for name in ("a_restored.png", "a_mask.png"):
        ort = np.round(read_image(tmp_path / "ort" / name) * 255)
        trt = np.round(read_image(tmp_path / "trt" / name) * 255)
        assert ort.shape == trt.shape == (90, 130, 3)
        assert np.mean(np.abs(ort - trt) > 1) <= 1e-3, f"{name}: more than 0.1% of values differ by 2+ levels"
