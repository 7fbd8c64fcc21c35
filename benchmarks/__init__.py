"""What users run to trust the pipeline, using every stage and imported by none.

``commands``: ``m2ae bench``, ``m2ae parity`` and ``m2ae demo``. ``latency`` (``m2ae bench``):
latency sweeps over backends, variants, precisions, blur ratios (``masks``) and sizes, on
the models ``prepared_models`` exports and builds, timed by ``timing``, with MACs counted
from the graph (``macs``), machine info and Jetson power (``sysinfo``); its records,
table and break-even lines are ``latency_records``, its plots ``plots``. ``parity``
(``m2ae parity``): accuracy of exported models against a reference through Polygraphy,
scored by ``parity_metrics``, with image strips (``strips``). ``demo`` (``m2ae demo``): the
whole pipeline into one report. ``kernel_bandwidth`` and ``tiled_memory`` (run with
``python -m``): the CUDA kernels' bandwidth against a device-to-device copy, and the peak
memory of whole-image against tiled inference.
"""
