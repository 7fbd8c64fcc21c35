"""Running models: one engine class per backend behind one interface, and ``m2ae infer``.

``base`` defines the interface: ``Engine``, the abstract base every backend subclasses
(the input, NaN/Inf and closed-state checks of ``checks`` live there once), and
``open_engine``, which picks the backend from the model: ``.onnx`` runs on ONNX Runtime
with the m2ae custom ops registered (``onnx_engine``), ``.engine``/``.plan``/``.trt`` on
TensorRT through cuda-python or pycuda (``trt_engine`` over ``cuda_binding``), a
checkpoint (``.pt``, ``tiny`` or a loaded one) on PyTorch (``torch_engine``). Every
engine reads its ``m2ae.model_info.ModelInfo`` once, when it opens. ``tiling`` runs any
image size within a memory budget; ``infer`` restores files and folders, and
``commands`` is ``m2ae infer``.
"""
