"""CUDA kernels and TensorRT plugins of MaskedGather / MaskedScatter against the reference.

On a GPU (torch.cuda or CuPy) the kernels-only library is built for the visible GPU
(or taken from $M2AE_KERNELS_LIB) and both launchers run on device buffers; results
must equal trt_plugins/reference.py bit for bit in float32 and float16. Where TensorRT
imports too, one-op engines built from ONNX nodes in the m2ae domain run the plugins
and are compared the same way. Without a GPU (or TensorRT) the tests skip and say why.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from op_cases import DTYPES, GATHER_CASES, SCATTER_CASES, assert_bit_equal, gather_inputs, random_tiles, scatter_inputs

from m2ae.errors import UserError
from m2ae.export.trt_builder import network_flags
from m2ae.trt_plugins import (
    DOMAIN,
    GATHER_OP,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    SCATTER_OP,
    launchers,
    loader,
    manifest,
)
from m2ae.trt_plugins.build import PluginBuildConfig, build_plugins
from m2ae.trt_plugins.reference import masked_gather, masked_scatter

# --- device arrays through torch or CuPy ---------------------------------------------


class Device:
    """Host <-> device copies with whichever of torch (CUDA) or CuPy sees a GPU."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.is_torch = module.__name__ == "torch"

    def put(self, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array)
        return self.module.from_numpy(array).cuda() if self.is_torch else self.module.asarray(array)

    def get(self, array: Any) -> np.ndarray:
        self.sync()
        return array.cpu().numpy() if self.is_torch else self.module.asnumpy(array)

    def sync(self) -> None:
        if self.is_torch:
            self.module.cuda.synchronize()
        else:
            self.module.cuda.runtime.deviceSynchronize()


def _find_device() -> Device | None:
    try:
        torch = importlib.import_module("torch")
        if torch.cuda.is_available():
            return Device(torch)
    except ImportError:
        pass
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return Device(cupy)
    except Exception:  # noqa: BLE001 - CuPy missing, or present without a driver
        pass
    return None


def _capability_arch() -> str:
    capability = manifest.visible_compute_capability()
    assert capability is not None
    return f"{capability[0]}{capability[1]}"


@pytest.fixture(scope="module")
def device() -> Device:
    found = _find_device()
    if found is None:
        pytest.skip("no CUDA GPU visible to torch.cuda or CuPy")
    return found


@pytest.fixture(scope="module")
def kernels(device: Device, tmp_path_factory: pytest.TempPathFactory) -> launchers.MaskedOpsKernels:
    if os.environ.get(loader.KERNELS_LIB_ENV):
        return loader.load_kernels()
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found: cannot build the kernels library")
    out = tmp_path_factory.mktemp("kernels")
    result = build_plugins(PluginBuildConfig(out_dir=out, kernels_only=True, archs=(_capability_arch(),)))
    return loader.load_kernels(result.out_dir)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GATHER_CASES)
def test_gather_matches_reference(kernels, device, rng, case, dtype) -> None:
    n, c, h, w, tile, halo, b = case
    dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, dtype)
    size = tile + 2 * halo
    out = device.put(np.full((b, c, size, size), np.nan, dtype=dtype))  # unwritten elements would show
    kernels.gather(out, device.put(dense), device.put(tiles), tile, halo)
    assert_bit_equal(device.get(out), masked_gather(dense, tiles, tile, halo))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_into_misaligned_output(kernels, device, rng, dtype) -> None:
    """The kernels assume no alignment: an output one element off runs and is right."""
    n, c, h, w, tile, halo, b = 1, 5, 19, 21, 4, 1, 12
    dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, dtype)
    size = tile + 2 * halo
    storage = device.put(np.zeros(b * c * size * size + 1, dtype=dtype))
    out = storage[1:].reshape(b, c, size, size)
    kernels.gather(out, device.put(dense), device.put(tiles), tile, halo)
    assert_bit_equal(device.get(out), masked_gather(dense, tiles, tile, halo))


@pytest.mark.gpu
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SCATTER_CASES)
def test_scatter_matches_reference(kernels, device, rng, case, dtype, in_place) -> None:
    base, values, tiles = scatter_inputs(rng, *case, dtype)
    expected = masked_scatter(base, values, tiles)
    base_dev = device.put(base)
    out = base_dev if in_place else device.put(np.full(base.shape, np.nan, dtype=dtype))
    kernels.scatter(out, base_dev, device.put(values), device.put(tiles))
    assert_bit_equal(device.get(out), expected)
    if not in_place:
        assert_bit_equal(device.get(base_dev), base)


