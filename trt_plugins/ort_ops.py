"""ONNX Runtime custom ops for the ``m2ae`` domain, as onnxruntime-extensions PyOps.

Registration: an ortx PyOp whose ``op_type`` reads ``"<domain>::<op>"`` is registered
in that domain (ortx splits on ``::`` and creates the custom-op domain when its
library is loaded into a ``SessionOptions``), so the plugin ONNX runs unchanged: no
domain rewrite. Ops are added to ortx's process-wide list once (``register_ops``
checks that list first), and must be added before ``session_options`` loads the
library.

Three limits of ortx 0.15 PyOps shape this module:

- float16 tensors cannot cross into a PyOp (ortx aborts the process), so the ops are
  registered for float32 only and ``prepare_model`` wraps the float16 ``m2ae`` nodes
  of a model copy in lossless ``Cast`` pairs (float16 -> float32 -> float16 is exact
  for copies, and an fp16 add rounded once from fp32 equals numpy's fp16 add).
- An exception raised in a PyOp aborts the process. The kernels therefore never raise:
  they record the error, return zeros of the expected shape, and ``M2aeSession.run``
  (what ``make_session`` returns) raises the recorded ``ValueError`` after the run.
- ortx hands results back as ``rv.flatten().tolist()``, a Python list per element
  (seconds for a large map). Kernels return ``_DirectResult`` arrays whose
  ``flatten``/``tolist`` hand over the contiguous buffer itself, so ORT gets one memcpy.

Kernel cost: ortx copies every input into a fresh numpy array (including the whole
dense map of a gather); the gather then reads only the addressed pixels and tokens
(vectorised ``np.take``, a loop over the T <= 9 taps only), and the scatter writes
into its freshly copied ``base`` in place.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from os import PathLike

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from m2ae.trt_plugins import DOMAIN, GATHER_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION, SCATTER_OP
from m2ae.trt_plugins.onnx_ops import check_plugin_version, has_custom_ops, lower_to_standard_ops

_PLUGIN_ATTRS = ("plugin_version", "plugin_namespace")


class _DirectResult(np.ndarray):
    """An array that survives ortx's ``rv.flatten().tolist()`` without becoming a list."""

    def flatten(self, order: str = "C") -> np.ndarray:  # noqa: ARG002 (ortx calls it without order)
        return np.ascontiguousarray(self).reshape(-1).view(_DirectResult)

    def tolist(self) -> np.ndarray:  # type: ignore[override]
        return self.view(np.ndarray)


