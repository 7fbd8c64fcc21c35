"""Peak memory of whole-image against tiled inference (``m2ae.runtime.tiling``).

``python -m m2ae.benchmarks.tiled_memory`` runs, each in a fresh subprocess so that
peaks do not mix, ``restore_image`` on a large synthetic photo (the astronaut scikit-image
ships, repeated and locally box-blurred so the predicted mask is partial): 2000x3000
(height x width, as every m2ae size) whole, 2000x3000 in the tiles ``--max-memory``
picks, and 6000x8000 in tiles, on PyTorch (the checkpoint) and ONNX Runtime (its fp32
plugin export, made in a temporary folder). It prints, per run, the RSS before inference
(libraries, model, input image), the peak RSS during inference (Linux's peak counter is
reset first), their difference (the inference working set plus the float32 restored
image and mask it returns, 13 bytes per image pixel) per image pixel and per pixel of
the largest engine input, the windows and the time.

``--calibrate`` runs whole images of 1024^2 and 2048^2 instead: the working set per
pixel of one engine call, which ``m2ae.runtime.tiling.BYTES_PER_PIXEL`` holds per
backend and preset. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from m2ae.cli_args import Size, format_size, parse_names, parse_size
from m2ae.errors import UserError

UNLIMITED = 1 << 50  # a --max-memory no image reaches: whole-image inference
BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class Case:
    model: str
    height: int
    width: int
    max_memory: int
    threads: int


@dataclass(frozen=True)
class Measurement:
    backend: str
    height: int
    width: int
    windows: int
    window: str
    rss_before: int
    rss_peak: int
    seconds: float
    blurred: float

    @property
    def working_set(self) -> int:
        return self.rss_peak - self.rss_before


def _status(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in bytes (Linux)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


def _reset_peak() -> None:
    """Make the peak RSS the current RSS (Linux 4.0+), so building the input image and the
    warm-up do not count as inference."""
    Path("/proc/self/clear_refs").write_text("5")


def synthetic_photo(height: int, width: int) -> np.ndarray:
    """The astronaut as float32 [H, W, 3], repeated to ``height`` x ``width``, with a blurred
    square every 1024 pixels."""
    from scipy.ndimage import uniform_filter
    from skimage import data

    tile = data.astronaut().astype(np.float32) / 255.0
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    image = np.ascontiguousarray(np.tile(tile, reps)[:height, :width])
    for top in range(0, height - 256, 1024):
        for left in range(0, width - 256, 1024):
            patch = image[top + 64 : top + 320, left + 64 : left + 320]
            patch[...] = uniform_filter(patch, size=(15, 15, 1), mode="nearest")
    return image


def _child(case: Case) -> Measurement:
    """One measurement, in this (fresh) process."""
    import torch

    from m2ae.runtime.base import open_engine
    from m2ae.runtime.infer import restore_image
    from m2ae.runtime.tiling import plan_tiles

    torch.set_num_threads(case.threads)
    onnx = case.model.endswith(".onnx")
    engine = open_engine(case.model, **({"threads": case.threads} if onnx else {}))
    image = synthetic_photo(case.height, case.width)
    restore_image(engine, image[:256, :256])  # load what runs lazily (kernels, arenas) before measuring
    plan = plan_tiles(engine, case.height, case.width, max_memory=case.max_memory)
    _reset_peak()
    before = _status("VmRSS")
    start = time.perf_counter()
    _, mask = restore_image(engine, image, max_memory=case.max_memory)
    seconds = time.perf_counter() - start
    return Measurement(engine.backend, case.height, case.width, len(plan.windows),
                       f"{plan.window_height}x{plan.window_width}", before, _status("VmHWM"), seconds,
                       float(mask.mean()))


def measure(case: Case) -> Measurement:
    """Run ``case`` in a subprocess; its last stdout line is the measurement as JSON."""
    command = [sys.executable, "-m", "m2ae.benchmarks.tiled_memory", "--child", json.dumps(asdict(case))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case}: the measurement failed:\n{done.stderr[-2000:]}")
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def _export_plugin(checkpoint: str, folder: Path) -> str:
    from m2ae.export.onnx_export import ExportConfig, export_models

    written = export_models(ExportConfig(checkpoint=checkpoint, out=folder, variants=("plugin",), progress=False))
    return str(written[0].path)


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f}"


def _print(measurement: Measurement, label: str) -> None:
    m = measurement
    height, width = (int(side) for side in m.window.split("x"))
    print(
        f"| {m.backend} | {format_size((m.height, m.width))} | {label} | {m.windows} x {m.window} | "
        f"{_mib(m.rss_before)} | {_mib(m.rss_peak)} | {_mib(m.working_set)} | "
        f"{m.working_set / (m.height * m.width):.0f} | "
        f"{m.working_set / (height * width):.0f} | {m.seconds:.0f} | {100 * m.blurred:.0f}% |",
        flush=True,
    )


def _sizes(text: str, option: str) -> list[Size]:
    return [parse_size(size, option) for size in parse_names(text, option)]


def _plan(args: argparse.Namespace) -> tuple[tuple[str, ...], list[tuple[Size, int, str]]]:
    """The backends, and per run: image size, memory budget and label."""
    from m2ae.runtime.tiling import parse_memory

    budget = parse_memory(args.max_memory)
    backends = parse_names(args.backends, "--backends", choices=BACKENDS)
    if args.calibrate:
        return backends, [((side, side), UNLIMITED, "whole") for side in (1024, 2048)]
    tiled = f"tiled, {args.max_memory}"
    runs: list[tuple[Size, int, str]] = []
    for size in _sizes(args.whole, "--whole"):
        runs += [(size, UNLIMITED, "whole"), (size, budget, tiled)]
    return backends, runs + [(size, budget, tiled) for size in _sizes(args.tiled, "--tiled")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2ae.benchmarks.tiled_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="tiny", help="checkpoint for PyTorch and the ONNX export (default tiny)")
    parser.add_argument("--onnx", help="an ONNX model for ONNX Runtime (default: export the checkpoint's plugin fp32)")
    parser.add_argument("--backends", default="torch,onnx", help="torch, onnx or both (default)")
    parser.add_argument("--whole", default="2000x3000",
                        help="sizes run whole and tiled, comma-separated HEIGHTxWIDTH (default 2000x3000)")
    parser.add_argument("--tiled", default="6000x8000", help="sizes run tiled only, HEIGHTxWIDTH (default 6000x8000)")
    parser.add_argument("--max-memory", default="2GB", help="budget the tiled runs get (default 2GB)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--calibrate", action="store_true", help="whole 1024^2 and 2048^2 images: bytes per pixel")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asdict(_child(Case(**json.loads(args.child))))))
        return 0
    try:
        backends, runs = _plan(args)
    except UserError as exc:
        print(f"tiled_memory: {exc}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        models = {"torch": args.checkpoint}
        if "onnx" in backends:
            models["onnx"] = args.onnx or _export_plugin(args.checkpoint, Path(scratch))
        print("| backend | image | run | windows | RSS before MiB | peak RSS MiB | peak - before MiB | "
              "B / image px | B / window px | s | mask |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
        for backend in backends:
            for (height, width), max_memory, label in runs:
                _print(measure(Case(models[backend], height, width, max_memory, args.threads)), label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
