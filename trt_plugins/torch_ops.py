"""Torch custom ops ``torch.ops.m2ae.masked_gather`` / ``masked_scatter`` and their ONNX symbolics.

The ops follow ``reference.py`` exactly (pure data movement over square tiles) and are
built from plain torch padding, unfolding and indexing, so they run on any device torch
does. Fake (meta) kernels give the output shapes for tracing and export: gather
``[B, C, tile+2*halo, tile+2*halo]``; scatter like ``base``. No autograd: the pruned
graph is inference only.

``register_onnx_symbolics`` maps both ops onto ``m2ae``-domain ONNX nodes for
``torch.onnx.export(..., dynamo=False)``.

The ops themselves trust their inputs (in the pruned graph indices come from
``nonzero``); the wrappers ``masked_gather`` / ``masked_scatter`` validate shapes and
dtypes against ``contract`` and, with ``check=True`` on CPU tensors, the ids' range and
uniqueness, raising ``ValueError`` with the reference's wording.
"""

from __future__ import annotations

import torch
from torch import Tensor

from m2ae.trt_plugins import DOMAIN, GATHER_OP, PLUGIN_ATTRIBUTES, SCATTER_OP
from m2ae.trt_plugins.contract import (
    Dtypes,
    Operand,
    check_gather,
    check_id_range,
    check_scatter,
    check_unique,
    grid_shape,
)

GATHER_QUALNAME = f"{DOMAIN}::masked_gather"
SCATTER_QUALNAME = f"{DOMAIN}::masked_scatter"
TORCH_DTYPES = Dtypes(floats=(torch.float32, torch.float16), index=torch.int32)


def _tile_coords(tiles: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor, Tensor]:
    ids = tiles.long()
    return ids // (rows * cols), (ids // cols) % rows, ids % cols


def _gather_impl(dense: Tensor, tiles: Tensor, tile: int, halo: int) -> Tensor:
    n, c, h, w = dense.shape
    rows, cols = grid_shape(h, w, tile)
    size = tile + 2 * halo
    # One zero-padded copy makes every window (partial edge tiles too) a plain slice.
    padded = torch.nn.functional.pad(dense, (halo, halo + cols * tile - w, halo, halo + rows * tile - h))
    windows = padded.unfold(2, size, tile).unfold(3, size, tile)  # [N, C, rows, cols, S, S]
    image, ty, tx = _tile_coords(tiles, rows, cols)
    return windows[image, :, ty, tx].contiguous()


def _scatter_impl(base: Tensor, values: Tensor, tiles: Tensor) -> Tensor:
    n, c, h, w = base.shape
    tile = values.shape[3]
    rows, cols = grid_shape(h, w, tile)
    out = base.new_zeros((n, c, rows * tile, cols * tile))
    out[:, :, :h, :w] = base
    cells = out.unfold(2, tile, tile).unfold(3, tile, tile)  # a view: writes land in ``out``
    image, ty, tx = _tile_coords(tiles, rows, cols)
    cells[image, :, ty, tx] = values
    return out[:, :, :h, :w].contiguous()


def _gather_fake(dense: Tensor, tiles: Tensor, tile: int, halo: int) -> Tensor:
    size = tile + 2 * halo
    return dense.new_empty((tiles.shape[0], dense.shape[1], size, size))


def _scatter_fake(base: Tensor, values: Tensor, tiles: Tensor) -> Tensor:
    return torch.empty_like(base, memory_format=torch.contiguous_format)


def _op_exists(name: str) -> bool:
    return hasattr(getattr(torch.ops, DOMAIN), name)


def register_torch_ops() -> None:
    """Define both ops once per process; later calls (and module reloads) do nothing."""
    if not _op_exists("masked_gather"):
        gather = torch.library.custom_op(GATHER_QUALNAME, mutates_args=())(_gather_impl)
        gather.register_fake(_gather_fake)
    if not _op_exists("masked_scatter"):
        scatter = torch.library.custom_op(SCATTER_QUALNAME, mutates_args=())(_scatter_impl)
        scatter.register_fake(_scatter_fake)


register_torch_ops()


def _is_host(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu"


def validate_gather(dense: Tensor, tiles: Tensor, tile: int, halo: int, check: bool = True) -> None:
    """Raise ``ValueError`` when the inputs break the MaskedGather contract.

    Shapes and dtypes are always checked; ``check`` adds the tile id range check, done
    only for CPU ids (on a device it would force a synchronising copy).
    """
    count = check_gather(Operand.of(dense), Operand.of(tiles), tile, halo, TORCH_DTYPES)
    if check and _is_host(tiles):
        check_id_range(tiles, count)


def validate_scatter(base: Tensor, values: Tensor, tiles: Tensor, check: bool = True) -> None:
    """Raise ``ValueError`` when the inputs break the MaskedScatter contract.

    ``check`` adds the range and uniqueness checks on CPU ids.
    """
    count = check_scatter(Operand.of(base), Operand.of(values), Operand.of(tiles), TORCH_DTYPES)
    if check and _is_host(tiles):
        check_id_range(tiles, count)
        check_unique(torch.unique(tiles).numel(), tiles.numel())


def masked_gather(dense: Tensor, tiles: Tensor, tile: int, halo: int, check: bool = True) -> Tensor:
    """``torch.ops.m2ae.masked_gather`` after validation; returns ``[B, C, tile+2*halo, tile+2*halo]``."""
    validate_gather(dense, tiles, tile, halo, check)
    return torch.ops.m2ae.masked_gather(dense, tiles, tile, halo)


def masked_scatter(base: Tensor, values: Tensor, tiles: Tensor, check: bool = True) -> Tensor:
    """``torch.ops.m2ae.masked_scatter`` after validation; returns a new ``[N,C,H,W]`` map."""
    validate_scatter(base, values, tiles, check)
    return torch.ops.m2ae.masked_scatter(base, values, tiles)


def _plugin_attrs() -> dict[str, str]:
    """The plugin attributes, named as TorchScript's ``g.op`` types them (``_s``: string)."""
    return {f"{name}_s": value for name, value in PLUGIN_ATTRIBUTES.items()}


def _gather_symbolic(g, dense, tiles, tile: int, halo: int):  # noqa: ANN001, ANN202 (TorchScript values)
    out = g.op(f"{DOMAIN}::{GATHER_OP}", dense, tiles, tile_i=tile, halo_i=halo, **_plugin_attrs())
    size = tile + 2 * halo
    channels = dense.type().sizes()[1] if dense.type().sizes() else None
    out.setType(dense.type().with_sizes([None, channels, size, size]))
    return out


def _scatter_symbolic(g, base, values, tiles):  # noqa: ANN001, ANN202
    out = g.op(f"{DOMAIN}::{SCATTER_OP}", base, values, tiles, **_plugin_attrs())
    out.setType(base.type())
    return out


def register_onnx_symbolics(opset: int = 17) -> None:
    """Map both ops to ``m2ae``-domain ONNX nodes for ``torch.onnx.export(..., dynamo=False)``.

    Registering again replaces the same entries, so repeated calls are harmless.
    """
    from torch.onnx import register_custom_op_symbolic, symbolic_helper

    # parse_args turns the traced ints into the Python ints the attributes need.
    gather = symbolic_helper.parse_args("v", "v", "i", "i")(_gather_symbolic)
    register_custom_op_symbolic(GATHER_QUALNAME, gather, opset)
    register_custom_op_symbolic(SCATTER_QUALNAME, _scatter_symbolic, opset)
