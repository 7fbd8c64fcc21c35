"""Running an m2ae TensorRT engine: a thin runtime behind the ``Engine`` interface.

Before deserializing, the engine's sidecar (written by ``m2ae build``) is checked
against this machine: an engine runs only on the TensorRT version and GPU architecture
that built it, and a mismatch ends in a message with the exact ``m2ae build`` command
that rebuilds it here, not in a TensorRT crash. I/O buffers are allocated once and
grow only when a larger input needs more; inference is ``set_input_shape`` +
``set_tensor_address`` + ``execute_async_v3`` on one stream, through pinned host
buffers, or zero-copy mapped host buffers where the GPU shares memory with the CPU
(Jetson). The CUDA calls go through ``cuda_binding``: cuda-python (``cuda.bindings``)
by default, pycuda where that is what is installed; ``cuda_binding_line`` says which.
The device's primary context is made current around every call (no
``pycuda.autoinit``), so the engine shares it with TensorRT, torch and CuPy.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2ae.cli_args import format_size
from m2ae.engine_sidecar import Sidecar, sidecar_path
from m2ae.errors import UserError
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK, OUTPUT_MASK, OUTPUT_RESTORED
from m2ae.hashing import file_sha256
from m2ae.model_info import ModelInfo
from m2ae.platform_info import (
    PlatformInfo,
    cuda_binding_line,
    detect_platform,
    install_hint,
    no_gpu_note,
    require_gpu,
    require_tensorrt,
)
from m2ae.runtime.base import Engine, EngineOutputs
from m2ae.runtime.cuda_binding import CudaBinding, CudaError, load_binding


def check_engine_compatible(
    sidecar: Sidecar, platform: PlatformInfo, engine_path: str | Path | None = None
) -> None:
    """Raise UserError if this machine cannot run the engine the sidecar describes.

    TensorRT version and compute capability must match exactly (a plan holds kernels for
    one architecture and one TensorRT). Another GPU model of the same architecture runs
    the engine, only maybe slower, so that is a warning.
    """
    engine = str(engine_path) if engine_path is not None else "the engine"
    rebuild = f"rebuild it on this machine: {sidecar.rebuild_command(engine_path or 'ENGINE')}"
    key = sidecar.key
    if platform.tensorrt_version is None:
        raise UserError(
            f"{engine}: running a TensorRT engine needs TensorRT {key.tensorrt_version}, which is not installed; "
            f"install it with: {install_hint(platform)}{no_gpu_note(platform)}"
        )
    require_gpu(platform)
    if platform.tensorrt_version != key.tensorrt_version:
        raise UserError(
            f"{engine}: built with TensorRT {key.tensorrt_version}, this machine has TensorRT "
            f"{platform.tensorrt_version}, and an engine runs only on the version that built it; {rebuild}"
        )
    if platform.compute_capability != key.compute_capability:
        raise UserError(
            f"{engine}: built for {key.gpu_name} (compute capability {key.compute_capability}), this machine has "
            f"{platform.gpu_name} (compute capability {platform.compute_capability}); {rebuild}"
        )
    if platform.gpu_name != key.gpu_name:
        warnings.warn(
            f"{engine}: built on {key.gpu_name}, running on {platform.gpu_name} (same architecture): it runs, "
            f"but kernels were tuned for the other GPU; for best speed {rebuild}",
            stacklevel=2,
        )


@dataclass
class _Buffer:
    pinned: np.ndarray  # page-locked host bytes (for zero-copy also mapped into the GPU's address space)
    flat: np.ndarray  # ``pinned`` viewed as the tensor's dtype
    device: int | None  # device allocation; None for zero-copy buffers
    address: int  # what TensorRT reads or writes
    host: np.ndarray  # the leading part of ``flat`` in the current shape

    def free(self, cuda: CudaBinding) -> None:
        if self.device is not None:
            cuda.device_free(self.device)
        cuda.pinned_free(self.pinned)


class TensorRTEngine(Engine):
    """An m2ae engine on one GPU; ``infer`` takes and returns float32 NCHW numpy arrays."""

    backend = "tensorrt"

    def __init__(
        self, path: str | Path, plugin: str | None = None, device: int = 0, cuda_binding: str | None = None
    ) -> None:
        """``cuda_binding``: ``"cuda-python"`` or ``"pycuda"``; default the first of them installed."""
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such engine file")
        meta_path = sidecar_path(self.path)
        if not meta_path.is_file():
            raise UserError(
                f"{self.path}: no sidecar {meta_path.name} beside it; m2ae runs engines built by `m2ae build`, "
                "whose sidecar records the model and the machine it was built for"
            )
        self._sidecar = Sidecar.read(meta_path)
        super().__init__(ModelInfo.from_metadata(self._sidecar.onnx_metadata, meta_path), self.path)

        platform = detect_platform(device=device)
        check_engine_compatible(self._sidecar, platform, self.path)
        self._trt = require_tensorrt(platform)
        self._cuda = load_binding(cuda_binding, platform)
        self._buffers: dict[str, _Buffer] = {}
        self._bound_shapes: tuple[tuple[int, ...], ...] | None = None
        self._stream: int | None = None

        gpu = self._cuda.open_device(device)
        self._device_open = True
        self._zero_copy = gpu.unified_memory
        #: one line: the CUDA binding this engine runs on, and how to install either (`m2ae infer` prints it)
        self.cuda_binding_line = cuda_binding_line(platform, f"{self._cuda.describe()} on {gpu.describe()}")
        with self._cuda.activate():
            self._load_plugin(plugin)
            logger = self._trt.Logger(self._trt.Logger.WARNING)
            self._trt.init_libnvinfer_plugins(logger, "")
            self._runtime = self._trt.Runtime(logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                raise UserError(
                    f"{self.path}: TensorRT could not deserialize the engine (its messages above say why); "
                    f"rebuild it on this machine: {self._sidecar.rebuild_command(self.path)}"
                )
            self._execution = self._engine.create_execution_context()
            if self._execution is None:
                raise UserError(
                    f"{self.path}: TensorRT could not create an execution context (out of GPU memory?); "
                    "its messages above say why"
                )
            self._stream = self._cuda.stream_create()
        self._input_names, self._output_names = self._io_names()
        self.info = self.info.with_graph_inputs(self._input_names)
        low, _, high = self._engine.get_tensor_profile_shape(INPUT_IMAGE, 0)
        self._profile_low = (low[0], low[2], low[3])
        self._profile_high = (high[0], high[2], high[3])

    # ------------------------------------------------------------ Engine interface

    @property
    def input_profile(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(smallest, largest) (batch, H, W) of the optimisation profile: tiled inference
        (``m2ae.runtime.tiling``) cuts larger images into windows of the largest."""
        return self._profile_low, self._profile_high

    def _run(self, image: np.ndarray, mask: np.ndarray | None) -> EngineOutputs:
        shapes = self._check_profile(image, mask)
        cuda = self._cuda
        with cuda.activate():
            if shapes != self._bound_shapes:
                self._bind(shapes)
            arrays = {INPUT_IMAGE: image} if mask is None else {INPUT_IMAGE: image, INPUT_MASK: mask}
            for name, array in arrays.items():
                buffer = self._buffers[name]
                np.copyto(buffer.host, array, casting="same_kind")
                if buffer.device is not None:
                    cuda.copy_to_device_async(buffer.device, buffer.host, self._stream)
            if not self._execution.execute_async_v3(self._stream):
                raise RuntimeError(f"{self.path}: TensorRT execution failed; its messages above say why")
            for name in self._output_names:
                buffer = self._buffers[name]
                if buffer.device is not None:
                    cuda.copy_to_host_async(buffer.host, buffer.device, self._stream)
            cuda.stream_synchronize(self._stream)
            # Copies: the buffers are overwritten by the next call.
            restored = self._buffers[OUTPUT_RESTORED].host.astype(np.float32)
            blur_mask = self._buffers[OUTPUT_MASK].host.astype(np.float32)
        return EngineOutputs(restored=restored, mask=blur_mask)

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Free the GPU buffers and TensorRT objects; the engine is unusable afterwards."""
        super().close()
        if not getattr(self, "_device_open", False):
            return
        cuda = self._cuda
        with cuda.activate():
            for buffer in self._buffers.values():
                buffer.free(cuda)
            self._buffers.clear()
            # TensorRT's objects go before the stream they ran on.
            for name in ("_execution", "_engine", "_runtime"):
                if hasattr(self, name):
                    delattr(self, name)
            if self._stream is not None:
                cuda.stream_destroy(self._stream)
                self._stream = None
        cuda.close()
        self._device_open = False

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------ internals

    def _load_plugin(self, plugin: str | None) -> None:
        """Register the plugin creators before deserializing an engine that uses them."""
        built_with = self._sidecar.key.plugin_sha256
        if built_with is None and plugin is None:
            return
        from m2ae.trt_plugins.loader import load

        if plugin is None and self._sidecar.plugin_path and Path(self._sidecar.plugin_path).is_file():
            plugin = self._sidecar.plugin_path  # the library the engine was built with, if it is still there
        library_path = load(plugin).path
        if built_with is not None and file_sha256(library_path) != built_with:
            warnings.warn(
                f"{self.path}: the plugin library {library_path} differs from the one the engine was built with; "
                f"if inference fails, rebuild: {self._sidecar.rebuild_command(self.path)}",
                stacklevel=3,
            )

    def _io_names(self) -> tuple[list[str], list[str]]:
        engine, trt = self._engine, self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        inputs_ok = INPUT_IMAGE in inputs and set(inputs) <= {INPUT_IMAGE, INPUT_MASK}
        if not inputs_ok or set(outputs) != {OUTPUT_RESTORED, OUTPUT_MASK}:
            raise UserError(
                f"{self.path}: engine I/O {names} is not input {INPUT_IMAGE!r} (and {INPUT_MASK!r}) with outputs "
                f"{OUTPUT_RESTORED!r} and {OUTPUT_MASK!r}; is this an m2ae engine?"
            )
        return inputs, outputs

    def _check_profile(self, image: np.ndarray, mask: np.ndarray | None) -> tuple[tuple[int, ...], ...]:
        """The shapes to bind; UserError outside the optimisation profile (``infer`` checked the rest)."""
        n, _, h, w = image.shape
        low, high = self._profile_low, self._profile_high
        if not all(lo <= side <= hi for lo, side, hi in zip(low, (n, h, w), high)):
            raise UserError(
                f"{self.path}: a batch of {n} images of {h}x{w} is outside the engine's profile "
                f"({format_size(low[1:])} to {format_size(high[1:])}, batch {low[0]} to {high[0]}); "
                "run larger images in tiles that fit it (`m2ae infer --tile N`, by default the profile's largest "
                "size), or rebuild with `m2ae build` and a wider --min/--max or another --batch"
            )
        return (image.shape,) if mask is None else (image.shape, mask.shape)

    def _bind(self, shapes: tuple[tuple[int, ...], ...]) -> None:
        """Set input shapes and point TensorRT at buffers big enough for them.

        A buffer is reallocated only when a shape needs more than it holds, so images
        that alternate between sizes reuse the memory of the largest one.
        """
        trt = self._trt
        self._bound_shapes = None
        for name, shape in zip((INPUT_IMAGE, INPUT_MASK), shapes):
            if not self._execution.set_input_shape(name, shape):
                raise UserError(f"{self.path}: TensorRT rejected input {name!r} of shape {shape}")
        for name in self._input_names + self._output_names:
            # Outputs are [N,3,H,W] and [N,1,H,W]: known once the inputs' shapes are set.
            shape = tuple(self._execution.get_tensor_shape(name))
            if any(side < 0 for side in shape):
                raise RuntimeError(f"{self.path}: output {name!r} has a data-dependent shape {shape}")
            buffer = self._buffers.get(name)
            if buffer is None or buffer.flat.size < math.prod(shape):
                if buffer is not None:
                    buffer.free(self._cuda)
                    del self._buffers[name]
                buffer = self._allocate(math.prod(shape), trt.nptype(self._engine.get_tensor_dtype(name)))
                self._buffers[name] = buffer
            buffer.host = buffer.flat[: math.prod(shape)].reshape(shape)
            if not self._execution.set_tensor_address(name, buffer.address):
                raise RuntimeError(f"{self.path}: TensorRT refused the buffer of {name!r}")
        self._bound_shapes = shapes

    def _allocate(self, count: int, dtype: type) -> _Buffer:
        cuda = self._cuda
        dtype = np.dtype(dtype)
        nbytes = max(count, 1) * dtype.itemsize  # the driver refuses empty allocations
        if self._zero_copy:
            try:
                pinned = cuda.pinned_empty(nbytes, mapped=True)
                try:
                    address = cuda.mapped_pointer(pinned)
                except CudaError:
                    cuda.pinned_free(pinned)
                    raise
                flat = pinned.view(dtype)
                return _Buffer(pinned=pinned, flat=flat, device=None, address=address, host=flat)
            except CudaError as exc:
                # A context without host mapping: fall back to copies for good.
                warnings.warn(f"{self.path}: zero-copy buffers unavailable ({exc}); using device copies", stacklevel=4)
                self._zero_copy = False
        pinned = cuda.pinned_empty(nbytes)
        try:
            device = cuda.device_alloc(nbytes)
        except CudaError:
            cuda.pinned_free(pinned)
            raise
        flat = pinned.view(dtype)
        return _Buffer(pinned=pinned, flat=flat, device=device, address=device, host=flat)
