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
  for copies).
- An exception raised in a PyOp aborts the process. The kernels therefore never raise:
  they record the error, return zeros of the expected shape, and ``M2aeSession.run``
  (what ``make_session`` returns) raises the recorded ``ValueError`` after the run.
- ortx hands results back as ``rv.flatten().tolist()``, a Python list per element
  (seconds for a large map). Kernels return ``_DirectResult`` arrays whose
  ``flatten``/``tolist`` hand over the contiguous buffer itself, so ORT gets one memcpy.

Kernel cost: ortx copies every input into a fresh numpy array (including the whole
dense map of a gather); the gather and the scatter then copy one slice per tile (the
scatter into its freshly copied ``base``, in place).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from os import PathLike

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from m2ae.trt_plugins import DOMAIN, GATHER_OP, PLUGIN_ATTRIBUTES, SCATTER_OP
from m2ae.trt_plugins.onnx_ops import (
    all_graphs,
    check_plugin_version,
    has_custom_ops,
    lower_to_standard_ops,
    subgraphs,
)
from m2ae.trt_plugins.reference import check_gather_args, check_scatter_args, tile_origins


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


def _windows(tiles: np.ndarray, height: int, width: int, tile: int, halo: int):  # noqa: ANN202
    """Per tile: (b, n, source rows, source cols, target rows, target cols) of its in-image part."""
    size = tile + 2 * halo
    for b, (image, y0, x0) in enumerate(tile_origins(tiles, height, width, tile)):
        top, left = y0 - halo, x0 - halo
        ys, ye = max(top, 0), min(top + size, height)
        xs, xe = max(left, 0), min(left + size, width)
        yield b, image, slice(ys, ye), slice(xs, xe), slice(ys - top, ye - top), slice(xs - left, xe - left)


def _windows_view(dense: np.ndarray, size: int) -> np.ndarray:
    """[N, C, H-size+1, W-size+1, size, size]: every size x size window of ``dense`` (no copy)."""
    n, c, h, w = dense.shape
    sn, sc, sh, sw = dense.strides
    return np.lib.stride_tricks.as_strided(dense, (n, c, h - size + 1, w - size + 1, size, size),
                                           (sn, sc, sh, sw, sh, sw), writeable=False)


def gather_numpy(dense: np.ndarray, tiles: np.ndarray, tile: int, halo: int) -> np.ndarray:
    """MaskedGather on valid inputs; equal to ``reference.masked_gather``.

    Every window is first copied by one fancy index into a window view of the map, at
    its position clamped into the image (measured 2x faster than a loop of slice
    copies); the few windows that cross the border are then redone: zero-filled and
    copied slice by slice. No padded copy of the map.
    """
    n, c, h, w = dense.shape
    size = tile + 2 * halo
    image, top, left = (tile_origins(tiles, h, w, tile) - np.array([0, halo, halo])).T
    whole = (top >= 0) & (left >= 0) & (top + size <= h) & (left + size <= w)
    if size <= min(h, w):
        out = _windows_view(dense, size)[image, :, np.clip(top, 0, h - size), np.clip(left, 0, w - size)]
    else:
        out = np.empty((tiles.size, c, size, size), dtype=dense.dtype)
    border = np.flatnonzero(~whole)
    for b, image, src_y, src_x, dst_y, dst_x in _windows(tiles[border], h, w, tile, halo):
        target = out[border[b]]
        target[...] = 0
        target[:, dst_y, dst_x] = dense[image, :, src_y, src_x]
    return out


def scatter_numpy(base: np.ndarray, values: np.ndarray, tiles: np.ndarray, inplace: bool = False) -> np.ndarray:
    """MaskedScatter on valid inputs, one slice copy per tile; writes into ``base`` when ``inplace``."""
    out = base if inplace else base.copy()
    _, _, h, w = out.shape
    for b, image, dst_y, dst_x, src_y, src_x in _windows(tiles, h, w, values.shape[3], 0):
        out[image, :, dst_y, dst_x] = values[b, :, src_y, src_x]
    return out


def _gather_kernel(dense: np.ndarray, tiles: np.ndarray, tile: int = 0, halo: int = 0, **_attrs: str) -> np.ndarray:
    try:
        check_gather_args(dense, tiles, tile, halo)
        return gather_numpy(dense, tiles, tile, halo).view(_DirectResult)
    except Exception as exc:  # noqa: BLE001 (raising here would abort the process)
        return _fail(f"{GATHER_OP}: {exc}", (0, 0, 0, 0))


