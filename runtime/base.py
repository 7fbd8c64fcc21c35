"""The engine interface every backend implements (the graphs' I/O is ``m2ae.graph_io``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from m2ae.errors import UserError

ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
SHIPPED_CHECKPOINTS = ("tiny",)


@dataclass(frozen=True)
class EngineOutputs:
    restored: np.ndarray  # float32 [N,3,H,W]
    mask: np.ndarray  # float32 [N,1,H,W], values 0 or 1


class Engine(Protocol):
    """What ``m2ae infer``, parity and benchmarks need from any backend."""

    #: "torch", "onnxruntime" or "tensorrt"
    backend: str
    #: the model's metadata (ONNX metadata_props, or the engine's JSON sidecar)
    metadata: dict[str, str]

    @property
    def takes_mask(self) -> bool:
        """True when the model has a ``mask`` input (a ``*_maskin_*`` export)."""

    @property
    def multiple(self) -> int:
        """H and W of the input must be multiples of this."""

    def infer(self, image: np.ndarray, mask: np.ndarray | None = None) -> EngineOutputs:
        """Run on float32 [N,3,H,W] (and [N,1,H,W] mask for mask-input models)."""


def open_engine(path: str | Path, **options) -> Engine:
    """Open a model with the backend its file suffix names.

    ``.onnx``: ONNX Runtime; ``.engine``/``.plan``/``.trt``: TensorRT; a checkpoint
    (``.pt``/``.pth``, or ``tiny`` for the shipped one): PyTorch, pruned.
    """
    if str(path) in SHIPPED_CHECKPOINTS:
        from m2ae.runtime.torch_engine import TorchEngine

        return TorchEngine(str(path), **options)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        from m2ae.runtime.torch_engine import TorchEngine

        return TorchEngine(path, **options)
    if suffix in ONNX_SUFFIXES:
        from m2ae.runtime.onnx_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, **options)
    if suffix in TENSORRT_SUFFIXES:
        from m2ae.runtime.trt_engine import TensorRTEngine

        return TensorRTEngine(path, **options)
    raise UserError(
        f"{path}: unknown model type {suffix!r}; expected an ONNX file ({', '.join(ONNX_SUFFIXES)}), "
        f"a TensorRT engine ({', '.join(TENSORRT_SUFFIXES)}) or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})"
    )
