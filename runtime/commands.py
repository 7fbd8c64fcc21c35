"""``m2ae infer``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "infer",
        help="restore images with a checkpoint, an ONNX model or a TensorRT engine",
        description="Restore an image or a folder of images. The model is picked by its file: "
        ".onnx runs on ONNX Runtime (m2ae ops registered), .engine/.plan on TensorRT, a checkpoint "
        "(.pt, or 'tiny') on PyTorch. Images are padded to the network's multiple and cropped back; "
        "grayscale, RGBA (alpha dropped) and 16-bit images are converted to RGB. Writes "
        "OUTPUT/{name}_restored.png and OUTPUT/{name}_mask.png (the predicted blur mask over the input).",
    )
    parser.add_argument("--model", default="tiny", help="X.onnx, X.engine or a checkpoint (default: tiny)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_infer)


def _infer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from m2ae.runtime.base import open_engine
    from m2ae.runtime.infer import infer_files

    options = {"threads": args.threads} if args.threads and Path(args.model).suffix == ".onnx" else {}
    engine = open_engine(args.model, **options)
    for result in infer_files(engine, args.input, args.output, progress=not args.no_progress):
        print(f"{result.source} -> {result.restored} ({100 * result.blurred_fraction:.1f}% restored)")
    return 0
