"""Checkpoints: written atomically, read with ``weights_only=True``, resolved by name.

A checkpoint is a plain dict of tensors and builtins: ``format``, ``config`` (an
``M2AEConfig`` as a dict), ``step``, ``model``, and for resumable training checkpoints
``optimizer``, ``rng`` and ``train``. ``--checkpoint tiny`` names the shipped weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from m2ae.atomic import atomic_path
from m2ae.errors import UserError
from m2ae.hashing import file_sha256
from m2ae.model.config import M2AEConfig
from m2ae.model.network import M2AENet

FORMAT = "m2ae-checkpoint-v1"
SHIPPED = ("tiny",)


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: M2AENet
    config: M2AEConfig
    step: int
    path: Path
    sha256: str
    state: dict[str, Any]


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("m2ae.model") / "weights" / f"{name}.pt"))


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A path, or the name of a shipped checkpoint (``tiny``)."""
    text = str(name_or_path)
    if text in SHIPPED:
        path = shipped_path(text)
        if not path.is_file():
            raise UserError(f"the shipped {text!r} checkpoint is missing from this install ({path})")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        hint = f" (shipped checkpoints: {', '.join(SHIPPED)})"
        raise UserError(f"{path}: no such checkpoint file{hint}")
    return path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    state = {"format": FORMAT, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the raw dict, turning every way a file can be wrong into one clear line."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (the unpickler raises KeyError, IndexError, ... on garbage)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable m2ae checkpoint ({first[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not an m2ae checkpoint (expected format {FORMAT!r})")
    return state


def load_checkpoint(name_or_path: str | Path, expect_preset: str | None = None) -> LoadedCheckpoint:
    """Build the network a checkpoint describes and load its weights (eval mode)."""
    path = resolve_checkpoint(name_or_path)
    state = read_checkpoint(path)
    try:
        config = M2AEConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: checkpoint has an invalid config ({exc})") from None
    if expect_preset is not None and config.preset != expect_preset:
        raise UserError(f"{path}: checkpoint is of preset {config.preset!r}, not {expect_preset!r}")
    model = M2AENet(config)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()[0][:160]
        raise UserError(f"{path}: weights do not match the {config.preset!r} network ({detail})") from None
    step = state.get("step", 0)
    if not isinstance(step, int) or step < 0:
        raise UserError(f"{path}: checkpoint has an invalid step {step!r}")
    model.eval()
    return LoadedCheckpoint(model, config, step, path, file_sha256(path), state)
