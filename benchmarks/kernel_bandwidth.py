"""Achieved memory bandwidth of the MaskedGather / MaskedScatter CUDA kernels.

``python -m m2ae.benchmarks.kernel_bandwidth`` measures, on the current CUDA device,
the device-to-device copy bandwidth (cudaMemcpy of a large buffer: the practical
ceiling) and the bandwidth the two kernels achieve, as the bytes they must move
divided by their time (CUDA events, warm-up, then a fixed number of iterations), for
C in {16, 32, 64}, K in {1e5, 1e6, 1e7}, float16 and float32, and prints a table with
each as a percentage of the copy bandwidth.

Workloads mimic one pruned 3x3 block at a 50% blur ratio, one tap (T = 1; the T rows
of a 3x3 gather are independent copies of this): the gather reads half its columns
from tokens and half from dense pixels, in ascending order as NonZero yields them;
the scatter writes (in place, as when TensorRT aliases base and output) every other
pixel of a map twice as large as K. "Bytes moved" counts each index once, each value
read once and written once: the minimum traffic; strided dense accesses cost more.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from m2ae.errors import UserError

DEFAULT_CHANNELS = (16, 32, 64)
DEFAULT_TOKENS = (100_000, 1_000_000, 10_000_000)
COPY_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class BandwidthConfig:
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    tokens: tuple[int, ...] = DEFAULT_TOKENS
    dtypes: tuple[str, ...] = ("float16", "float32")
    warmup: int = 3
    iters: int = 20
    kernels_lib: str | None = None  # default: loader.load_kernels() search


@dataclass(frozen=True)
class BandwidthRow:
    op: str
    dtype: str
    channels: int
    tokens: int
    milliseconds: float | None  # None: skipped, too large for free GPU memory
    bytes_moved: int

    @property
    def gigabytes_per_second(self) -> float | None:
        return None if self.milliseconds is None else self.bytes_moved / (self.milliseconds * 1e-3) / 1e9


def _time_ms(torch: Any, run: Callable[[], None], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def copy_bandwidth(torch: Any, config: BandwidthConfig) -> float:
    """GB/s of a device-to-device copy (read + write counted)."""
    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _time_ms(torch, lambda: dst.copy_(src), config.warmup, config.iters)
    return 2 * COPY_BYTES / (ms * 1e-3) / 1e9


def _fits(torch: Any, needed: int) -> bool:
    free, _ = torch.cuda.mem_get_info()
    return needed < 0.8 * free


def gather_row(torch: Any, kernels: Any, dtype: str, c: int, k: int, config: BandwidthConfig) -> BandwidthRow:
    tdtype = getattr(torch, dtype)
    size = torch.tensor([], dtype=tdtype).element_size()
    kt = (k + 1) // 2
    bytes_moved = k * 4 + 2 * c * k * size
    if not _fits(torch, (c * k + c * k + c * kt) * size + k * 4):
        return BandwidthRow("gather", dtype, c, k, None, bytes_moved)
    dense = torch.randn((1, c, 1, k), device="cuda").to(tdtype)
    tokens = torch.randn((c, kt), device="cuda").to(tdtype)
    cols = torch.arange(k, device="cuda", dtype=torch.int64)
    table = torch.where(cols % 2 == 1, cols // 2, -2 - cols).to(torch.int32).reshape(1, k)
    out = torch.empty((c, k), dtype=tdtype, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    ms = _time_ms(torch, lambda: kernels.gather(out, dense, tokens, table, stream), config.warmup, config.iters)
    return BandwidthRow("gather", dtype, c, k, ms, bytes_moved)


def scatter_row(torch: Any, kernels: Any, dtype: str, c: int, k: int, config: BandwidthConfig) -> BandwidthRow:
    tdtype = getattr(torch, dtype)
    size = torch.tensor([], dtype=tdtype).element_size()
    bytes_moved = k * 4 + 2 * c * k * size
    if not _fits(torch, (2 * c * k + c * k) * size + k * 4):
        return BandwidthRow("scatter", dtype, c, k, None, bytes_moved)
    base = torch.randn((1, c, 1, 2 * k), device="cuda").to(tdtype)
    values = torch.randn((c, k), device="cuda").to(tdtype)
    index = (2 * torch.arange(k, device="cuda", dtype=torch.int64)).to(torch.int32)
    stream = torch.cuda.current_stream().cuda_stream
    ms = _time_ms(torch, lambda: kernels.scatter(base, base, values, index, 0, stream), config.warmup, config.iters)
    return BandwidthRow("scatter", dtype, c, k, ms, bytes_moved)


def run(config: BandwidthConfig) -> tuple[float, list[BandwidthRow]]:
    """Copy bandwidth (GB/s) and one row per op, dtype, C and K. UserError without a GPU."""
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
            for k in config.tokens:
                rows.append(gather_row(torch, kernels, dtype, c, k, config))
                rows.append(scatter_row(torch, kernels, dtype, c, k, config))
                torch.cuda.empty_cache()
    return copy, rows


def format_table(device_name: str, copy: float, rows: Sequence[BandwidthRow]) -> str:
    lines = [f"{device_name}: device-to-device copy {copy:.1f} GB/s",
             f"{'op':<8} {'dtype':<8} {'C':>3} {'K':>9} {'ms':>9} {'GB/s':>8} {'% copy':>7}"]
    for row in rows:
        if row.milliseconds is None:
            lines.append(f"{row.op:<8} {row.dtype:<8} {row.channels:>3} {row.tokens:>9}  "
                         "skipped: too large for the free GPU memory")
            continue
        gbps = row.gigabytes_per_second
        assert gbps is not None
        lines.append(f"{row.op:<8} {row.dtype:<8} {row.channels:>3} {row.tokens:>9} {row.milliseconds:>9.3f} "
                     f"{gbps:>8.1f} {100 * gbps / copy:>6.1f}%")
    return "\n".join(lines)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(float(x)) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2ae.benchmarks.kernel_bandwidth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=_int_list, default=DEFAULT_CHANNELS, help="C values, e.g. 16,32,64")
    parser.add_argument("--tokens", type=_int_list, default=DEFAULT_TOKENS, help="K values, e.g. 1e5,1e6,1e7")
    parser.add_argument("--dtypes", default="float16,float32", help="float16 and/or float32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--kernels-lib", help="libm2ae_kernels.so or its build folder "
                                              "(default: $M2AE_KERNELS_LIB, then the builds of `m2ae plugin build`)")
    args = parser.parse_args(argv)
    dtypes = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    if not dtypes or any(d not in ("float16", "float32") for d in dtypes):
        parser.error(f"--dtypes {args.dtypes!r}: expected float16 and/or float32")
    config = BandwidthConfig(channels=args.channels, tokens=args.tokens, dtypes=dtypes, warmup=args.warmup,
                             iters=args.iters, kernels_lib=args.kernels_lib)
    try:
        copy, rows = run(config)
    except UserError as exc:
        print(f"kernel_bandwidth: {exc}", file=sys.stderr)
        return 2
    import torch

    print(format_table(torch.cuda.get_device_name(), copy, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
