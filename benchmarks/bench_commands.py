"""``m2ae bench``: the command-line face of ``m2ae.benchmarks.latency.run_benchmark``."""

from __future__ import annotations

import argparse
from pathlib import Path

from m2ae.export.commands import add_pruning_options, pruning_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="latency of torch / ONNX Runtime / TensorRT, dense vs pruned, over blur ratios and sizes",
        description="Export mask-input models, force blob masks of each blur ratio, and time every backend, "
        "variant and precision; writes results.json, results.csv, machine.json and PNG plots to --out.",
    )
    parser.add_argument("--checkpoint", default="tiny", help="checkpoint file or 'tiny' (default: tiny)")
    parser.add_argument("--backends", default="torch,onnx,trt", help="comma list of torch,onnx,trt")
    parser.add_argument("--variants", default="dense,portable,plugin", help="comma list of dense,portable,plugin")
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2ae.benchmarks.latency import (
        BenchConfig,
        break_even_lines,
        format_table,
        parse_blur,
        parse_names,
        parse_size,
        run_benchmark,
    )

    config = BenchConfig(
        out=args.out,
        checkpoint=args.checkpoint,
        backends=parse_names(args.backends, "--backends"),
        variants=parse_names(args.variants, "--variants"),
        precisions=parse_names(args.precision, "--precision"),
        blur=parse_blur(args.blur),
        sizes=tuple(parse_size(s) for s in parse_names(args.size, "--size")),
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