def _scatter_kernel(base: np.ndarray, values: np.ndarray, tiles: np.ndarray, **_attrs: str) -> np.ndarray:
    try:
        # Uniqueness is not checked (a sort per call): the graph's ids come from NonZero.
        check_scatter_args(base, values, tiles, unique=False)
        # ortx passes freshly allocated copies of the inputs: an owned, writable base is
        # ours to overwrite, which saves a full copy of the map.
        inplace = base.flags.owndata and base.flags.writeable
        return scatter_numpy(base, values, tiles, inplace=inplace).view(_DirectResult)
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
    string_attrs = {name: PyCustomOpDef.dt_string for name in PLUGIN_ATTRIBUTES}
    gather_type = f"{DOMAIN}::{GATHER_OP}"
    if gather_type not in registered:
        attrs = {**string_attrs, "tile": PyCustomOpDef.dt_int64, "halo": PyCustomOpDef.dt_int64}
        onnx_op(op_type=gather_type, inputs=[f32, i32], outputs=[f32], attrs=attrs)(_gather_kernel)
    scatter_type = f"{DOMAIN}::{SCATTER_OP}"
    if scatter_type not in registered:
        onnx_op(op_type=scatter_type, inputs=[f32, f32, i32], outputs=[f32], attrs=string_attrs)(_scatter_kernel)


def session_options(options: ort.SessionOptions | None = None) -> ort.SessionOptions:
    """``SessionOptions`` (new, or ``options``) with the ``m2ae`` PyOps library registered."""
    from onnxruntime_extensions import get_library_path

    register_ops()
    options = options or ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed tensor, subgraphs included, from shape inference on
    the lowered graph.

    The lowered graph is all standard ops, so inference flows through the places where
    it would stop at a custom node; tensor names are unchanged by the lowering.
    """
    types: dict[str, int] = {}
    for graph in all_graphs(onnx.shape_inference.infer_shapes(lower_to_standard_ops(model)).graph):
        types.update((init.name, init.data_type) for init in graph.initializer)
        for info in [*graph.input, *graph.value_info, *graph.output]:
            if info.type.HasField("tensor_type"):
                types[info.name] = info.type.tensor_type.elem_type
    return types


def _with_default_attributes(node: onnx.NodeProto) -> onnx.NodeProto:
    """The node itself, or a copy with the plugin attributes it omits set to their defaults.

    ortx fails the session on a declared attribute that a node lacks.
    """
    check_plugin_version(node)
    missing = set(PLUGIN_ATTRIBUTES) - {a.name for a in node.attribute}
    if not missing:
        return node
    filled = onnx.NodeProto()
    filled.CopyFrom(node)
    filled.attribute.extend(helper.make_attribute(name, PLUGIN_ATTRIBUTES[name]) for name in sorted(missing))
    return filled


#: input slots that carry float data, per op
_FLOAT_INPUTS = {GATHER_OP: (0,), SCATTER_OP: (0, 1)}


def _prepare_graph(graph: onnx.GraphProto, types: dict[str, int], counter: list[int]) -> None:
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for sub in subgraphs(node):
            _prepare_graph(sub, types, counter)
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        node = _with_default_attributes(node)
        if types.get(node.input[0]) == TensorProto.FLOAT:
            nodes.append(node)
            continue
        counter[0] += 1
        prefix = f"_m2ae_f32_{counter[0]}"
        wrapped = onnx.NodeProto()
        wrapped.CopyFrom(node)
        for slot in _FLOAT_INPUTS.get(node.op_type, (0,)):
            cast = f"{prefix}/in{slot}"
            nodes.append(helper.make_node("Cast", [node.input[slot]], [cast], name=cast, to=TensorProto.FLOAT))
            wrapped.input[slot] = cast
        wrapped.output[0] = f"{prefix}/out"
        nodes.append(wrapped)
        nodes.append(
            helper.make_node("CastLike", [wrapped.output[0], node.input[0]], [node.output[0]], name=f"{prefix}/back")
        )
    del graph.node[:]
    graph.node.extend(nodes)


def prepare_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of ``model`` that the PyOps can run: float32 data only, every attribute set.

    Each ``m2ae`` node (in the main graph or an ``If`` branch) whose data is not known
    to be float32 gets ``Cast`` to float32 on its float inputs and a ``CastLike`` back
    to the original type on its output. Raises ``ValueError`` for a ``plugin_version``
    other than this toolkit's.
    """
    types = _float_types(model)
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    _prepare_graph(prepared.graph, types, [0])
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
