"""m2ae: spatially-sparse local motion deblurring, from PyTorch to TensorRT.

The pipeline stages are subpackages, and data flows one way through them:
``m2ae.model`` (network, data, training) -> ``m2ae.export`` (reparameterisation,
pruned graph, ONNX, engines) -> ``m2ae.runtime`` (ONNX Runtime and TensorRT
engines, PyTorch checkpoints). ``m2ae.trt_plugins`` owns the two custom ops at every
level (numpy reference, torch, ONNX, CUDA, TensorRT plugin); ``m2ae.benchmarks`` uses
them all. This root package is the ground floor, what several stages share and which
imports no stage: ``errors`` (``UserError``), ``model_info`` (``ModelInfo``, the one
reading of a model's ``m2ae.*`` metadata), ``graph_io`` (the graphs' input and output
names), ``engine_sidecar`` (an engine's identity and cache key), ``platform_info``
(what this machine offers for TensorRT), ``cli_args`` (command-line value parsers),
``padding``, ``imageio``, ``atomic`` (atomic writes, output checks) and ``hashing``;
and ``cli``, the ``m2ae`` command, which registers every stage's subcommands.
"""

__version__ = "0.1.0"
