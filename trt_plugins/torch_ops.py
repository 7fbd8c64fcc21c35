"""Torch custom ops ``torch.ops.m2ae.masked_gather`` / ``masked_scatter`` and their ONNX symbolics.

The ops follow ``reference.py`` exactly (pure data movement, plus one add for
``accumulate=1``) and are built from plain torch indexing, so they run on any device
torch does. Fake (meta) kernels give the output shapes for tracing and export:
gather ``[T*C, K]`` with ``T, K`` from ``table`` and ``C`` from ``dense``; scatter like
``base``. No autograd: the pruned graph is inference only.

``register_onnx_symbolics`` maps both ops onto ``m2ae``-domain ONNX nodes for
``torch.onnx.export(..., dynamo=False)``.

The ops themselves trust their inputs (in the pruned graph indices come from
``nonzero``); the wrappers ``masked_gather`` / ``masked_scatter`` validate shapes and
dtypes and, with ``check=True`` on CPU tensors, index ranges, raising ``ValueError`` with
the reference's wording.
"""

from __future__ import annotations

import torch
from torch import Tensor

from m2ae.trt_plugins import DOMAIN, GATHER_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION, SCATTER_OP

GATHER_QUALNAME = f"{DOMAIN}::masked_gather"
SCATTER_QUALNAME = f"{DOMAIN}::masked_scatter"
FLOAT_DTYPES = (torch.float32, torch.float16)