class _ErrorLog:
    """Errors recorded by kernels, which must not raise inside ONNX Runtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[str] = []

    def record(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def take(self) -> list[str]:
        with self._lock:
            errors, self._errors = self._errors, []
        return errors


# ortx keeps one process-wide list of PyOps, so their error channel is process-wide too.
ERRORS = _ErrorLog()


def _fail(message: str, shape: tuple[int, ...]) -> np.ndarray:
    ERRORS.record(message)
    return np.zeros(shape, dtype=np.float32).view(_DirectResult)


def _gather_error(dense: np.ndarray, tokens: np.ndarray, table: np.ndarray) -> str | None:
    if dense.ndim != 4:
        return f"dense must be [N,C,H,W], got shape {dense.shape}"
    if tokens.ndim != 2 or table.ndim != 2:
        return f"tokens must be [C,Kt] and table [T,K], got {tokens.shape} and {table.shape}"
    n, c, h, w = dense.shape
    if tokens.shape[0] != c:
        return f"tokens have {tokens.shape[0]} channels, dense has {c}"
    if table.size:
        lo, hi = int(table.min()), int(table.max())
        kt, num_pixels = tokens.shape[1], n * h * w
        if hi >= kt or lo < -1 - num_pixels:
            v = hi if hi >= kt else lo
            return f"table value {v} out of range: tokens hold {kt} columns and dense holds {num_pixels} pixels"
    return None


def gather_numpy(dense: np.ndarray, tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Vectorised MaskedGather on valid inputs; equal to ``reference.masked_gather``.

    ``mode="clip"`` skips numpy's per-index bounds check (about half the time of a
    take): callers validate the table first, as the kernel does.
    """
    n, c, h, w = dense.shape
    t, k = table.shape
    kt = tokens.shape[1]
    hw = h * w
    out = np.empty((t, c, k), dtype=dense.dtype)
    tokens_ext = np.empty((c, kt + 1), dtype=dense.dtype)
    tokens_ext[:, :kt] = tokens
    tokens_ext[:, kt] = 0
    by_pixel = dense.reshape(n, c, hw)
    for ti in range(t):
        v = table[ti]
        np.take(tokens_ext, np.where(v >= 0, v, kt), axis=1, out=out[ti], mode="clip")
        cols = np.flatnonzero(v <= -2)
        if cols.size:
            pixel = -2 - v[cols].astype(np.int64)
            if n == 1:
                out[ti][:, cols] = np.take(by_pixel[0], pixel, axis=1, mode="clip")
            else:
                out[ti][:, cols] = by_pixel[pixel // hw, :, pixel % hw].T
    return out.reshape(t * c, k)


def scatter_numpy(base: np.ndarray, values: np.ndarray, index: np.ndarray, accumulate: int, inplace: bool = False) -> np.ndarray:
    """Vectorised MaskedScatter on valid inputs; writes into ``base`` when ``inplace``."""
    out = base if inplace else base.copy()
    n, c, h, w = out.shape
    hw = h * w
    if index.size == 0:
        return out
    if n == 1:
        pixels = out.reshape(c, hw)
        if accumulate:
            pixels[:, index] += values
        else:
            pixels[:, index] = values
    else:
        pixel = index.astype(np.int64)
        by_pixel = out.reshape(n, c, hw)
        if accumulate:
            by_pixel[pixel // hw, :, pixel % hw] += values.T
        else:
            by_pixel[pixel // hw, :, pixel % hw] = values.T
    return out


def _gather_kernel(dense: np.ndarray, tokens: np.ndarray, table: np.ndarray, **_attrs: str) -> np.ndarray:
    try:
        error = _gather_error(dense, tokens, table)
        if error is not None:
            return _fail(f"{GATHER_OP}: {error}", (0, 0))
        return gather_numpy(dense, tokens, table).view(_DirectResult)
    except Exception as exc:  # noqa: BLE001 (raising here would abort the process)
        return _fail(f"{GATHER_OP}: {exc}", (0, 0))


def _scatter_error(base: np.ndarray, values: np.ndarray, index: np.ndarray, accumulate: int) -> str | None:
    if base.ndim != 4:
        return f"base must be [N,C,H,W], got shape {base.shape}"
    if values.ndim != 2 or index.ndim != 1:
        return f"values must be [C,K] and index [K], got {values.shape} and {index.shape}"
    n, c, h, w = base.shape
    if values.shape != (c, index.shape[0]):
        return f"values must be [{c}, {index.shape[0]}] to match base and index, got {values.shape}"
    if accumulate not in (0, 1):
        return f"accumulate must be 0 or 1, got {accumulate}"
    num_pixels = n * h * w
    # Uniqueness is not checked here (a sort per call): the graph's indices come from NonZero.
    if index.size and (index.min() < 0 or index.max() >= num_pixels):
        return f"index values must lie in [0, {num_pixels}), got [{index.min()}, {index.max()}]"
    return None


def _scatter_kernel(base: np.ndarray, values: np.ndarray, index: np.ndarray, accumulate: int = 0, **_attrs: str) -> np.ndarray:
    try:
        error = _scatter_error(base, values, index, accumulate)
        if error is not None:
            return _fail(f"{SCATTER_OP}: {error}", base.shape)
        # ortx passes freshly allocated copies of the inputs: an owned, writable base is
        # ours to overwrite, which saves a full copy of the map.
        inplace = base.flags.owndata and base.flags.writeable
        return scatter_numpy(base, values, index, accumulate, inplace=inplace).view(_DirectResult)
    except Exception as exc:  # noqa: BLE001 (raising here would abort the process)
        return _fail(f"{SCATTER_OP}: {exc}", base.shape)


def _registered_op_types() -> set[str]:
    from onnxruntime_extensions._ocos import Opdef

    return {opdef.op_type for opdef in Opdef._odlist.values()}


def register_ops() -> None:
    """Add both PyOps to onnxruntime-extensions once per process (idempotent)."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    registered = _registered_op_types()
    f32, i32 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32
    string_attrs = {name: PyCustomOpDef.dt_string for name in _PLUGIN_ATTRS}
    gather_type = f"{DOMAIN}::{GATHER_OP}"
    if gather_type not in registered:
        onnx_op(op_type=gather_type, inputs=[f32, f32, i32], outputs=[f32], attrs=string_attrs)(_gather_kernel)
    scatter_type = f"{DOMAIN}::{SCATTER_OP}"
    if scatter_type not in registered:
        attrs = {**string_attrs, "accumulate": PyCustomOpDef.dt_int64}
        onnx_op(op_type=scatter_type, inputs=[f32, f32, i32], outputs=[f32], attrs=attrs)(_scatter_kernel)


def session_options(options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """``SessionOptions`` (new, or ``options``) with the ``m2ae`` PyOps library registered."""
    from onnxruntime_extensions import get_library_path

    register_ops()
    options = options or ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed tensor, from shape inference on the lowered graph.

    The lowered graph is all standard ops, so inference flows through the places where
    it would stop at a custom node; tensor names are unchanged by the lowering.
    """
    lowered = onnx.shape_inference.infer_shapes(lower_to_standard_ops(model))
    graph = lowered.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


def _with_default_attributes(node: onnx.NodeProto) -> onnx.NodeProto:
    """The node itself, or a copy with the attributes it omits set to their defaults.

    ortx fails the session on a declared attribute that a node lacks; the lowering
    reads a missing ``accumulate`` as 0, and so does this runtime.
    """
    defaults: dict[str, object] = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE}
    if node.op_type == SCATTER_OP:
        defaults["accumulate"] = 0
    check_plugin_version(node)
    missing = set(defaults) - {a.name for a in node.attribute}
    if not missing:
        return node
    filled = onnx.NodeProto()
    filled.CopyFrom(node)
    filled.attribute.extend(helper.make_attribute(name, defaults[name]) for name in sorted(missing))
    return filled


def prepare_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of ``model`` that the PyOps can run: float32 data only, every attribute set.

    Each ``m2ae`` node whose data is not known to be float32 gets ``Cast`` to float32
    on its two float inputs and a ``CastLike`` back to the original type on its output.
    Top-level graph only (the exporters put no custom op in a subgraph; an fp16 node
    left in one fails the session load cleanly for want of a kernel). Raises
    ``ValueError`` for a ``plugin_version`` other than this toolkit's.
    """
    types = _float_types(model)
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(model.graph.node):
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        node = _with_default_attributes(node)
        if types.get(node.input[0]) == TensorProto.FLOAT:
            nodes.append(node)
            continue
        prefix = f"_m2ae_f32_{i}"
        wrapped = onnx.NodeProto()
        wrapped.CopyFrom(node)
        for slot in (0, 1):
            cast = f"{prefix}/in{slot}"
            nodes.append(helper.make_node("Cast", [node.input[slot]], [cast], name=cast, to=TensorProto.FLOAT))
            wrapped.input[slot] = cast
        wrapped.output[0] = f"{prefix}/out"
        nodes.append(wrapped)
        nodes.append(
            helper.make_node("CastLike", [wrapped.output[0], node.input[0]], [node.output[0]], name=f"{prefix}/back")
        )
    del prepared.graph.node[:]
    prepared.graph.node.extend(nodes)
    return prepared


class M2aeSession(ort.InferenceSession):
    """``InferenceSession`` that raises the errors the ``m2ae`` kernels recorded during ``run``."""

    def run(self, output_names, input_feed, run_options=None):  # noqa: ANN001, ANN201 (ORT's signature)
        ERRORS.take()
        try:
            outputs = super().run(output_names, input_feed, run_options)
        finally:
            errors = ERRORS.take()
            if errors:
                raise ValueError("; ".join(errors))
        return outputs


def make_session(
    model: str | PathLike[str] | bytes | onnx.ModelProto,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
    options: ort.SessionOptions | None = None,
) -> M2aeSession:
    """ONNX Runtime session for a model with or without ``m2ae`` ops.

    ``threads`` sets the intra-op thread count (None: ORT's default). Models with
    ``m2ae`` ops are passed through ``prepare_model`` first.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_model_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    options = session_options(options)
    if threads is not None:
        options.intra_op_num_threads = threads
    if has_custom_ops(model):
        model = prepare_model(model)
    return M2aeSession(model.SerializeToString(), options, providers=list(providers))
