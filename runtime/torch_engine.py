"""PyTorch engine: a checkpoint run directly, pruned (default) or dense, same interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from m2ae.model.checkpoint import LoadedCheckpoint, load_checkpoint
from m2ae.model.pruned import DenseGraph, PrunedM2AE, PruningConfig, checkpoint_info
from m2ae.runtime.base import Engine, EngineOutputs


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, checkpoint: str | Path | LoadedCheckpoint, pruned: bool = True, mask_input: bool = False,
                 device: str = "cpu", pruning: PruningConfig | None = None) -> None:
        """``checkpoint``: a file, a shipped name (``tiny``) or one already loaded, which is used as is."""
        loaded = load_checkpoint(checkpoint)
        self.path = loaded.path
        self.device = torch.device(device)
        module = PrunedM2AE(loaded.model, pruning) if pruned else DenseGraph(loaded.model)
        self.module = module.to(self.device).eval()
        pruning = module.pruning if isinstance(module, PrunedM2AE) else None
        super().__init__(checkpoint_info(loaded, "dense" if pruning is None else "pruned", pruning, mask_input=mask_input),
                         self.path)

    @torch.inference_mode()
    def _run(self, image: np.ndarray, mask: np.ndarray | None) -> EngineOutputs:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        m = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(self.device)
        restored, blur_mask = self.module(x, m)
        return EngineOutputs(restored.float().cpu().numpy(), blur_mask.float().cpu().numpy())
