"""Helpers shared by test files: networks whose every weight matters, one torch thread."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch import nn

from m2ae.model.config import M2AEConfig
from m2ae.model.network import M2AENet


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