@pytest.mark.gpu
def test_wrappers_reject_mismatched_arrays(kernels, device) -> None:
    dense = device.put(np.zeros((1, 4, 6, 6), np.float32))
    tiles = device.put(np.arange(3, dtype=np.int32))
    with pytest.raises(ValueError, match="float32/float16"):
        kernels.gather(device.put(np.zeros((3, 4, 5, 5), np.float16)), dense, tiles, 3, 1)
    with pytest.raises(ValueError, match="out must be"):
        kernels.gather(device.put(np.zeros((3, 4, 3, 3), np.float32)), dense, tiles, 3, 1)
    with pytest.raises(ValueError, match="tile must be"):
        kernels.gather(device.put(np.zeros((3, 4, 1, 1), np.float32)), dense, tiles, 0, 1)
    with pytest.raises(ValueError, match="values must be"):
        kernels.scatter(dense, dense, device.put(np.zeros((3, 4, 3, 2), np.float32)), tiles)
    with pytest.raises(TypeError, match="CUDA device array"):
        kernels.scatter(np.zeros((1, 4, 6, 6), np.float32), dense, device.put(np.zeros((3, 4, 3, 3), np.float32)),
                        tiles)


# --- TensorRT one-op engines --------------------------------------------------------------


@pytest.fixture(scope="module")
def tensorrt(device: Device, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    if not device.is_torch:
        pytest.skip("the TensorRT engine tests bind torch CUDA tensors; torch has no GPU here")
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        pytest.skip("TensorRT's Python package is not installed")
    try:
        if os.environ.get(loader.PLUGIN_LIB_ENV):
            loader.load()
        else:
            result = build_plugins(PluginBuildConfig(out_dir=tmp_path_factory.mktemp("plugins"),
                                                     archs=(_capability_arch(),)))
            loader.load(result.plugin_library)
    except UserError as exc:
        pytest.skip(f"cannot build or load the m2ae plugin library here: {exc}")
    return trt


def run_one_op_engine(trt: ModuleType, op_type: str, inputs: dict[str, np.ndarray], out_shape: tuple[int, ...],
                      attributes: dict[str, int]) -> np.ndarray:
    """Build an engine from a one-node ONNX (custom op in the m2ae domain), run it once."""
    import torch
    from onnx import helper

    dtype = next(iter(inputs.values())).dtype
    node = helper.make_node(op_type, list(inputs), ["out"], domain=DOMAIN, plugin_version=PLUGIN_VERSION,
                            plugin_namespace=PLUGIN_NAMESPACE, **attributes)
    graph = helper.make_graph(
        [node], f"one_{op_type}",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for name, a in inputs.items()],
        [helper.make_tensor_value_info("out", helper.np_dtype_to_tensor_dtype(dtype), out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8  # what TensorRT 10's parser reads for opset 17

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, strongly_typed=True))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise AssertionError(f"ONNX parser rejected the {op_type} node: {errors}")
    serialized = builder.build_serialized_network(network, builder.create_builder_config())
    assert serialized is not None, f"TensorRT could not build the {op_type} engine"
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()

    device_inputs = {name: torch.from_numpy(np.ascontiguousarray(a)).cuda() for name, a in inputs.items()}
    out = torch.full(out_shape, float("nan"), dtype=torch.from_numpy(np.zeros(1, dtype)).dtype, device="cuda")
    for name, tensor in device_inputs.items():
        context.set_tensor_address(name, tensor.data_ptr())
    context.set_tensor_address("out", out.data_ptr())
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.cpu().numpy()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [(2, 17, 16, 16, 8, 2, 8), (1, 3, 17, 13, 4, 1, 20)])
def test_tensorrt_gather_plugin_matches_reference(tensorrt, rng, case, dtype) -> None:
    n, c, h, w, tile, halo, b = case
    dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, dtype)
    size = tile + 2 * halo
    out = run_one_op_engine(tensorrt, GATHER_OP, {"dense": dense, "tiles": tiles}, (b, c, size, size),
                            {"tile": tile, "halo": halo})
    assert_bit_equal(out, masked_gather(dense, tiles, tile, halo))


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [(2, 17, 16, 16, 8, 5), (1, 3, 17, 13, 4, 20)])
def test_tensorrt_scatter_plugin_matches_reference(tensorrt, rng, case, dtype) -> None:
    base, values, tiles = scatter_inputs(rng, *case, dtype)
    out = run_one_op_engine(tensorrt, SCATTER_OP, {"base": base, "values": values, "tiles": tiles}, base.shape, {})
    assert_bit_equal(out, masked_scatter(base, values, tiles))


def test_reference_inputs_are_valid(rng) -> None:
    """The generators above feed the reference without tripping its range checks, and
    scatter ids are unique and start at the corners."""
    for n, c, h, w, tile, halo, b in GATHER_CASES:
        dense, tiles = gather_inputs(rng, n, c, h, w, tile, b, np.float32)
        masked_gather(dense, tiles, tile, halo)
    for case in SCATTER_CASES:
        base, values, tiles = scatter_inputs(rng, *case, np.float32)
        assert np.unique(tiles).size == tiles.size
        masked_scatter(base, values, tiles)
    corners = {0, 4, 15, 19}  # of the 4 x 5 grid over a 13 x 17 map in tiles of 4
    assert corners <= set(random_tiles(rng, 4, 1, 13, 17, 4).tolist())
