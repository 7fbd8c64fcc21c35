"""ONNX Runtime engine: runs any exported variant on the CPU (or another ORT provider).

Models with ``m2ae`` custom ops get them registered through onnxruntime-extensions
(``m2ae.trt_plugins.ort_ops``); portable and dense models run on plain ONNX Runtime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from m2ae.errors import UserError
from m2ae.graph_io import INPUT_IMAGE, INPUT_MASK, OUTPUT_MASK, OUTPUT_RESTORED
from m2ae.runtime.base import EngineOutputs
from m2ae.runtime.checks import check_finite_outputs, check_inputs


def max_threads() -> int:
    """The most CPU threads accepted: a few per core covers oversubscription on purpose,
    more is a typo that would start thousands of spinning workers."""
    return 4 * (os.cpu_count() or 1)


def check_threads(threads: int, option: str = "threads") -> int:
    """Return ``threads``, or raise UserError unless it lies in 1..``max_threads()``
    (ONNX Runtime reads 0 as "all cores" and fails late on negative counts)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= max_threads():
        raise UserError(
            f"{option} {threads!r}: give 1 to {max_threads()} ({os.cpu_count()} CPUs here), "
            "or leave it out to use all of them"
        )
    return threads


def read_metadata(model: onnx.ModelProto, path: Path) -> dict[str, str]:
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if "m2ae.multiple" not in metadata:
        raise UserError(f"{path}: not an m2ae model (no m2ae metadata); export one with `m2ae export`")
    return metadata


class OnnxRuntimeEngine:
    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        from m2ae.trt_plugins.ort_ops import make_session

        self.path = Path(path)
        self.threads = None if threads is None else check_threads(threads)
        try:
            model = onnx.load(self.path)
        except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a bad file
            raise UserError(f"{self.path}: not a readable ONNX model ({type(exc).__name__})") from None
        self.metadata = read_metadata(model, self.path)
        self.session = make_session(model, providers=providers, threads=threads)
        self._inputs = [i.name for i in self.session.get_inputs()]

    @property
    def takes_mask(self) -> bool:
        return INPUT_MASK in self._inputs

    @property
    def multiple(self) -> int:
        return int(self.metadata["m2ae.multiple"])

    @property
    def min_size(self) -> int:
        return int(self.metadata.get("m2ae.min_size", self.multiple))

    def close(self) -> None:
        """Release the session now: its worker threads stop competing for the CPU."""
        self.session = None

    def infer(self, image: np.ndarray, mask: np.ndarray | None = None) -> EngineOutputs:
        if self.session is None:
            raise UserError(f"{self.path}: this engine was closed")
        check_inputs(image, mask, self.takes_mask, self.multiple, self.min_size)
        feed = {INPUT_IMAGE: np.ascontiguousarray(image, dtype=np.float32)}
        if self.takes_mask:
            feed[INPUT_MASK] = np.ascontiguousarray(mask, dtype=np.float32)
        restored, blur_mask = self.session.run([OUTPUT_RESTORED, OUTPUT_MASK], feed)
        outputs = EngineOutputs(restored.astype(np.float32, copy=False), blur_mask.astype(np.float32, copy=False))
        return check_finite_outputs(outputs, self.path)
