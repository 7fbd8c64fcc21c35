"""``m2ae bench``, ``m2ae parity`` and ``m2ae demo``."""

from __future__ import annotations

import argparse

from m2ae.benchmarks import bench_commands, parity_commands


def register(sub: argparse._SubParsersAction) -> None:
    bench_commands.register(sub)
    parity_commands.register(sub)
    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline on the CPU and write a report",
        description="With the shipped checkpoint: synthesize a held-out local-blur set, export every "
        "variant (plugin, portable, dense) and precision (fp32, fp16, int8), check parity against "
        "PyTorch, benchmark dense vs pruned graphs on ONNX Runtime, evaluate image quality, and "
        "write OUT/report.md with tables, plots and image strips. With TensorRT and a GPU present "
        "it also builds FP16 and INT8 plugin engines and includes them.",
    )
    demo.add_argument("--out", default="demo", help="report folder (default: demo)")
    demo.add_argument("--checkpoint", default="tiny", help="checkpoint (default: the shipped tiny)")
    demo.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime (default: all)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from m2ae.benchmarks.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out=Path(args.out), checkpoint=args.checkpoint, threads=args.threads,
                                 progress=not args.no_progress))
    for note in result.notes:
        print(f"note: {note}")
    print(f"demo finished in {result.seconds:.0f} s; report: {result.report}")
    return 0
