"""The engine every backend is (the graphs' I/O is ``m2ae.graph_io``), and the one way to open one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from m2ae.errors import UserError
from m2ae.model_info import ModelInfo
from m2ae.runtime.checks import check_finite_outputs, check_inputs

if TYPE_CHECKING:
    from m2ae.model.checkpoint import LoadedCheckpoint

ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
SHIPPED_CHECKPOINTS = ("tiny",)


@dataclass(frozen=True)
class EngineOutputs:
    restored: np.ndarray  # float32 [N,3,H,W]
    mask: np.ndarray  # float32 [N,1,H,W], values 0 or 1


class Engine(ABC):
    """What ``m2ae infer``, parity and benchmarks need from any backend.

    Subclasses read their ``ModelInfo`` once, in their constructor, and implement ``_run``;
    the input checks, the NaN/Inf check and the closed state live here, once.
    Engines are context managers: ``with open_engine(path) as engine: ...``.
    """

    #: "torch", "onnxruntime" or "tensorrt"
    backend: ClassVar[str]

    def __init__(self, info: ModelInfo, name: str | Path) -> None:
        self.info = info
        #: how messages name the model (its path, or the shipped checkpoint's name)
        self.name = str(name)
        self._closed = False

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``m2ae.*`` metadata, as an ONNX or a sidecar would hold it."""
        return self.info.to_metadata()

    @property
    def takes_mask(self) -> bool:
        """True when the model has a ``mask`` input (a ``*_maskin_*`` export)."""
        return self.info.mask_input

    @property
    def multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return self.info.multiple

    @property
    def min_size(self) -> int:
        """H and W of the input must be at least this."""
        return self.info.min_size

    def infer(self, image: np.ndarray, mask: np.ndarray | None = None) -> EngineOutputs:
        """Run on float32 [N,3,H,W] (and [N,1,H,W] mask for mask-input models)."""
        if self._closed:
            raise UserError(f"{self.name}: this engine was closed")
        check_inputs(image, mask, self.takes_mask, self.multiple, self.min_size)
        return check_finite_outputs(self._run(image, mask), self.name)

    @abstractmethod
    def _run(self, image: np.ndarray, mask: np.ndarray | None) -> EngineOutputs:
        """The backend's forward pass on checked inputs."""

    def close(self) -> None:
        """Release what the backend holds (sessions, GPU memory); later ``infer`` calls fail.
        Subclasses free their resources and call this."""
        self._closed = True

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_engine(model: str | Path | LoadedCheckpoint, **options) -> Engine:
    """Open a model with the backend its file suffix names.

    ``.onnx``: ONNX Runtime; ``.engine``/``.plan``/``.trt``: TensorRT; a checkpoint
    (``.pt``/``.pth``, ``tiny`` for the shipped one, or an already loaded
    ``LoadedCheckpoint``, so an orchestrator loads it once): PyTorch, pruned by default.
    ``options`` go to the backend's constructor.
    """
    from m2ae.model.checkpoint import LoadedCheckpoint

    if isinstance(model, LoadedCheckpoint) or str(model) in SHIPPED_CHECKPOINTS:
        from m2ae.runtime.torch_engine import TorchEngine

        return TorchEngine(model, **options)
    path = Path(model)
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
