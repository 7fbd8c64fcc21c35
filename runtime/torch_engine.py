"""PyTorch engine: a checkpoint run directly, pruned (default) or dense, same interface."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from m2ae.runtime.base import EngineOutputs
from m2ae.runtime.checks import check_finite_outputs, check_inputs

if TYPE_CHECKING:
    from m2ae.model.pruned import PruningConfig


class TorchEngine:
    backend = "torch"

    def __init__(self, checkpoint: str | Path, pruned: bool = True, mask_input: bool = False,
                 device: str = "cpu", pruning: PruningConfig | None = None) -> None:
        from m2ae.model.checkpoint import load_checkpoint
        from m2ae.model.pruned import DenseGraph, PrunedM2AE

        loaded = load_checkpoint(checkpoint)
        self.path = loaded.path
        self.config = loaded.config
        self.device = torch.device(device)
        module = PrunedM2AE(loaded.model, pruning) if pruned else DenseGraph(loaded.model)
        self.module = module.to(self.device).eval()
        self._mask_input = mask_input
        self.metadata = {
            "m2ae.preset": loaded.config.preset,
            "m2ae.multiple": str(loaded.config.multiple),
            "m2ae.min_size": str(loaded.config.min_size),
            "m2ae.variant": "pruned" if pruned else "dense",
            "m2ae.precision": "fp32",
            "m2ae.checkpoint_sha256": loaded.sha256,
        }

    @property
    def takes_mask(self) -> bool:
        return self._mask_input

    @property
    def multiple(self) -> int:
        return self.config.multiple

    @torch.inference_mode()
    def infer(self, image: np.ndarray, mask: np.ndarray | None = None) -> EngineOutputs:
        check_inputs(image, mask, self.takes_mask, self.multiple, self.config.min_size)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        m = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(self.device)
        restored, blur_mask = self.module(x, m)
        return check_finite_outputs(EngineOutputs(restored.float().cpu().numpy(), blur_mask.float().cpu().numpy()),
                                    self.path)
