"""The two custom ops of the pruned graph, MaskedGather and MaskedScatter, at every level.

``reference`` is the numpy definition (docs/design.md section 3) that every other
implementation is tested against: torch ops (``torch_ops``), ONNX nodes and their
lowering to standard ops (``onnx_ops``), ONNX Runtime custom ops (``ort_ops``), and the
CUDA kernels plus TensorRT IPluginV3 plugin in ``csrc/`` (built by ``build``, loaded by
``loader``).
"""

DOMAIN = "m2ae"
PLUGIN_VERSION = "2"
PLUGIN_NAMESPACE = "m2ae"
GATHER_OP = "MaskedGather"
SCATTER_OP = "MaskedScatter"

from m2ae.trt_plugins.loader import load

__all__ = ["load", "DOMAIN", "PLUGIN_VERSION", "PLUGIN_NAMESPACE", "GATHER_OP", "SCATTER_OP"]
