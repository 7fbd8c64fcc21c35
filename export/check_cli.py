"""``m2ae check``: the command line over ``trt_check.check_onnx``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from m2ae.export.trt_rules import DEFAULT_TENSORRT, TENSORRT_VERSIONS

_DESCRIPTION = """\
Check an ONNX model, offline, against what a TensorRT version's ONNX parser and builder
accept and run well: the operator matrix (ops, input types, attributes), explicit
quantization (dequantized types, zero points, per-channel axes), strongly typed precision
(TensorRT 11 builds nothing else; m2ae build on 10 neither), the m2ae plugin nodes against
the plugin's fields and version, known slow lowerings and zero-size constants. Every If
branch is checked too. One line per finding: SEVERITY node (op): what is wrong — what to
do. Exit status 1 when any finding is an error, 2 when the file cannot be read, else 0.
Needs no TensorRT and no GPU.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check an ONNX against what a TensorRT version parses and builds well (no TensorRT needed)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("onnx", type=Path, metavar="MODEL.onnx", help="the ONNX file")
    parser.add_argument(
        "--tensorrt", choices=list(TENSORRT_VERSIONS), default=DEFAULT_TENSORRT,
        help=f"the TensorRT whose rules apply (default {DEFAULT_TENSORRT}, what JetPack 6 ships)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2ae.export.trt_check import SEVERITIES, check_onnx

    findings = check_onnx(args.onnx, args.tensorrt)
    for finding in findings:
        print(finding)
    counts = ", ".join(f"{sum(f.severity == s for f in findings)} {s}(s)" for s in SEVERITIES)
    print(f"m2ae check: {args.onnx} against TensorRT {args.tensorrt}: {counts}", file=sys.stderr)
    return 1 if any(f.severity == "error" for f in findings) else 0
