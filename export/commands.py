"""``m2ae export``: ONNX variants of a checkpoint."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from m2ae.model.pruned import PruningOptions


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_pruning_options(parser: argparse.ArgumentParser) -> None:
    """``--tiles``, ``--dense-above``, ``--blocks-per-gather``: how the pruned variants cut the work.

    Unset options take the model preset's measured values (``m2ae.model.pruned.PRESET_PRUNING``).
    """
    parser.add_argument("--tiles", default=None,
                        help="tile side per U-Net scale, comma-separated; the last repeats for deeper scales "
                        "(default: the preset's, tiny 32,32,16; the scale-0 side must be a multiple of 4)")
    parser.add_argument("--dense-above", type=float, default=None,
                        help="share of active scale-0 tiles (0..1) above which the pruned graphs run the dense "
                        "body instead (default: the preset's, measured with ONNX Runtime on 2 CPU threads; "
                        "`m2ae bench --dense-above 1` measures it for your backend)")
    parser.add_argument("--blocks-per-gather", type=int, default=None,
                        help="most masked blocks between one gather and one scatter at scales >= 1 "
                        "(default: the preset's)")


def pruning_options(args: argparse.Namespace) -> PruningOptions:
    """The ``PruningOptions`` of the command line; a bad value is a one-line UserError."""
    from m2ae.errors import UserError
    from m2ae.model.pruned import PruningConfig, PruningOptions

    try:
        tiles = None if args.tiles is None else tuple(int(part) for part in _csv(args.tiles))
        options = PruningOptions(tiles=tiles, dense_above=args.dense_above, blocks_per_gather=args.blocks_per_gather)
        # Validates the values given; the preset fills in the rest later.
        PruningConfig(**{name: value for name, value in vars(options).items() if value is not None})
    except ValueError as exc:
        raise UserError(f"--tiles/--dense-above/--blocks-per-gather: {exc}") from None
    return options


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="write plugin / portable / dense ONNX (fp32, fp16, int8) from a checkpoint",
        description="Reparameterise a checkpoint (fold RepVGG branches, shuffles as strided convs) and "
        "write DIR/{variant}[_maskin]_{precision}.onnx with dynamic N, H, W. Variants: plugin (the "
        "pruned graph: all-sharp frames skip the body, frames with many active tiles run the dense body, "
        "the rest run the masked blocks on active tiles with m2ae::MaskedGather/MaskedScatter, for TensorRT "
        "with the m2ae plugin and ONNX Runtime with m2ae's custom ops), portable (the same graph in standard "
        "ONNX ops), dense (no pruning: the speed baseline).",
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
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (default: 17)")
    add_pruning_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from m2ae.export.onnx_export import ExportConfig, export_models

    config = ExportConfig(
        checkpoint=args.checkpoint, out=Path(args.out), variants=args.variants, precisions=args.precision,
        mask_input=args.mask_input, calib=args.calib, calib_images=args.calib_images, opset=args.opset,
        pruning=pruning_options(args), progress=not args.no_progress,
    )
    written = export_models(config)
    for exported in written:
        print(exported.path)
    # What TensorRT would refuse or run badly, for the JetPack 6 and the newest TensorRT:
    # reported, not fatal (the files are written; `m2ae build` stops on errors).
    from m2ae.export.trt_check import export_report

    for line in export_report([exported.path for exported in written]):
        print(f"m2ae export: {line}", file=sys.stderr)
    return 0
