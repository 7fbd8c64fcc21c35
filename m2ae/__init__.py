"""m2ae: spatially-sparse local motion deblurring, from PyTorch to TensorRT.

The pipeline stages are subpackages, and data flows one way through them:
``m2ae.model`` (network, data, training) -> ``m2ae.export`` (reparameterisation,
pruned graph, ONNX, engines) -> ``m2ae.runtime`` (ONNX Runtime and TensorRT
engines). ``m2ae.trt_plugins`` owns the two custom ops at every level (numpy
reference, torch, ONNX, CUDA, TensorRT plugin); ``m2ae.benchmarks`` uses them all.
This root package holds only what every stage shares: errors and atomic file writes.
"""

__version__ = "0.1.0"
