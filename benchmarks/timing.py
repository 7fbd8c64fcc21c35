"""Timing calls: wall clock on the CPU, CUDA events on a GPU, and torch's thread count.

torch is imported inside the functions that need it, so that ``kernel_bandwidth`` can say
"needs torch with CUDA" in one line where it is missing.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class Timing:
    times_ms: tuple[float, ...]
    timer: str  # "cuda_events" or "wall"

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.times_ms, q))

    @property
    def mean(self) -> float:
        return float(np.mean(self.times_ms))


class CudaTimer:
    """GPU time of the block, between two CUDA events on torch's current stream.

    The current stream is the legacy default stream, which orders against the TensorRT
    runtime's blocking stream, so engines' work is inside the bracket. ``ms`` is valid
    after the block (leaving it waits for the end event).
    """

    def __init__(self) -> None:
        import torch

        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self.ms = 0.0

    def __enter__(self) -> CudaTimer:
        self._start.record()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._end.record()
        self._end.synchronize()
        self.ms = float(self._start.elapsed_time(self._end))


def time_calls(call: Callable[[], object], iters: int, warmup: int, cuda_events: bool = False) -> Timing:
    """Run ``call`` ``warmup`` times untimed, then ``iters`` timed times, each timed alone
    (``CudaTimer`` with ``cuda_events``, else ``perf_counter``)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        if cuda_events:
            with CudaTimer() as timer:
                call()
            times.append(timer.ms)
        else:
            begin = time.perf_counter()
            call()
            times.append((time.perf_counter() - begin) * 1e3)
    return Timing(tuple(times), "cuda_events" if cuda_events else "wall")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block, restoring it after."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
