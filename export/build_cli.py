"""``m2ae build``: the command line over ``trt_builder.build_engine``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from m2ae.export.engine_cache import CACHE_DIR_ENV, complete_profile

_DESCRIPTION = """\
Build a TensorRT engine from an m2ae ONNX export, with one optimisation profile over
the image's height and width. Precision comes from the ONNX: build an fp32, fp16
(`m2ae export --precision fp16`) or int8 QDQ ONNX; every one builds as a strongly typed
network on TensorRT 10 and 11. Engines are cached by ONNX, TensorRT version, GPU,
plugin library and profile, so a repeated build returns at once. The engine is
written with a JSON sidecar (ENGINE.json) that `m2ae infer --model ENGINE` reads.
"""

_EPILOG = """\
defaults: desktop GPUs --min 256x256 --opt 1024x1024 --max 2160x3840 and no workspace
limit; Jetson Orin --opt 720x1280 --max 1080x1920 --workspace 1024; Jetson Thor
--opt 1080x1920 --max 1440x2560 --workspace 4096 (sides rounded up to the network's
multiple). `m2ae infer` runs larger images in tiles of the --max; for tiles of N, build
--opt NxN --max NxN and run `m2ae infer --tile N`. Needs TensorRT and an NVIDIA GPU:
`pip install 'm2ae[trt]'` on a desktop (TensorRT and cuda-python), JetPack's
python3-libnvinfer plus `pip install 'cuda-python>=12.6,<13'` on Jetson.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build a TensorRT engine from an ONNX export",
        description=_DESCRIPTION,
        epilog=_EPILOG,
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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    from m2ae.atomic import check_output_dir, check_output_file
    from m2ae.export.engine_cache import EngineCache
    from m2ae.export.trt_builder import BuildConfig, build_defaults, build_engine, read_onnx_info
    from m2ae.platform_info import cuda_binding_line, detect_platform

    # The engine and the timing cache are written after minutes of building: check first.
    check_output_file(args.out or args.onnx.with_suffix(".engine"), "--out")
    cache_option = "--cache-dir" if args.cache_dir else f"the engine cache (--cache-dir, ${CACHE_DIR_ENV})"
    check_output_dir(EngineCache.at(args.cache_dir).root, cache_option)
    info = read_onnx_info(args.onnx)
    platform = detect_platform()
    profile = None
    if args.min or args.opt or args.max:
        defaults = build_defaults(platform, info.multiple, info.min_size).profile
        profile = complete_profile(args.min, args.opt, args.max, defaults, info.multiple, info.min_size)
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
        progress=not args.quiet,
        command=tuple(_command_line(args)),
    )
    result = build_engine(config, platform)
    how = "from the engine cache" if result.cached else f"built in {result.sidecar.build_seconds:.1f} s"
    print(f"{result.engine_path} ({how}; {result.sidecar.key.profile})", file=sys.stdout)
    # Whether `m2ae infer` can run the engine here depends on the CUDA binding, not on what built it.
    print(cuda_binding_line(platform), file=sys.stdout)
    return 0
