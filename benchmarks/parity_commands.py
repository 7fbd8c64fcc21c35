"""``m2ae parity``: the command-line face of :func:`m2ae.benchmarks.parity.run_parity`.

Exit codes: 0 every candidate that ran passed its precision's thresholds; 1 a candidate
failed (threshold violated or inference error); 2 a user error, or no candidate could
run here (all skipped, e.g. engines without TensorRT).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--size", type=int, default=128, help="synthetic image side (default: 128)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the strip PNGs (default: the --json folder, else ./parity)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.set_defaults(func=run_command)


def _format_metrics(result) -> str:  # noqa: ANN001 (CandidateResult, imported lazily)
    m = result.metrics
    psnr = "inf" if m.psnr_db == float("inf") else f"{m.psnr_db:.2f}"
    return f"max abs {m.max_abs:.3g}, mean abs {m.mean_abs:.3g}, PSNR {psnr} dB, mask flips {m.mask_flip_rate:.3%}"


def run_command(args: argparse.Namespace) -> int:
    from m2ae.benchmarks.parity import ParityConfig, run_parity

    candidates = tuple(c.strip() for c in args.candidates.split(",") if c.strip())
    config = ParityConfig(
        candidates=candidates, reference=args.reference, images=args.images, checkpoint=args.checkpoint,
        reference_variant=args.reference_variant, num_images=args.num_images, size=args.size,
        json_path=args.json, strip_dir=args.out, threads=args.threads,
    )
    report = run_parity(config)
    print(f"reference: {report.reference['model']} ({report.reference['backend']}), "
          f"{len(report.image_sizes)} images from {report.images}")
    for result in report.candidates:
        line = f"{result.status.upper():7} {result.path} [{result.precision or '?'}]"
        if result.metrics is not None:
            line += f": {_format_metrics(result)}"
        if result.reason:
            line += f" -- {result.reason}"
        print(line)
    if report.json_path is not None:
        print(f"report: {report.json_path}")
    if report.exit_code == 2:
        print("m2ae parity: error: no candidate could run on this machine (all skipped)", file=sys.stderr)
    return report.exit_code
