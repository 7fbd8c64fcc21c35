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
from m2ae.model_info import ModelInfo
from m2ae.runtime.base import Engine, EngineOutputs


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


class OnnxRuntimeEngine(Engine):
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
        info = ModelInfo.from_onnx(model, self.path)
        self.session = make_session(model, providers=providers, threads=threads)
        super().__init__(info.with_graph_inputs(i.name for i in self.session.get_inputs()), self.path)

    def _run(self, image: np.ndarray, mask: np.ndarray | None) -> EngineOutputs:
        feed = {INPUT_IMAGE: np.ascontiguousarray(image, dtype=np.float32)}
        if mask is not None:
            feed[INPUT_MASK] = np.ascontiguousarray(mask, dtype=np.float32)
        restored, blur_mask = self.session.run([OUTPUT_RESTORED, OUTPUT_MASK], feed)
        return EngineOutputs(restored.astype(np.float32, copy=False), blur_mask.astype(np.float32, copy=False))

    def close(self) -> None:
        """Release the session now: its worker threads stop competing for the CPU."""
        self.session = None
        super().close()
