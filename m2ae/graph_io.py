"""The I/O contract of every exported graph and engine (docs/design.md section 4).

Inputs: ``image`` float32 [N,3,H,W] in [0, 1] and, for ``*_maskin_*`` exports,
``mask`` float32 [N,1,H,W] (1 = blurred). Outputs: ``restored`` float32 [N,3,H,W] and
``blur_mask`` float32 [N,1,H,W], the hard 0/1 mask the network used. H and W are
multiples of the ``m2ae.multiple`` recorded in the model's metadata (read through
``m2ae.model_info.ModelInfo``).
"""

INPUT_IMAGE = "image"
INPUT_MASK = "mask"
OUTPUT_RESTORED = "restored"
OUTPUT_MASK = "blur_mask"
