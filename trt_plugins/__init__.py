"""The two custom ops of the pruned graph, MaskedGather and MaskedScatter, at every level.

``reference`` is the numpy definition (docs/design.md section 3) that every other
implementation is tested against, and ``contract`` the argument checks they all share:
torch ops (``torch_ops``), ONNX nodes and their lowering to standard ops (``onnx_ops``),
ONNX Runtime custom ops (``ort_ops``), and the CUDA kernels plus TensorRT IPluginV3
plugin in ``csrc/`` (built by ``build``, which records each build in a ``manifest``;
found and loaded by ``loader``; the kernels' C launchers wrapped by ``launchers``).
"""

from types import MappingProxyType

DOMAIN = "m2ae"
PLUGIN_VERSION = "2"
PLUGIN_NAMESPACE = "m2ae"
GATHER_OP = "MaskedGather"
SCATTER_OP = "MaskedScatter"
# String attributes every m2ae node carries: the TensorRT ONNX parser finds the plugin by them.
PLUGIN_ATTRIBUTES = MappingProxyType({"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE})

from m2ae.trt_plugins.loader import load

__all__ = ["load", "DOMAIN", "PLUGIN_VERSION", "PLUGIN_NAMESPACE", "PLUGIN_ATTRIBUTES", "GATHER_OP", "SCATTER_OP"]
