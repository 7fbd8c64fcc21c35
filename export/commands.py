"""The export stage's subcommands, each a thin layer over one Python function:
``m2ae export`` (``onnx_export.export_models``), ``m2ae check`` (``trt_check.check_onnx``)
and ``m2ae build`` (``trt_builder.build_engine``). Nothing heavy is imported until a
command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from m2ae.cli_args import parse_names, parse_numbers
from m2ae.export.engine_cache import CACHE_DIR_ENV, complete_profile
from m2ae.export.trt_rules import DEFAULT_TENSORRT, TENSORRT_VERSIONS

if TYPE_CHECKING:
    from m2ae.model.pruned import PruningOptions


def add_pruning_options(parser: argparse.ArgumentParser) -> None:
    """``--tiles``, ``--dense-above``, ``--blocks-per-gather``: how the pruned variants cut the work.

    Unset options take the model preset's measured values (``m2ae.model.pruned.PRESET_PRUNING``).
    """
    parser.add_argument("--tiles", default=None,
                        help="tile side per U-Net scale, comma-separated; the last repeats for deeper scales "
                        "(default: the preset's, tiny 32,16,16; the scale-0 side must be a multiple of 4, the "
                        "scale-1 side even; half the scale-0 side runs scale 1 on the scale-0 tiles, and 1 runs "
                        "a scale >= 1 on pixel rows)")
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
        tiles = None if args.tiles is None else parse_numbers(args.tiles, "--tiles", int, "an integer", unique=False)
        options = PruningOptions(tiles=tiles, dense_above=args.dense_above, blocks_per_gather=args.blocks_per_gather)
        # Validates the values given; the preset fills in the rest later.
        PruningConfig(**{name: value for name, value in vars(options).items() if value is not None})
    except ValueError as exc:
        raise UserError(f"--tiles/--dense-above/--blocks-per-gather: {exc}") from None
    return options


def register(sub: argparse._SubParsersAction) -> None:
    """``export``, ``check`` and ``build``, in the pipeline's order."""
    _register_export(sub)
    _register_check(sub)
    _register_build(sub)


# ---------------------------------------------------------------- m2ae export


