"""``m2ae export``: ONNX variants of a checkpoint."""

from __future__ import annotations

import argparse


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="write plugin / portable / dense ONNX (fp32, fp16, int8) from a checkpoint",
        description="Reparameterise a checkpoint (fold RepVGG branches, gather-form 3x3 convs) and "
        "write DIR/{variant}[_maskin]_{precision}.onnx with dynamic N, H, W. Variants: plugin (the "
        "pruned graph with m2ae::MaskedGather/MaskedScatter, for TensorRT with the m2ae plugin and "
        "ONNX Runtime with m2ae's custom ops), portable (the same graph in standard ONNX ops), dense "
        "(no pruning: the speed baseline).",
    )
    parser.add_argument("--checkpoint", default="tiny", help="checkpoint file, or 'tiny' for the shipped one (default: tiny)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--variants", type=_csv, default=("plugin", "portable", "dense"),
                        help="comma-separated subset of plugin,portable,dense (default: all three)")
    parser.add_argument("--precision", type=_csv, default=("fp32",),
                        help="comma-separated subset of fp32,fp16,int8 (default: fp32). fp16 keeps the mask "
                        "head in fp32; int8 is QDQ, symmetric, per-channel weights, calibrated on --calib")
    parser.add_argument("--mask-input", action="store_true",
                        help="take the blur mask as a second input 'mask' [N,1,H,W] instead of predicting it")
    parser.add_argument("--calib", default="synthetic",
                        help="int8 calibration images: 'synthetic' or a folder of images (default: synthetic)")
    parser.add_argument("--calib-images", type=int, default=16, help="images used for int8 calibration (default: 16)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default: 17)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from m2ae.export.onnx_export import ExportConfig, export_models

    config = ExportConfig(
        checkpoint=args.checkpoint, out=Path(args.out), variants=args.variants, precisions=args.precision,
        mask_input=args.mask_input, calib=args.calib, calib_images=args.calib_images, opset=args.opset,
        progress=not args.no_progress,
    )
    for exported in export_models(config):
        print(exported.path)
    return 0
