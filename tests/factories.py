"""Helpers shared by test files: networks whose every weight matters, the session's
exported models (what ``conftest.exported_models`` makes), one torch thread."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from m2ae.export.onnx_export import model_filename
from m2ae.model.checkpoint import load_checkpoint
from m2ae.model.config import M2AEConfig
from m2ae.model.network import M2AENet

#: every block kind in 18k weights, quick to export and run: the ``exported_models``
#: fixture's config (its threshold is off 0.5 so tests see the exported one is this one)
SMALL_CONFIG = M2AEConfig(
    preset="custom", width=4, num_scales=3, enc_blocks=(1, 1, 1), dec_blocks=(1, 1), motion_channels=4,
    mask_channels=4, threshold=0.45,
)
EXPORTED_VARIANTS = ("plugin", "portable", "dense")
EXPORTED_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportedModels:
    """``perturbed_model(SMALL_CONFIG, seed=0)`` saved as ``checkpoint`` and exported by
    ``m2ae export`` into ``out``: every variant and precision, with and without a mask input.
    The whole session shares them, so tests only read these files."""

    checkpoint: Path
    out: Path
    #: what the export runs printed to stderr
    stderr: str

    def path(self, variant: str, precision: str = "fp32", mask_input: bool = False) -> Path:
        return self.out / model_filename(variant, precision, mask_input)

    def model(self) -> M2AENet:
        """A fresh copy of the exported network, free to change."""
        return load_checkpoint(self.checkpoint).model


@torch.no_grad()
def perturbed_model(config: M2AEConfig, seed: int) -> M2AENet:
    """Every parameter +0.05*randn, random BN stats, and p_blur centred on the threshold
    over random images, so the predicted mask is partial (neither empty nor full)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # the default init draws from the global generator
        torch.manual_seed(seed)
        model = M2AENet(config)
    for param in model.parameters():
        param.add_(0.05 * torch.randn(param.shape, generator=gen))
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.copy_(0.1 * torch.randn(bn.running_mean.shape, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=gen))
    last = model.mask_head.logits_conv
    last.weight.mul_(10.0)
    logits = model.mask_head(torch.rand(1, 3, 32, 32, generator=gen))
    # Centre the logit difference on log(t / (1 - t)), where p_blur crosses the threshold.
    target = float(np.log(config.threshold / (1.0 - config.threshold)))
    last.bias[1] -= (logits[:, 1] - logits[:, 0]).median() - target
    return model.eval()


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread meanwhile: the CI cores are shared, and two OpenMP threads
    fighting other jobs run about 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
