"""From a trained checkpoint to deployable graphs and engines.

``reparam`` folds RepVGG branches and rewrites 3x3 convs in gather form; ``pruned``
is the pixel-pruned forward built on the m2ae ops; ``onnx_export`` writes the
plugin/portable/dense ONNX variants; ``precision`` makes fp16 and int8 QDQ ONNX;
``trt_builder`` turns an ONNX into a TensorRT engine, cached by ``engine_cache``.
"""