def _register_export(sub: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--variants", default="plugin,portable,dense",
                        help="comma-separated subset of plugin,portable,dense (default: all three)")
    parser.add_argument("--precision", default="fp32",
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
    from m2ae.export.onnx_export import ExportConfig, export_models

    config = ExportConfig(
        checkpoint=args.checkpoint, out=Path(args.out), variants=parse_names(args.variants, "--variants"),
        precisions=parse_names(args.precision, "--precision"),
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


# ---------------------------------------------------------------- m2ae check

_CHECK_DESCRIPTION = """\
Check an ONNX model, offline, against what a TensorRT version's ONNX parser and builder
accept and run well: the operator matrix (ops, input types, attributes), explicit
quantization (dequantized types, zero points, per-channel axes), strongly typed precision
(TensorRT 11 builds nothing else; m2ae build on 10 neither), the m2ae plugin nodes against
the plugin's fields and version, known slow lowerings and zero-size constants. Every If
branch is checked too. One line per finding: SEVERITY node (op): what is wrong — what to
do. Exit status 1 when any finding is an error, 2 when the file cannot be read, else 0.
Needs no TensorRT and no GPU.
"""


def _register_check(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check",
        help="check an ONNX against what a TensorRT version parses and builds well (no TensorRT needed)",
        description=_CHECK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("onnx", type=Path, metavar="MODEL.onnx", help="the ONNX file")
    parser.add_argument(
        "--tensorrt", choices=list(TENSORRT_VERSIONS), default=DEFAULT_TENSORRT,
        help=f"the TensorRT whose rules apply (default {DEFAULT_TENSORRT}, what JetPack 6 ships)",
    )
    parser.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from m2ae.export.trt_check import SEVERITIES, check_onnx

    findings = check_onnx(args.onnx, args.tensorrt)
    for finding in findings:
        print(finding)
    counts = ", ".join(f"{sum(f.severity == s for f in findings)} {s}(s)" for s in SEVERITIES)
    print(f"m2ae check: {args.onnx} against TensorRT {args.tensorrt}: {counts}", file=sys.stderr)
    return 1 if any(f.severity == "error" for f in findings) else 0


# ---------------------------------------------------------------- m2ae build

_BUILD_DESCRIPTION = """\
Build a TensorRT engine from an m2ae ONNX export, with one optimisation profile over
the image's height and width. Precision comes from the ONNX: build an fp32, fp16
(`m2ae export --precision fp16`) or int8 QDQ ONNX; every one builds as a strongly typed
network on TensorRT 10 and 11. Engines are cached by ONNX, TensorRT version, GPU,
plugin library and profile, so a repeated build returns at once. The engine is
written with a JSON sidecar (ENGINE.json) that `m2ae infer --model ENGINE` reads.
"""

_BUILD_EPILOG = """\
defaults: desktop GPUs --min 256x256 --opt 1024x1024 --max 2160x3840 and no workspace
limit; Jetson Orin --opt 720x1280 --max 1080x1920 --workspace 1024; Jetson Thor
--opt 1080x1920 --max 1440x2560 --workspace 4096 (sides rounded up to the network's
multiple). `m2ae infer` runs larger images in tiles of the --max; for tiles of N, build
--opt NxN --max NxN and run `m2ae infer --tile N`. Needs TensorRT and an NVIDIA GPU:
`pip install 'm2ae[trt]'` on a desktop (TensorRT and cuda-python), JetPack's
python3-libnvinfer plus `pip install 'cuda-python>=12.6,<13'` on Jetson.
"""


def _register_build(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "build",
        help="build a TensorRT engine from an ONNX export",
        description=_BUILD_DESCRIPTION,
        epilog=_BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--onnx", required=True, type=Path, help="the ONNX file from `m2ae export`")
    parser.add_argument(
        "--plugin",
        default="auto",
        metavar="auto|PATH",
        help="the m2ae TensorRT plugin library; 'auto' (default) loads the built one when the ONNX "
        "uses the m2ae ops (plugin exports) and nothing for portable and dense exports",
    )
    parser.add_argument(
        "--min", metavar="HxW", help="smallest image the engine accepts, height x width (at least the network's "
        "m2ae.min_size)"
    )
    parser.add_argument("--opt", metavar="HxW", help="the image size TensorRT tunes kernels for")
    parser.add_argument(
        "--max",
        metavar="HxW",
        help="largest image the engine accepts; sides must be multiples of the network's multiple, "
        "and sides you leave out default to this machine's values, moved to fit the ones you give",
    )
    parser.add_argument("--batch", type=int, default=1, help="images per inference (default 1)")
    parser.add_argument(
        "--workspace", type=int, metavar="MiB", help="cap on TensorRT's scratch memory while building and running"
    )
    parser.add_argument(
        "--dla",
        type=int,
        metavar="N",
        help="Jetson Orin only: run on DLA core N; DLA takes one fixed size (--min = --opt = --max) and an "
        "fp16 or int8 ONNX (or --fp16 on TensorRT 10); the m2ae ops and layers DLA lacks run on the GPU",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="TensorRT 10 only: let TensorRT pick fp16 kernels for an fp32 ONNX (weakly typed build); "
        "on TensorRT 11 export an fp16 ONNX instead (`m2ae export --precision fp16`)",
    )
    parser.add_argument("--out", type=Path, help="where to write the engine (default: the ONNX path with .engine)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help=f"engine and timing cache folder (default: ${CACHE_DIR_ENV} or ~/.cache/m2ae/engines)",
    )
    parser.add_argument("--no-cache", action="store_true", help="build even if the cache holds this engine")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # `m2ae build` said --quiet until every command said --no-progress: old command lines keep working.
    parser.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=_build)


def _command_line(args: argparse.Namespace) -> list[str]:
    """The command as a user would retype it, recorded in the sidecar."""
    line = ["m2ae", "build", "--onnx", str(args.onnx)]
    for option in ("plugin", "min", "opt", "max", "workspace", "dla", "out", "cache_dir"):
        value = getattr(args, option)
        if value is not None and not (option == "plugin" and value == "auto"):
            line += [f"--{option.replace('_', '-')}", str(value)]
    if args.batch != 1:
        line += ["--batch", str(args.batch)]
    line += [f"--{flag.replace('_', '-')}" for flag in ("fp16", "no_cache") if getattr(args, flag)]
    return line


def _build(args: argparse.Namespace) -> int:
    from m2ae.atomic import check_output_dir, check_output_file
    from m2ae.export.engine_cache import EngineCache
    from m2ae.export.trt_builder import BuildConfig, build_defaults, build_engine, read_onnx_info
    from m2ae.platform_info import cuda_binding_line, detect_platform

    # The engine and the timing cache are written after minutes of building: check first.
    check_output_file(args.out or args.onnx.with_suffix(".engine"), "--out")
    cache_option = "--cache-dir" if args.cache_dir else f"the engine cache (--cache-dir, ${CACHE_DIR_ENV})"
    check_output_dir(EngineCache.at(args.cache_dir).root, cache_option)
    info = read_onnx_info(args.onnx)
    model = info.model
    platform = detect_platform()
    profile = None
    if args.min or args.opt or args.max:
        defaults = build_defaults(platform, model.multiple, model.min_size).profile
        profile = complete_profile(args.min, args.opt, args.max, defaults, model.multiple, model.min_size)
    config = BuildConfig(
        onnx=args.onnx,
        out=args.out,
        plugin=args.plugin,
        profile=profile,
        batch=args.batch,
        workspace_mib=args.workspace,
        dla_core=args.dla,
        fp16=args.fp16,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        progress=not args.no_progress,
        command=tuple(_command_line(args)),
    )
    result = build_engine(config, platform, info)
    how = "from the engine cache" if result.cached else f"built in {result.sidecar.build_seconds:.1f} s"
    print(f"{result.engine_path} ({how}; {result.sidecar.key.profile})", file=sys.stdout)
    # Whether `m2ae infer` can run the engine here depends on the CUDA binding, not on what built it.
    print(cuda_binding_line(platform), file=sys.stdout)
    return 0
