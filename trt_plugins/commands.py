"""``m2ae plugin build``: compile the CUDA kernels and the TensorRT plugin library."""

from __future__ import annotations

import argparse
from pathlib import Path

_BUILD_DESCRIPTION = """\
Compile the MaskedGather / MaskedScatter CUDA kernels and the TensorRT plugin library
(libm2ae_trt_plugins.so) with CMake and nvcc, out of tree. The libraries and a
manifest.json (TensorRT version, CUDA architectures, sha256) land in --out, by default
a folder per configuration under ~/.cache/m2ae/plugins ($M2AE_PLUGIN_DIR overrides),
where the engine builder, the TensorRT runtime and the Python loader find them.

Needs CMake >= 3.18, the CUDA toolkit (nvcc) and, unless --kernels-only, TensorRT's
headers and libnvinfer (JetPack and the libnvinfer-dev package install them where they
are found; otherwise pass --tensorrt-root).
"""

_BUILD_EPILOG = """\
examples:
  m2ae plugin build                          # this machine's GPU / Jetson, its TensorRT
  m2ae plugin build --arch 87                # Jetson Orin (Thor: 110, Ada: 89, Hopper: 90)
  m2ae plugin build --tensorrt-root /opt/TensorRT-10.3.0 --out ./plugins
  m2ae plugin build --kernels-only --arch 87,90   # kernels for tests/benchmarks, no TensorRT
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    plugin = subparsers.add_parser(
        "plugin",
        help="build the TensorRT plugin library of the m2ae custom ops",
        description="Native side of the m2ae custom ops: CUDA kernels and TensorRT plugins.",
    )
    plugin_sub = plugin.add_subparsers(dest="plugin_command", metavar="<subcommand>", required=True)
    build = plugin_sub.add_parser(
        "build",
        help="compile the CUDA kernels and libm2ae_trt_plugins.so with CMake",
        description=_BUILD_DESCRIPTION,
        epilog=_BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--kernels-only", action="store_true",
                       help="build only libm2ae_kernels.so (the CUDA kernels, no TensorRT needed)")
    build.add_argument("--headers-only", action="store_true",
                       help="compile-check the plugin sources against TensorRT headers alone (no libnvinfer); "
                            "produces no plugin library")
    build.add_argument("--tensorrt-root", type=Path, metavar="DIR",
                       help="TensorRT install with include/ and lib/ (default: $TENSORRT_ROOT, the system "
                            "packages, then a pip wheel's tensorrt_libs)")
    build.add_argument("--tensorrt-include", type=Path, metavar="DIR",
                       help="folder holding NvInfer*.h, when the headers live apart from the library "
                            "(a pip wheel ships no headers)")
    build.add_argument("--arch", metavar="LIST",
                       help="CUDA compute capabilities, comma separated, e.g. 87 (Orin), 110 (Thor), 89,90; "
                            "default: detected from the Jetson model or nvidia-smi")
    build.add_argument("--out", type=Path, metavar="DIR",
                       help="output folder (default: ~/.cache/m2ae/plugins/<configuration>)")
    build.add_argument("--jobs", "-j", type=int, metavar="N", help="parallel compile jobs (default: CMake's)")
    build.set_defaults(func=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from m2ae.atomic import check_output_dir
    from m2ae.trt_plugins.build import (
        PluginBuildConfig,
        build_plugins,
        default_out_dir,
        parse_arch_list,
        sources_sha256,
    )
    from m2ae.trt_plugins.loader import PLUGIN_DIR_ENV

    config = PluginBuildConfig(
        out_dir=args.out,
        kernels_only=args.kernels_only,
        headers_only=args.headers_only,
        tensorrt_root=args.tensorrt_root,
        tensorrt_include=args.tensorrt_include,
        archs=parse_arch_list(args.arch) if args.arch else (),
        jobs=args.jobs,
    )
    # Checked before CMake runs: a build takes minutes, and the libraries land only at its end.
    option = "--out" if args.out else f"the plugin folder (--out, ${PLUGIN_DIR_ENV})"
    check_output_dir((args.out or default_out_dir(config, sources_sha256())).expanduser(), option)
    result = build_plugins(config)
    manifest = result.manifest
    tensorrt = f", TensorRT {manifest.tensorrt_version}" if manifest.tensorrt_version else ""
    print(f"built in {result.configure_seconds + result.build_seconds:.1f} s for CUDA architectures "
          f"{','.join(manifest.cuda_archs)}{tensorrt}")
    print(f"kernels: {result.kernels_library}")
    if result.plugin_library is not None:
        print(f"plugins: {result.plugin_library}")
    elif config.headers_only:
        print(f"plugin sources compiled against TensorRT {manifest.tensorrt_version} headers (no library made)")
    print(f"manifest: {result.manifest_path}")
    return 0
