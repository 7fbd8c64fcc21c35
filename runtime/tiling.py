"""Tiled inference: any image size within a memory budget, equal to whole-image inference.

An image runs as a grid of overlapping windows, each one ``Engine.infer`` call (or a
batch of them); of each window only the centre is kept. The result equals whole-image
inference because

* the image is padded to the network's multiple exactly as whole-image inference pads
  it (``m2ae.padding.pad_to_multiple``; windows index the padding, the padded image is
  never built), and windows are cut from that padded image, so
  a window at the image border sees the same image border, with the network's own zero
  padding beyond it;
* a kept pixel lies at least ``halo`` pixels from every window edge that is not an image
  edge, and ``halo`` is the network's receptive field (``m2ae.model.receptive_field``,
  ``ModelInfo.receptive_field`` of every engine: ``m2ae.receptive_field`` in an ONNX's
  metadata, derived from the config for a checkpoint) rounded up to the multiple;
* windows start at multiples of ``engine.multiple``, which every stride in the network
  (the heads' 4, the U-Net's ``2**(S-1)``) divides: pixel-unshuffles, max-pools of the
  mask and the bilinear resizes see the same grid as in the whole image.

The network has no global operation. The pruned graph's two frame-level shortcuts (skip
an all-sharp frame, run the dense body above a tile occupancy) decide per window, but
both paths compute the dense result (docs/design.md section 2), so they change speed,
not values.

Without ``tile``, the window follows ``max_memory``: the whole image runs at once when
its working set (``BYTES_PER_PIXEL`` of the backend and preset times its pixels) fits,
otherwise the largest window that fits. TensorRT engines take the largest window their
optimisation profile allows: their memory is reserved for that profile when the engine
is built (``m2ae build --max``), not per call.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from tqdm import tqdm

from m2ae.cli_args import format_size
from m2ae.errors import UserError
from m2ae.padding import padded_size, round_up
from m2ae.runtime.base import Engine

#: Default working-set budget of one inference call. An 8 GB Jetson Orin Nano shares its
#: memory between CPU and GPU: after the OS (~1.5 GB), the runtime and its libraries
#: (~0.5-1 GB) and a large photo with its outputs in float32 (~50 bytes per image pixel,
#: 1.2 GB at 24 Mpx), 2 GiB for the network's activations leaves headroom.
DEFAULT_MAX_MEMORY = 2 * 2**30

#: Peak memory of one inference call per input pixel (float32 on the CPU, 2 threads):
#: the growth of the peak RSS over whole images of 1024^2 to 2048^2, the largest of the
#: pruned and dense graphs (random and trained weights), rounded up. Measured (bytes per
#: pixel): tiny 400-450 on PyTorch, 530-700 on ONNX Runtime, whose arena grows in large
#: steps; base 900-960 and 1050-1260. ``python -m m2ae.benchmarks.tiled_memory --calibrate``
#: measures a model.
BYTES_PER_PIXEL: dict[tuple[str, str], int] = {
    ("torch", "tiny"): 480,
    ("onnxruntime", "tiny"): 720,
    ("torch", "base"): 1000,
    ("onnxruntime", "base"): 1300,
}

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_memory(text: str, option: str = "--max-memory") -> int:
    """Bytes from ``2GB``, ``1.5G``, ``512MiB``, ``800M`` (powers of 1024 whichever the spelling)."""
    match = _MEMORY.match(text)
    if not match:
        raise UserError(f"{option} {text!r}: give a size such as 2GB, 1.5GB or 512MB")
    value = float(match.group(1)) * 1024 ** "BKMGT".index((match.group(2) or "B").upper())
    if value < 2**20:
        raise UserError(f"{option} {text!r}: at least 1MB")
    return int(value)


def format_memory(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def engine_receptive_field(engine: Engine) -> int:
    """The receptive field of the engine's network (``ModelInfo.receptive_field``)."""
    if engine.info.receptive_field is not None:
        return engine.info.receptive_field
    raise UserError(
        f"{engine.name}: exported by an older m2ae, without the m2ae.receptive_field metadata that tiled inference "
        "needs; re-export it with `m2ae export` (and rebuild engines with `m2ae build`), or run it untiled with "
        "a larger --max-memory"
    )


def halo_for(engine: Engine) -> int:
    """Pixels kept between a window's centre and its edges: the receptive field rounded up to the multiple."""
    return round_up(engine_receptive_field(engine), engine.multiple)


def smallest_tile(engine: Engine) -> int:
    return 2 * halo_for(engine) + engine.multiple


def bytes_per_pixel(engine: Engine) -> int:
    """Working set per input pixel of one call; unknown presets get the backend's largest."""
    preset = engine.info.preset
    known = {p: v for (backend, p), v in BYTES_PER_PIXEL.items() if backend == engine.backend}
    if not known:  # a backend measured nowhere: assume the worst measured anywhere
        return max(BYTES_PER_PIXEL.values())
    return known.get(preset, max(known.values()))


