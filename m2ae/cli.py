"""``m2ae <command>``: one subcommand per pipeline step, each a thin layer over a
Python function of its stage. Each stage registers its own subcommands from its
``commands`` module, which imports nothing heavy until a command runs."""

from __future__ import annotations

import argparse
import importlib
import sys

from m2ae import __version__
from m2ae.errors import UserError

# Order sets the order of `m2ae --help`: the pipeline's order.
_COMMAND_MODULES = (
    "m2ae.model.commands",
    "m2ae.export.commands",
    "m2ae.trt_plugins.commands",
    "m2ae.runtime.commands",
    "m2ae.benchmarks.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2ae",
        description="Train, reparameterise, export, build and run M2AENet, a local motion "
        "deblurring CNN that restores only the pixels it predicts to be blurred.",
    )
    parser.add_argument("--version", action="version", version=f"m2ae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"m2ae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"m2ae {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
