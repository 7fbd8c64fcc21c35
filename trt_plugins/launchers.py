"""Typed ctypes wrappers of the C launchers in ``libm2ae_kernels.so`` (and in the plugin library).

They take device arrays (torch CUDA tensors, CuPy arrays: anything with
``__cuda_array_interface__``), check them against ``contract`` like every host-side
implementation (ids aside: they are on the device) and launch on the caller's stream.
Tests and benchmarks use them; ``loader.load_kernels`` finds the library and wraps it.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from m2ae.trt_plugins.contract import Operand, check_gather, check_scatter
from m2ae.trt_plugins.reference import NUMPY_DTYPES

_DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}  # M2aeDtype in masked_ops_kernels.h


@dataclass(frozen=True)
class DeviceArray:
    """The parts of ``__cuda_array_interface__`` the launchers need."""

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def of(cls, name: str, array: Any) -> DeviceArray:
        interface = getattr(array, "__cuda_array_interface__", None)
        if interface is None:
            raise TypeError(f"{name} must be a CUDA device array (torch CUDA tensor or CuPy array)")
        shape = tuple(int(s) for s in interface["shape"])
        dtype = np.dtype(interface["typestr"])
        strides = interface.get("strides")
        if strides is not None:
            expected = dtype.itemsize
            for size, stride in zip(reversed(shape), reversed(strides)):
                if size > 1 and stride != expected:
                    raise ValueError(f"{name} must be C-contiguous, got strides {strides} for shape {shape}")
                expected *= size
        return cls(pointer=int(interface["data"][0]), shape=shape, dtype=dtype)

    @property
    def operand(self) -> Operand:
        return Operand(self.shape, self.dtype)


def _device_arrays(**arrays: Any) -> list[DeviceArray]:
    return [DeviceArray.of(name, array) for name, array in arrays.items()]


def _check_out(out: DeviceArray, data: DeviceArray, data_name: str, shape: tuple[int, ...]) -> None:
    """The output buffer: ``shape``, and the dtype of the data it receives."""
    if out.dtype != data.dtype:
        raise ValueError(f"{data_name} and out must share float32/float16, got {data.dtype} and {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out must be {list(shape)}, got {out.shape}")


class MaskedOpsKernels:
    """The launchers of ``libm2ae_kernels.so`` (or of the plugin library, which holds them too)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        i64, i32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
        lib.m2ae_masked_gather.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, i32, i32, i32, ptr]
        lib.m2ae_masked_gather.restype = ctypes.c_int
        lib.m2ae_masked_scatter.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i32, i32, ptr]
        lib.m2ae_masked_scatter.restype = ctypes.c_int
        lib.m2ae_cuda_error_string.argtypes = [ctypes.c_int]
        lib.m2ae_cuda_error_string.restype = ctypes.c_char_p
        lib.m2ae_kernels_build_info.restype = ctypes.c_char_p

    def build_info(self) -> dict[str, Any]:
        return json.loads(self.lib.m2ae_kernels_build_info().decode())

    def _check(self, op: str, status: int) -> None:
        if status != 0:
            reason = self.lib.m2ae_cuda_error_string(status).decode()
            raise RuntimeError(f"{op} failed: {reason} (CUDA error {status})")

    def gather(self, out: Any, dense: Any, tiles: Any, tile: int, halo: int, stream: int = 0) -> None:
        """``out[B,C,S,S] = MaskedGather(dense [N,C,H,W], tiles [B]; tile, halo)``, S = tile + 2*halo, on ``stream``."""
        o, d, t = _device_arrays(out=out, dense=dense, tiles=tiles)
        check_gather(d.operand, t.operand, tile, halo, NUMPY_DTYPES)
        n, c, h, w = d.shape
        size = tile + 2 * halo
        _check_out(o, d, "dense", (t.shape[0], c, size, size))
        status = self.lib.m2ae_masked_gather(o.pointer, d.pointer, t.pointer, n, c, h, w, t.shape[0], tile, halo,
                                             _DTYPE_CODES[d.dtype], stream)
        self._check("m2ae_masked_gather", status)

    def scatter(self, out: Any, base: Any, values: Any, tiles: Any, stream: int = 0) -> None:
        """``out = MaskedScatter(base [N,C,H,W], values [B,C,tile,tile], tiles [B])``; ``out`` may be ``base``."""
        o, b, v, t = _device_arrays(out=out, base=base, values=values, tiles=tiles)
        check_scatter(b.operand, v.operand, t.operand, NUMPY_DTYPES)
        _check_out(o, b, "base", b.shape)
        n, c, h, w = b.shape
        status = self.lib.m2ae_masked_scatter(o.pointer, b.pointer, v.pointer, t.pointer, n, c, h, w, t.shape[0],
                                              v.shape[3], _DTYPE_CODES[b.dtype], stream)
        self._check("m2ae_masked_scatter", status)
