"""What users run to trust the pipeline, using every stage and imported by none.

``latency`` (``m2ae bench``): latency sweeps over backends, variants, precisions, blur
ratios (``masks``) and sizes, with MACs counted from the graph (``macs``), machine info
and Jetson power (``sysinfo``) and plots (``plots``). ``parity`` (``m2ae parity``):
accuracy of exported models against a reference through Polygraphy, with image strips
(``strips``). ``demo`` (``m2ae demo``): the whole pipeline into one report.
``kernel_bandwidth``: the CUDA kernels' bandwidth against a device-to-device copy.
"""
