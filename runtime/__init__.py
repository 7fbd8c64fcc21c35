"""Running exported models: one engine class per backend behind one interface.

``base`` defines the interface (``Engine``, ``EngineOutputs``) and ``open_engine``,
which picks the backend from the file: ``.onnx`` runs on ONNX Runtime with the m2ae
custom ops registered (``onnx_engine``), ``.engine``/``.plan`` on TensorRT through
cuda-python or pycuda (``trt_engine`` over ``cuda_binding``). ``images`` reads and
writes images and pads to the network's multiple; ``infer`` is what ``m2ae infer`` runs.
"""