def _profile(engine: Engine) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(low, high) of (batch, H, W) for engines with a fixed optimisation profile (TensorRT)."""
    return getattr(engine, "input_profile", None)


@dataclass(frozen=True)
class Window:
    """One engine input: rows ``top:top+height`` and columns ``left:left+width`` of the
    padded image; of its output, rows ``keep_top:keep_bottom`` and columns
    ``keep_left:keep_right`` (padded-image coordinates) are kept."""

    top: int
    left: int
    keep_top: int
    keep_bottom: int
    keep_left: int
    keep_right: int


@dataclass(frozen=True)
class TilePlan:
    """How one image of ``height`` x ``width`` runs: windows of ``window_height`` x
    ``window_width`` in batches of ``batch`` (a single window is whole-image inference)."""

    height: int
    width: int
    padded_height: int
    padded_width: int
    window_height: int
    window_width: int
    halo: int
    batch: int
    #: pad a short last batch to ``batch`` windows (engines built for one batch size)
    fixed_batch: bool
    windows: tuple[Window, ...]

    @property
    def tiled(self) -> bool:
        return len(self.windows) > 1


def _axis(padded: int, window: int, halo: int, multiple: int) -> list[tuple[int, int, int]]:
    """(window start, keep start, keep end) along one axis of ``padded`` pixels.

    Keep segments split the axis evenly on multiples of ``multiple``, none longer than
    ``window - 2*halo``; a window starts ``halo`` before its segment, moved inside the image.
    """
    if window >= padded:
        return [(0, 0, padded)]
    core = window - 2 * halo
    units, count = padded // multiple, -(-padded // core)
    bounds = [multiple * (i * units // count) for i in range(count + 1)]
    return [(min(max(lo - halo, 0), padded - window), lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def _check_tile(engine: Engine, tile: int) -> None:
    multiple = engine.multiple
    low = smallest_tile(engine)
    if tile % multiple:
        raise UserError(
            f"--tile {tile}: must be a multiple of the network's multiple {multiple} "
            f"(e.g. {max(low, round_up(tile, multiple))})"
        )
    if tile < low:
        raise UserError(
            f"--tile {tile}: too small for a halo of {halo_for(engine)} pixels on each side (the network's "
            f"receptive field, {engine_receptive_field(engine)} pixels, rounded up to {multiple}); use at least "
            f"{low}; larger tiles spend less of their work on halos"
        )


def _known_receptive_field(engine: Engine) -> int | None:
    try:
        return engine_receptive_field(engine)
    except UserError:
        return None


def _memory_too_small(engine: Engine, max_memory: int) -> UserError:
    side = smallest_tile(engine)
    need = bytes_per_pixel(engine) * side**2
    return UserError(
        f"--max-memory {format_memory(max_memory)}: too small for the smallest tile this network can run "
        f"({side}x{side}, about {format_memory(need)} on {engine.backend}); give more"
    )


def check_tiling_options(engine: Engine, tile: int | None, batch: int | None, max_memory: int) -> None:
    """Raise UserError for options no large image could run with: before any image is read.

    A model without ``m2ae.receptive_field`` passes unless ``tile`` is given: it still
    runs every image that fits ``max_memory`` whole.
    """
    if batch is not None and batch < 1:
        raise UserError(f"--tile-batch {batch}: must be 1 or more")
    profile = _profile(engine)
    if tile is not None:
        _check_tile(engine, tile)
        if profile is not None and not max(profile[0][1:]) <= tile <= min(profile[1][1:]):
            raise UserError(
                f"--tile {tile}: outside the engine's profile ({format_size(profile[0][1:])} to "
                f"{format_size(profile[1][1:])}); build one for the tile: "
                f"`m2ae build --onnx X.onnx --opt {tile}x{tile} --max {tile}x{tile}`"
            )
    elif profile is None and _known_receptive_field(engine) is not None:
        if max_memory < bytes_per_pixel(engine) * (batch or 1) * smallest_tile(engine) ** 2:
            raise _memory_too_small(engine, max_memory)


def _window_sides(engine: Engine, padded_h: int, padded_w: int, tile: int | None, batch: int,
                  max_memory: int) -> tuple[int, int]:
    """The window before clipping to the padded image: the tile, the profile's largest
    input, or the whole image when it fits ``max_memory`` and else the largest square that does."""
    if tile is not None:
        _check_tile(engine, tile)
        return tile, tile
    profile = _profile(engine)
    if profile is not None:
        return profile[1][1], profile[1][2]
    per_pixel = bytes_per_pixel(engine) * batch
    if per_pixel * padded_h * padded_w <= max_memory:
        return padded_h, padded_w
    side = math.isqrt(max_memory // per_pixel) // engine.multiple * engine.multiple
    if side < smallest_tile(engine):
        raise _memory_too_small(engine, max_memory)
    return side, side


def plan_tiles(engine: Engine, height: int, width: int, tile: int | None = None, batch: int | None = None,
               max_memory: int = DEFAULT_MAX_MEMORY) -> TilePlan:
    """The windows an image of ``height`` x ``width`` runs in (see the module's docstring).

    ``batch``: windows per ``Engine.infer`` call (default 1, or a TensorRT engine's batch).
    """
    multiple = engine.multiple
    padded_h, padded_w = padded_size(height, width, multiple)
    profile = _profile(engine)
    fixed_batch = profile is not None and profile[0][0] == profile[1][0]
    if batch is None:
        batch = profile[0][0] if profile is not None else 1
    if batch < 1 or (profile is not None and not profile[0][0] <= batch <= profile[1][0]):
        allowed = "1 or more" if profile is None else f"{profile[0][0]} to {profile[1][0]} for this engine"
        raise UserError(f"--tile-batch {batch}: must be {allowed}")
    window_h, window_w = _window_sides(engine, padded_h, padded_w, tile, batch, max_memory)
    window_h, window_w = min(window_h, padded_h), min(window_w, padded_w)
    halo = 0
    if (window_h, window_w) != (padded_h, padded_w):
        halo = halo_for(engine)
        cut = [side for side, padded in ((window_h, padded_h), (window_w, padded_w)) if side < padded]
        if min(cut) < smallest_tile(engine):  # only an engine profile can be this small
            raise UserError(
                f"the engine takes at most {window_h}x{window_w}, too small for tiles with a halo of {halo} "
                f"pixels; rebuild it with `m2ae build --max` of at least "
                f"{smallest_tile(engine)}x{smallest_tile(engine)}"
            )
    rows = _axis(padded_h, window_h, halo, multiple)
    cols = _axis(padded_w, window_w, halo, multiple)
    windows = tuple(
        Window(top, left, keep_top, keep_bottom, keep_left, keep_right)
        for top, keep_top, keep_bottom in rows
        for left, keep_left, keep_right in cols
    )
    batch = batch if fixed_batch else min(batch, len(windows))
    return TilePlan(height, width, padded_h, padded_w, window_h, window_w, halo, batch, fixed_batch, windows)


def _selector(start: int, stop: int, size: int, padded: int, mode: str) -> slice | np.ndarray:
    """Positions ``start:stop`` of an axis of ``size`` padded at the end to ``padded`` as
    ``np.pad(mode=...)`` pads it: a slice (a view) inside the image, indices across its end."""
    if stop <= size:
        return slice(start, stop)
    return np.pad(np.arange(size), (0, padded - size), mode=mode)[start:stop]


def _cut(image: np.ndarray, rows: slice | np.ndarray, cols: slice | np.ndarray) -> np.ndarray:
    """``image[rows, cols]``, slicing before indexing so no copy is wider than the window."""
    if isinstance(rows, slice):
        return image[rows][:, cols]
    if isinstance(cols, slice):
        return image[:, cols][rows]
    return image[np.ix_(rows, cols)]


def _batches(plan: TilePlan) -> Iterator[tuple[Window, ...]]:
    for first in range(0, len(plan.windows), plan.batch):
        yield plan.windows[first : first + plan.batch]


def run_tiles(engine: Engine, image: np.ndarray, plan: TilePlan, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run ``plan`` on HWC float32 ``image``; returns (restored HWC clipped to [0, 1], mask HW bool)."""
    height, width = plan.height, plan.width
    # The mode pad_to_multiple picks for the whole image, so border windows match it.
    needs_edge = plan.padded_height - height >= height or plan.padded_width - width >= width
    mode = "edge" if needs_edge else "reflect"
    restored = np.empty((height, width, 3), dtype=np.float32)
    mask = np.empty((height, width), dtype=bool)
    # Zeros, not empty: a fixed-batch engine runs the unused slots of a short last batch.
    inputs = np.zeros((plan.batch, 3, plan.window_height, plan.window_width), dtype=np.float32)
    batches = tqdm(list(_batches(plan)), desc="tiles", unit="batch", leave=False, disable=not progress or not plan.tiled)
    for group in batches:
        for slot, window in enumerate(group):
            rows = _selector(window.top, window.top + plan.window_height, height, plan.padded_height, mode)
            cols = _selector(window.left, window.left + plan.window_width, width, plan.padded_width, mode)
            inputs[slot] = _cut(image, rows, cols).transpose(2, 0, 1)
        out = engine.infer(inputs if plan.fixed_batch else inputs[: len(group)])
        for slot, window in enumerate(group):
            bottom, right = min(window.keep_bottom, height), min(window.keep_right, width)
            if window.keep_top >= bottom or window.keep_left >= right:
                continue  # a window whose kept part is all padding
            rows = slice(window.keep_top - window.top, bottom - window.top)
            cols = slice(window.keep_left - window.left, right - window.left)
            restored[window.keep_top : bottom, window.keep_left : right] = out.restored[slot, :, rows, cols].transpose(1, 2, 0)
            mask[window.keep_top : bottom, window.keep_left : right] = out.mask[slot, 0, rows, cols] > 0.5
    np.clip(restored, 0.0, 1.0, out=restored)
    return restored, mask
