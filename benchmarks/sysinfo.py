"""What machine a benchmark ran on, and its power draw on Jetson boards.

``machine_info`` collects the CPU, GPU, CUDA, library versions and platform so results
from different machines can be told apart. ``PowerSampler`` runs ``tegrastats`` in the
background on a Jetson and averages the board's input power; elsewhere it does nothing.
"""

from __future__ import annotations

import importlib
import os
import platform as pyplatform
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
#: total board input power rails, newest naming first (Orin: VDD_IN; Xavier/Nano: POM_5V_IN)
POWER_RAILS = ("VDD_IN", "POM_5V_IN")
# Orin prints "VDD_IN 4893mW/4893mW", Xavier and Nano "VDD_IN 5021/5021": current/average.
_RAIL_RE = re.compile(r"\b(" + "|".join(POWER_RAILS) + r")\s+(\d+)\s*(?:mW)?\s*/")


def _read_cpuinfo(cpuinfo: Path) -> str | None:
    try:
        return cpuinfo.read_text(errors="replace")
    except OSError:
        return None


def cpu_model(cpuinfo: Path = CPUINFO) -> str | None:
    text = _read_cpuinfo(cpuinfo)
    if text is None:
        return None
    for key in ("model name", "Hardware", "Model", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return None


#: (cpuinfo flag, name) from the widest vector unit down; x86 lists "flags", Arm "Features"
SIMD_LEVELS = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4.2"),
               ("sve", "sve"), ("asimd", "neon"))


def cpu_simd(cpuinfo: Path = CPUINFO) -> str | None:
    """The widest vector instruction set the CPU reports (avx512, avx2, ..., neon), or None.

    Pruned/dense latency ratios on the CPU depend on it: dense convs gain more from wider
    vectors than the tiled graph's data movement does.
    """
    text = _read_cpuinfo(cpuinfo)
    if text is None:
        return None
    match = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.MULTILINE)
    if match is None:
        return None
    flags = set(match.group(1).split())
    return next((name for flag, name in SIMD_LEVELS if flag in flags), None)


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, OSError, AttributeError):
        return None


def _torch_cuda() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"cuda_available": False}
    if not torch.cuda.is_available():
        return {"cuda_available": False, "torch_cuda_build": torch.version.cuda}
    return {
        "cuda_available": True,
        "torch_cuda_build": torch.version.cuda,
        "gpu_name": torch.cuda.get_device_name(0),
        "gpu_count": torch.cuda.device_count(),
    }


def machine_info() -> dict[str, Any]:
    """A JSON-ready description of this machine and the libraries a benchmark uses."""
    from m2ae.platform_info import detect_platform

    detected = detect_platform()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_simd": cpu_simd(),
        "cpu_count": os.cpu_count(),
        "platform": pyplatform.platform(),
        "python": pyplatform.python_version(),
        "is_jetson": detected.is_jetson,
        "jetson_model": detected.jetson_model,
        "gpu_name": detected.gpu_name,
        "compute_capability": detected.compute_capability,
        "cuda_driver_version": detected.cuda_driver_version,
        "tensorrt": detected.tensorrt_version,
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "onnx": _version("onnx"),
    }
    info.update(_torch_cuda())
    return info


def parse_power_mw(line: str) -> float | None:
    """Board input power (mW, the current reading) from one tegrastats line, or None."""
    readings = dict((rail, float(value)) for rail, value in _RAIL_RE.findall(line))
    for rail in POWER_RAILS:
        if rail in readings:
            return readings[rail]
    return None


class PowerSampler:
    """Context manager averaging ``tegrastats --interval 100`` power while it is open.

    ``mean_mw`` is None when tegrastats is absent, this is not a Jetson, or no line
    carried a power reading; benchmarks never depend on it.
    """

    def __init__(self, enabled: bool, interval_ms: int = 100) -> None:
        self.enabled = enabled and shutil.which("tegrastats") is not None
        self.interval_ms = interval_ms
        self._samples: list[float] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def mean_mw(self) -> float | None:
        return sum(self._samples) / len(self._samples) if self._samples else None

    def __enter__(self) -> PowerSampler:
        if not self.enabled:
            return self
        try:
            self._process = subprocess.Popen(
                ["tegrastats", "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        except OSError:
            self._process = None
            return self
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            value = parse_power_mw(line)
            if value is not None:
                self._samples.append(value)

    def __exit__(self, *exc_info: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
        self._process = None
