"""From a trained checkpoint to deployable graphs and engines.

The deployable torch modules come from ``m2ae.model`` (``reparam``: the folded
network; ``pruned``: the pruned forward on block-sparse tiles, built on the m2ae ops).
``onnx_export`` traces them into the plugin/portable/dense ONNX variants (``commands``:
``m2ae export``), the pruned ones joined by ``compose``; ``precision`` makes fp16 and
int8 QDQ ONNX from the fp32 export, with ``calibration`` images; ``trt_check`` checks
an ONNX offline against a TensorRT version's parser and builder rules (``trt_rules``;
``commands``: ``m2ae check``); ``trt_builder`` turns an ONNX into a TensorRT engine
(``commands``: ``m2ae build``), cached by ``engine_cache`` and tuned to the machine
``m2ae.platform_info`` detects (desktop GPU, Jetson Orin or Thor).
"""
