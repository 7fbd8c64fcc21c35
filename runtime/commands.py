"""``m2ae infer``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from m2ae.runtime.infer import InferResult

_DESCRIPTION = """\
Restore an image or a folder of images. The model is picked by its file: .onnx runs on
ONNX Runtime (m2ae ops registered), .engine/.plan on TensorRT, a checkpoint (.pt, or
'tiny') on PyTorch. Images are padded to the network's multiple and cropped back;
grayscale, RGBA (alpha dropped) and 16-bit images are converted to RGB. Writes
OUTPUT/{name}_restored.png and OUTPUT/{name}_mask.png (the predicted blur mask over the
input), one line per image as it finishes.
"""

_EPILOG = """\
output names: {name} is the input's stem (photo.png -> photo_restored.png); inputs of the
  folder whose stems clash, ignoring case, keep their extension (photo.jpg and photo.tif
  -> photo.jpg_restored.png and photo.tif_restored.png), so no output overwrites another.
  Subfolders are not read.
folders: a bad image (unreadable, corrupt, smaller than the network's minimum) is
  reported and skipped; the others go on, and the exit status is 1 with the failed
  names listed at the end. A single image that fails exits 2. Temporary files of killed
  runs are removed from OUTPUT; --skip-existing resumes such a run.
large images: an image whose working set exceeds --max-memory runs in tiles, with the
  same result as whole-image inference: windows overlap by the network's receptive
  field (ONNX models exported before m2ae recorded it must be re-exported to tile).
  --max-memory bounds one engine call on PyTorch and ONNX Runtime; the image and its
  outputs take about 50 more bytes per image pixel. A TensorRT engine runs windows of
  its profile's --max (its memory is reserved when it is built); to tile with one, build
  it for the tile: m2ae build --onnx X.onnx --opt 1024x1024 --max 1024x1024, then
  m2ae infer --model X.engine --tile 1024 (or leave --tile out: it uses the --max).
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "infer",
        help="restore images with a checkpoint, an ONNX model or a TensorRT engine",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="tiny", help="X.onnx, X.engine or a checkpoint (default: tiny)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument(
        "--threads", type=int, help="CPU threads for ONNX Runtime and PyTorch, 1 to 4x the CPU count (default: all)"
    )
    parser.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help="run every image in N x N windows (N a multiple of the network's multiple, above twice its "
        "receptive field); default: only images over --max-memory, in the largest window that fits",
    )
    parser.add_argument(
        "--tile-batch", type=int, metavar="B", help="windows per engine call (default 1; TensorRT: the engine's batch)"
    )
    parser.add_argument(
        "--max-memory",
        default="2GB",
        metavar="SIZE",
        help="working set of one engine call, e.g. 2GB, 1.5GB, 800MB (powers of 1024); default 2GB, sized "
        "for an 8 GB Jetson Orin Nano, whose CPU and GPU share the memory",
    )
    parser.add_argument("--skip-existing", action="store_true", help="skip images whose two outputs both exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_infer)


def _print_result(result: InferResult) -> None:
    from tqdm import tqdm

    if result.status == "failed":
        tqdm.write(f"failed: {result.error}", file=sys.stderr)
    elif result.status == "skipped":
        tqdm.write(f"{result.source}: skipped, {result.restored.name} and {result.overlay.name} exist")
    else:
        tiles = f", {result.tiles} tiles" if result.tiles > 1 else ""
        tqdm.write(
            f"{result.source} -> {result.restored} ({100 * result.blurred_fraction:.1f}% restored{tiles}, "
            f"{result.seconds:.1f} s)"
        )


def _infer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from m2ae.atomic import check_output_dir
    from m2ae.errors import UserError
    from m2ae.runtime.base import CHECKPOINT_SUFFIXES, SHIPPED_CHECKPOINTS, open_engine
    from m2ae.runtime.infer import InferOptions, infer_files
    from m2ae.runtime.onnx_engine import check_threads
    from m2ae.runtime.tiling import parse_memory

    # Everything that can be checked without the model, before loading it.
    options = InferOptions(tile=args.tile, tile_batch=args.tile_batch, max_memory=parse_memory(args.max_memory),
                           skip_existing=args.skip_existing)
    if args.threads is not None:
        check_threads(args.threads, "--threads")
    check_output_dir(args.output, "--output")
    if not Path(args.input).exists():
        raise UserError(f"--input {args.input}: no such file or folder")

    suffix = Path(args.model).suffix.lower()
    engine_options = {"threads": args.threads} if args.threads and suffix == ".onnx" else {}
    if args.threads and (suffix in CHECKPOINT_SUFFIXES or args.model in SHIPPED_CHECKPOINTS):
        import torch

        torch.set_num_threads(args.threads)
    engine = open_engine(args.model, **engine_options)
    binding = getattr(engine, "cuda_binding_line", None)  # TensorRT engines: which CUDA binding runs them
    if binding:
        print(binding, file=sys.stderr)
    folder = Path(args.input).is_dir()

    def report(result: InferResult) -> None:
        if folder or result.status != "failed":  # a single image's failure is the command's error
            _print_result(result)

    results = infer_files(engine, args.input, args.output, options, progress=not args.no_progress, on_result=report)
    failed = [r for r in results if r.status == "failed"]
    if failed and not folder:
        raise UserError(failed[0].error)
    if failed:
        names = ", ".join(r.source.name for r in failed)
        print(f"m2ae infer: {len(failed)} of {len(results)} images failed: {names}", file=sys.stderr)
        return 1
    return 0