def _gather_impl(dense: Tensor, tokens: Tensor, table: Tensor) -> Tensor:
    n, c, h, w = dense.shape
    t, k = table.shape
    hw = h * w
    v = table.reshape(-1).long()
    # Tokens gain a zero column so that v == -1 (and dense entries) read a valid column.
    tokens_ext = torch.cat([tokens, tokens.new_zeros((c, 1))], dim=1)
    kt = tokens.shape[1]
    rows = tokens_ext.t()[torch.where(v >= 0, v, kt)]
    from_dense = v <= -2
    if n * hw > 0:
        p = torch.where(from_dense, -2 - v, torch.zeros_like(v))
        # Index [n, :, hw] directly: no transpose of the dense map.
        dense_rows = dense.reshape(n, c, hw)[p // hw, :, p % hw]
        rows = torch.where(from_dense.unsqueeze(1), dense_rows, rows)
    return rows.reshape(t, k, c).permute(0, 2, 1).reshape(t * c, k)


def _scatter_impl(base: Tensor, values: Tensor, index: Tensor, accumulate: int) -> Tensor:
    n, c, h, w = base.shape
    hw = h * w
    out = base.clone(memory_format=torch.contiguous_format)
    idx = index.long()
    pixels = out.view(n, c, hw)
    nidx, hwidx = idx // hw, idx % hw
    if accumulate:
        pixels[nidx, :, hwidx] += values.t()
    else:
        pixels[nidx, :, hwidx] = values.t()
    return out


def _gather_fake(dense: Tensor, tokens: Tensor, table: Tensor) -> Tensor:
    return dense.new_empty((table.shape[0] * dense.shape[1], table.shape[1]))


def _scatter_fake(base: Tensor, values: Tensor, index: Tensor, accumulate: int) -> Tensor:
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


def _check_float(name: str, tensor: Tensor) -> None:
    if tensor.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float16, got {tensor.dtype}")


def _check_index(name: str, tensor: Tensor) -> None:
    if tensor.dtype != torch.int32:
        raise ValueError(f"{name} must be int32, got {tensor.dtype}")


def _is_host(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu"


def validate_gather(dense: Tensor, tokens: Tensor, table: Tensor, check: bool = True) -> None:
    """Raise ``ValueError`` when the inputs break the MaskedGather contract.

    Shapes and dtypes are always checked; ``check`` adds the index range check, done
    only for CPU tables (on a device it would force a synchronising copy).
    """
    _check_float("dense", dense)
    _check_index("table", table)
    if dense.ndim != 4:
        raise ValueError(f"dense must be [N,C,H,W], got shape {tuple(dense.shape)}")
    if tokens.ndim != 2 or table.ndim != 2:
        raise ValueError(
            f"tokens must be [C,Kt] and table [T,K], got {tuple(tokens.shape)} and {tuple(table.shape)}"
        )
    if tokens.dtype != dense.dtype:
        raise ValueError(f"tokens dtype {tokens.dtype} differs from dense dtype {dense.dtype}")
    n, c, h, w = dense.shape
    if tokens.shape[0] != c:
        raise ValueError(f"tokens have {tokens.shape[0]} channels, dense has {c}")
    if not (check and _is_host(table) and table.numel()):
        return
    kt = tokens.shape[1]
    num_pixels = n * h * w
    values = table.long()
    bad = (values >= kt) | (values < -1 - num_pixels)
    if bool(bad.any()):
        v = int(values[bad][0])
        raise ValueError(
            f"table value {v} out of range: tokens hold {kt} columns and dense holds {num_pixels} pixels"
        )


def validate_scatter(base: Tensor, values: Tensor, index: Tensor, accumulate: int, check: bool = True) -> None:
    """Raise ``ValueError`` when the inputs break the MaskedScatter contract.

    ``check`` adds the range and uniqueness checks on CPU indices.
    """
    _check_float("base", base)
    _check_index("index", index)
    if base.ndim != 4:
        raise ValueError(f"base must be [N,C,H,W], got shape {tuple(base.shape)}")
    if values.ndim != 2 or index.ndim != 1:
        raise ValueError(
            f"values must be [C,K] and index [K], got {tuple(values.shape)} and {tuple(index.shape)}"
        )
    if values.dtype != base.dtype:
        raise ValueError(f"values dtype {values.dtype} differs from base dtype {base.dtype}")
    n, c, h, w = base.shape
    if tuple(values.shape) != (c, index.shape[0]):
        raise ValueError(
            f"values must be [{c}, {index.shape[0]}] to match base and index, got {tuple(values.shape)}"
        )
    if accumulate not in (0, 1):
        raise ValueError(f"accumulate must be 0 or 1, got {accumulate}")
    if not (check and _is_host(index) and index.numel()):
        return
    num_pixels = n * h * w
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= num_pixels:
        raise ValueError(f"index values must lie in [0, {num_pixels}), got [{lo}, {hi}]")
    if torch.unique(index).numel() != index.numel():
        raise ValueError("index values must be unique")


def masked_gather(dense: Tensor, tokens: Tensor, table: Tensor, check: bool = True) -> Tensor:
    """``torch.ops.m2ae.masked_gather`` after validation; returns ``[T*C, K]``."""
    validate_gather(dense, tokens, table, check)
    return torch.ops.m2ae.masked_gather(dense, tokens, table)


def masked_scatter(base: Tensor, values: Tensor, index: Tensor, accumulate: int = 0, check: bool = True) -> Tensor:
    """``torch.ops.m2ae.masked_scatter`` after validation; returns a new ``[N,C,H,W]`` map."""
    validate_scatter(base, values, index, accumulate, check)
    return torch.ops.m2ae.masked_scatter(base, values, index, accumulate)


def _plugin_attrs() -> dict[str, str]:
    return {"plugin_version_s": PLUGIN_VERSION, "plugin_namespace_s": PLUGIN_NAMESPACE}


def _gather_symbolic(g, dense, tokens, table):  # noqa: ANN001, ANN202 (TorchScript graph values)
    out = g.op(f"{DOMAIN}::{GATHER_OP}", dense, tokens, table, **_plugin_attrs())
    out.setType(dense.type().with_sizes([None, None]))
    return out


def _scatter_symbolic(g, base, values, index, accumulate: int):  # noqa: ANN001, ANN202
    out = g.op(f"{DOMAIN}::{SCATTER_OP}", base, values, index, accumulate_i=accumulate, **_plugin_attrs())
    out.setType(base.type())
    return out


def register_onnx_symbolics(opset: int = 17) -> None:
    """Map both ops to ``m2ae``-domain ONNX nodes for ``torch.onnx.export(..., dynamo=False)``.

    Registering again replaces the same entries, so repeated calls are harmless.
    """
    from torch.onnx import register_custom_op_symbolic, symbolic_helper

    # parse_args turns the traced int into the Python int the attribute needs.
    scatter = symbolic_helper.parse_args("v", "v", "v", "i")(_scatter_symbolic)
    register_custom_op_symbolic(GATHER_QUALNAME, _gather_symbolic, opset)
    register_custom_op_symbolic(SCATTER_QUALNAME, scatter, opset)
