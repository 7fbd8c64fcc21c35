"""Achieved memory bandwidth of the MaskedGather / MaskedScatter CUDA kernels.

``python -m m2ae.benchmarks.kernel_bandwidth`` measures, on the current CUDA device,
the device-to-device copy bandwidth (cudaMemcpy of a large buffer: the practical
ceiling) and the bandwidth the two kernels achieve, as the bytes they must move
divided by their time (CUDA events, warm-up, then a fixed number of iterations), for
C in {16, 32, 64}, float16 and float32, and a number of tiles B chosen so each call
moves about 1e6, 1e7 and 1e8 bytes; it prints a table with each as a percentage of the
copy bandwidth.

Workloads mimic one pruned block at a 50% blur ratio with 16-pixel tiles and a 2-pixel
halo: one image whose tile grid holds 2B cells, B of them selected (every other cell,
in ascending order as NonZero yields them). The gather cuts the B windows out of it;
the scatter writes B tiles back in place, as when TensorRT aliases base and output.
"Bytes moved" counts each tile id once and each window (gather) or tile (scatter)
element read once and written once: halo pixels count for every window that reads
them, and strided or partial-sector accesses cost more than this minimum.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from m2ae.benchmarks.timing import CudaTimer
from m2ae.cli_args import parse_names, parse_numbers
from m2ae.errors import UserError

DEFAULT_CHANNELS = (16, 32, 64)
DEFAULT_BYTES = (1_000_000, 10_000_000, 100_000_000)
DEFAULT_TILE = 16
DEFAULT_HALO = 2
COPY_BYTES = 512 * 1024 * 1024
TILE_ID_BYTES = 4
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class BandwidthConfig:
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    target_bytes: tuple[int, ...] = DEFAULT_BYTES
    dtypes: tuple[str, ...] = DTYPES
    tile: int = DEFAULT_TILE
    halo: int = DEFAULT_HALO
    warmup: int = 3
    iters: int = 20
    kernels_lib: str | None = None  # default: loader.load_kernels() search


@dataclass(frozen=True)
class BandwidthRow:
    op: str
    dtype: str
    channels: int
    tiles: int
    milliseconds: float | None  # None: skipped, too large for free GPU memory
    bytes_moved: int

    @property
    def gigabytes_per_second(self) -> float | None:
        return None if self.milliseconds is None else self.bytes_moved / (self.milliseconds * 1e-3) / 1e9


def bytes_moved(tiles: int, channels: int, pixels: int, itemsize: int) -> int:
    """Tile ids read once, ``pixels`` elements per tile and channel read once and written once."""
    return tiles * (TILE_ID_BYTES + 2 * channels * pixels * itemsize)


def tiles_for(target_bytes: int, channels: int, pixels: int, itemsize: int) -> int:
    """The number of tiles whose call moves about ``target_bytes``, at least one."""
    return max(1, round(target_bytes / bytes_moved(1, channels, pixels, itemsize)))


def map_shape(tiles: int, tile: int) -> tuple[int, int]:
    """(H, W) of one image whose tile grid has at least ``2 * tiles`` cells, nearly square."""
    cols = math.ceil(math.sqrt(2 * tiles))
    return math.ceil(2 * tiles / cols) * tile, cols * tile


def _time_ms(run: Callable[[], None], warmup: int, iters: int) -> float:
    """Mean GPU time of ``run`` over ``iters`` calls timed together, so launch gaps hide in the queue."""
    for _ in range(warmup):
        run()
    with CudaTimer() as timer:
        for _ in range(iters):
            run()
    return timer.ms / iters


def copy_bandwidth(torch: Any, config: BandwidthConfig) -> float:
    """GB/s of a device-to-device copy (read + write counted)."""
    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _time_ms(lambda: dst.copy_(src), config.warmup, config.iters)
    return 2 * COPY_BYTES / (ms * 1e-3) / 1e9


def _fits(torch: Any, needed: int) -> bool:
    free, _ = torch.cuda.mem_get_info()
    return needed < 0.8 * free


def _element(torch: Any, dtype: str) -> tuple[Any, int]:
    tdtype = getattr(torch, dtype)
    return tdtype, torch.tensor([], dtype=tdtype).element_size()


def _fits_map(torch: Any, c: int, tiles: int, pixels: int, itemsize: int, tile: int) -> bool:
    """Whether the map, the [B, C, pixels] windows or tiles and the ids fit in free GPU memory."""
    h, w = map_shape(tiles, tile)
    return _fits(torch, (c * h * w + tiles * c * pixels) * itemsize + tiles * TILE_ID_BYTES)


def _selected_map(torch: Any, tdtype: Any, c: int, tiles: int, tile: int) -> tuple[Any, Any]:
    """One image whose tile grid has 2B cells, and the ids of every other cell in ascending order."""
    h, w = map_shape(tiles, tile)
    dense = torch.randn((1, c, h, w), device="cuda").to(tdtype)
    ids = (2 * torch.arange(tiles, device="cuda", dtype=torch.int64)).to(torch.int32)
    return dense, ids


def gather_row(torch: Any, kernels: Any, dtype: str, c: int, target: int, config: BandwidthConfig) -> BandwidthRow:
    tdtype, itemsize = _element(torch, dtype)
    size = config.tile + 2 * config.halo
    b = tiles_for(target, c, size * size, itemsize)
    moved = bytes_moved(b, c, size * size, itemsize)
    if not _fits_map(torch, c, b, size * size, itemsize, config.tile):
        return BandwidthRow("gather", dtype, c, b, None, moved)
    dense, tiles = _selected_map(torch, tdtype, c, b, config.tile)
    out = torch.empty((b, c, size, size), dtype=tdtype, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    ms = _time_ms(lambda: kernels.gather(out, dense, tiles, config.tile, config.halo, stream),
                  config.warmup, config.iters)
    return BandwidthRow("gather", dtype, c, b, ms, moved)


def scatter_row(torch: Any, kernels: Any, dtype: str, c: int, target: int, config: BandwidthConfig) -> BandwidthRow:
    tdtype, itemsize = _element(torch, dtype)
    pixels = config.tile * config.tile
    b = tiles_for(target, c, pixels, itemsize)
    moved = bytes_moved(b, c, pixels, itemsize)
    if not _fits_map(torch, c, b, pixels, itemsize, config.tile):
        return BandwidthRow("scatter", dtype, c, b, None, moved)
    base, tiles = _selected_map(torch, tdtype, c, b, config.tile)
    values = torch.randn((b, c, config.tile, config.tile), device="cuda").to(tdtype)
    stream = torch.cuda.current_stream().cuda_stream
    ms = _time_ms(lambda: kernels.scatter(base, base, values, tiles, stream), config.warmup, config.iters)
    return BandwidthRow("scatter", dtype, c, b, ms, moved)


def run(config: BandwidthConfig) -> tuple[float, list[BandwidthRow]]:
    """Copy bandwidth (GB/s) and one row per op, dtype, C and size. UserError without a GPU."""
    try:
        import torch
    except ImportError:
        raise UserError("kernel_bandwidth needs torch with CUDA to allocate device buffers") from None
    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU visible to torch: kernel_bandwidth measures GPU kernels and needs one")
    from m2ae.trt_plugins.loader import load_kernels

    kernels = load_kernels(config.kernels_lib)
    copy = copy_bandwidth(torch, config)
    rows = []
    for dtype in config.dtypes:
        for c in config.channels:
            for target in config.target_bytes:
                rows.append(gather_row(torch, kernels, dtype, c, target, config))
                rows.append(scatter_row(torch, kernels, dtype, c, target, config))
                torch.cuda.empty_cache()
    return copy, rows


def format_table(device_name: str, copy: float, rows: Sequence[BandwidthRow], config: BandwidthConfig) -> str:
    lines = [f"{device_name}: device-to-device copy {copy:.1f} GB/s; tile {config.tile}, halo {config.halo}",
             f"{'op':<8} {'dtype':<8} {'C':>3} {'B':>7} {'MB':>8} {'ms':>9} {'GB/s':>8} {'% copy':>7}"]
    for row in rows:
        if row.milliseconds is None:
            lines.append(f"{row.op:<8} {row.dtype:<8} {row.channels:>3} {row.tiles:>7}  "
                         "skipped: too large for the free GPU memory")
            continue
        gbps = row.gigabytes_per_second
        assert gbps is not None
        lines.append(f"{row.op:<8} {row.dtype:<8} {row.channels:>3} {row.tiles:>7} {row.bytes_moved / 1e6:>8.1f} "
                     f"{row.milliseconds:>9.3f} {gbps:>8.1f} {100 * gbps / copy:>6.1f}%")
    return "\n".join(lines)


def _csv(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2ae.benchmarks.kernel_bandwidth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", default=_csv(DEFAULT_CHANNELS), help="C values, e.g. 16,32,64")
    parser.add_argument("--bytes", default=_csv(DEFAULT_BYTES),
                        help="bytes one call should move (sets B), e.g. 1e6,1e7,1e8")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE)
    parser.add_argument("--halo", type=int, default=DEFAULT_HALO)
    parser.add_argument("--dtypes", default="float16,float32", help="float16 and/or float32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--kernels-lib", help="libm2ae_kernels.so or its build folder "
                                              "(default: $M2AE_KERNELS_LIB, then the builds of `m2ae plugin build`)")
    args = parser.parse_args(argv)
    if args.tile < 1 or args.halo < 0:
        parser.error(f"--tile {args.tile} --halo {args.halo}: expected tile >= 1 and halo >= 0")
    try:
        config = BandwidthConfig(
            channels=parse_numbers(args.channels, "--channels", int, "a whole number"),
            target_bytes=tuple(int(b) for b in parse_numbers(args.bytes, "--bytes")),
            dtypes=parse_names(args.dtypes, "--dtypes", choices=DTYPES), tile=args.tile, halo=args.halo,
            warmup=args.warmup, iters=args.iters, kernels_lib=args.kernels_lib,
        )
        copy, rows = run(config)
    except UserError as exc:
        print(f"kernel_bandwidth: {exc}", file=sys.stderr)
        return 2
    import torch

    print(format_table(torch.cuda.get_device_name(), copy, rows, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
