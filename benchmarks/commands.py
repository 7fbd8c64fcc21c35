"""``m2ae bench``, ``m2ae parity`` and ``m2ae demo``: thin layers over ``latency.run_benchmark``,
``parity.run_parity`` and ``demo.run_demo``, which this module imports only when a command runs.

``m2ae parity`` exits 0 when every candidate that ran passed its precision's thresholds,
1 when a candidate failed (threshold violated or inference error), 2 on a user error or
when no candidate could run here (all skipped, e.g. engines without TensorRT).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from m2ae.cli_args import parse_names, parse_numbers, parse_size
from m2ae.export.commands import add_pruning_options, pruning_options


def register(sub: argparse._SubParsersAction) -> None:
    _register_bench(sub)
    _register_parity(sub)
    _register_demo(sub)


# ---------------------------------------------------------------- m2ae bench


def _register_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="latency of torch / ONNX Runtime / TensorRT, dense vs pruned, over blur ratios and sizes",
        description="Export mask-input models, force blob masks of each blur ratio, and time every backend, "
        "variant and precision; writes results.json, results.csv, machine.json and PNG plots to --out.",
    )
    parser.add_argument("--checkpoint", default="tiny", help="checkpoint file or 'tiny' (default: tiny)")
    parser.add_argument("--backends", default="torch,onnx,trt", help="comma list of torch,onnx,trt")
    parser.add_argument("--variants", default="dense,portable,plugin",
                        help="comma list of dense,portable,plugin. The torch backend runs the checkpoint itself, "
                        "fp32: dense, and for portable or plugin (two ONNX lowerings of one pruned forward) its "
                        "pruned forward, measured once and reported as 'pruned'")
    parser.add_argument("--precision", default="fp32", help="comma list of fp32,fp16,int8 (default: fp32)")
    parser.add_argument("--blur", default="0,5,10,25,50,100", help="blur ratios in percent (default: 0,5,10,25,50,100)")
    parser.add_argument("--size", default="512", help="comma list of sizes: 512 (square) or HxW like 1080x1920")
    parser.add_argument("--iters", type=int, default=20, help="timed runs per measurement (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over all backends/variants, interleaved so a noisy machine's drift falls on "
                        "each alike; records pool the timed runs of every round (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime and torch")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder of exported models to reuse or fill (default: OUT/models)")
    parser.add_argument("--masks", default="blob", choices=("blob", "predicted"),
                        help="blob: a seeded blob mask per --blur ratio (default); predicted: the masks the model "
                        "predicts on --images held-out synthetic images per size (--blur unused)")
    parser.add_argument("--images", type=int, default=4, help="held-out images per size for --masks predicted")
    parser.add_argument("--seed", type=int, default=0, help="seed of the blob masks and the input image")
    add_pruning_options(parser)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from m2ae.benchmarks.latency import BenchConfig, run_benchmark
    from m2ae.benchmarks.latency_records import break_even_lines, format_table

    config = BenchConfig(
        out=args.out,
        checkpoint=args.checkpoint,
        backends=parse_names(args.backends, "--backends"),
        variants=parse_names(args.variants, "--variants"),
        precisions=parse_names(args.precision, "--precision"),
        blur=parse_numbers(args.blur, "--blur", float, "a number (blur ratios are percentages, 0 to 100)"),
        sizes=tuple(dict.fromkeys(parse_size(s, "--size") for s in parse_names(args.size, "--size"))),
        iters=args.iters,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
        models_dir=args.models,
        seed=args.seed,
        masks=args.masks,
        predicted_images=args.images,
        pruning=pruning_options(args),
        plots=not args.no_plots,
        progress=not args.no_progress,
    )
    report = run_benchmark(config)
    if report.records:
        print(format_table(report.records))
        for line in break_even_lines(report.records, report.pruning.dense_above):
            print(line)
    else:
        print("nothing was measured (every requested backend was skipped)")
    print(f"results: {report.results_json}, {report.results_csv}; machine: {report.machine_json}")
    if report.plots:
        print(f"plots: {', '.join(str(p) for p in report.plots)}")
    return 0


# ---------------------------------------------------------------- m2ae parity


def _register_parity(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "parity",
        help="check exported models against a reference (max/mean abs error, PSNR, mask flip rate)",
        description="Run candidates (ONNX files, TensorRT engines) and a reference on the same images through "
        "Polygraphy and check each candidate against its precision's thresholds. Exit 1 if any fails.",
    )
    parser.add_argument("--reference", default="torch",
                        help="'torch' (the --checkpoint run by PyTorch), a checkpoint, an ONNX file or an engine")
    parser.add_argument("--checkpoint", default="tiny", help="checkpoint for --reference torch (default: tiny)")
    parser.add_argument("--reference-variant", default="dense", choices=("dense", "pruned"),
                        help="PyTorch graph for a checkpoint reference (default: dense)")
    parser.add_argument("--candidates", required=True, help="comma-separated model files: A.onnx,B.engine,...")
    parser.add_argument("--images", default="synthetic", help="a folder of images, or 'synthetic' (default)")
    parser.add_argument("--num-images", type=int, default=8, help="synthetic images (default: 8)")
    parser.add_argument("--size", default="128", help="synthetic image size: 128 (square) or HxW (default: 128)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the strip PNGs (default: the --json folder, else ./parity)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_parity)


def _parity(args: argparse.Namespace) -> int:
    from m2ae.benchmarks.parity import ParityConfig, run_parity

    config = ParityConfig(
        candidates=parse_names(args.candidates, "--candidates"), reference=args.reference, images=args.images,
        checkpoint=args.checkpoint, reference_variant=args.reference_variant, num_images=args.num_images,
        size=parse_size(args.size, "--size"), json_path=args.json, strip_dir=args.out, threads=args.threads,
        progress=not args.no_progress,
    )
    report = run_parity(config)
    print(f"reference: {report.reference['model']} ({report.reference['backend']}), "
          f"{len(report.image_sizes)} images from {report.images}")
    for result in report.candidates:
        line = f"{result.status.upper():7} {result.path} [{result.precision or '?'}]"
        if result.metrics is not None:
            m = result.metrics
            psnr = "inf" if m.psnr_db == float("inf") else f"{m.psnr_db:.2f}"
            line += (f": max abs {m.max_abs:.3g}, mean abs {m.mean_abs:.3g}, PSNR {psnr} dB, "
                     f"mask flips {m.mask_flip_rate:.3%}")
        if result.reason:
            line += f" -- {result.reason}"
        print(line)
    if report.json_path is not None:
        print(f"report: {report.json_path}")
    if report.exit_code == 2:
        print("m2ae parity: error: no candidate could run on this machine (all skipped)", file=sys.stderr)
    return report.exit_code


# ---------------------------------------------------------------- m2ae demo


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
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
    from m2ae.benchmarks.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out=Path(args.out), checkpoint=args.checkpoint, threads=args.threads,
                                 progress=not args.no_progress))
    for note in result.notes:
        print(f"note: {note}")
    print(f"demo finished in {result.seconds:.0f} s; report: {result.report}")
    return 0
