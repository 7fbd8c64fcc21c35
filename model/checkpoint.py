"""Checkpoints: written atomically, read with ``weights_only=True``, resolved by name.

A checkpoint is a plain dict of tensors and builtins: ``format``, ``config`` (an
``M2AEConfig`` as a dict), ``step``, ``model``, and for resumable training checkpoints
``optimizer``, ``rng`` and ``train``. ``--checkpoint tiny`` names the shipped weights.
"""

from __future__ import annotations

import re
import warnings
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


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, as one complete clause.

    PyTorch's own texts run to paragraphs of advice about ``weights_only=False``, which
    m2ae never does: untrusted checkpoints must not run code.
    """
    text = str(exc)
    found = _UNSUPPORTED_GLOBAL.search(text)
    if found:
        return (f"it holds a pickled Python object ({found.group(1)}), and m2ae reads only tensors and plain "
                "values (torch.load with weights_only=True); save the weights as a dict of tensors")
    if "Weights only load failed" in text or isinstance(exc, (KeyError, IndexError)):
        return "it is not a file written by torch.save"
    if isinstance(exc, EOFError) or "central directory" in text:
        return "it is empty or cut short (a copy or a save that did not finish); copy it again"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _check_finite_weights(path: Path, weights: Any) -> None:
    """Refuse NaN/Inf weights: they make every output NaN, and a run that saved them diverged."""
    if not isinstance(weights, dict):
        return
    for name, tensor in weights.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            bad = tensor.numel() - int(torch.isfinite(tensor).sum())
            if bad:
                raise UserError(f"{path}: weight {name!r} holds {bad} NaN/Inf value(s): the run that saved it "
                                "diverged or the file is damaged; use an earlier checkpoint, or retrain with a "
                                "lower --lr")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the raw dict, turning every way a file can be wrong into one clear line."""
    path = Path(path)
    try:
        # The unpickler warns about unusual pickle protocols just before failing on them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (the unpickler raises KeyError, IndexError, ... on garbage)
        raise UserError(f"{path}: not a readable m2ae checkpoint: {_load_failure(exc)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not an m2ae checkpoint (expected format {FORMAT!r})")
    _check_finite_weights(path, state.get("model"))
    return state


def _weights_mismatch(expected: dict[str, torch.Tensor], weights: Any) -> str | None:
    """How ``weights`` differ from the network's state dict, or None when they fit."""
    if not isinstance(weights, dict):
        return f"its 'model' entry is a {type(weights).__name__}, not a dict of tensors"
    missing = [name for name in expected if name not in weights]
    unknown = [name for name in weights if name not in expected]
    reshaped = [name for name in expected if name in weights and (
        not isinstance(weights[name], torch.Tensor) or weights[name].shape != expected[name].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first {missing[0]!r})")
    if unknown:
        parts.append(f"{len(unknown)} unknown (first {unknown[0]!r})")
    if reshaped:
        name, value = reshaped[0], weights[reshaped[0]]
        found = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        parts.append(f"{len(reshaped)} of another shape (first {name!r}: {found} in the file, "
                     f"{list(expected[name].shape)} in the network)")
    return "; ".join(parts) or None


def _check_preset(path: Path, config: M2AEConfig, expect_preset: str | None) -> None:
    if expect_preset is not None and config.preset != expect_preset:
        raise UserError(f"{path}: checkpoint is of preset {config.preset!r}, not {expect_preset!r}")


def load_checkpoint(checkpoint: str | Path | LoadedCheckpoint, expect_preset: str | None = None) -> LoadedCheckpoint:
    """Build the network a checkpoint describes and load its weights (eval mode).

    An already loaded checkpoint is returned as it is (after the preset check), so an
    orchestrator loads once and hands the result to every stage.
    """
    if isinstance(checkpoint, LoadedCheckpoint):
        _check_preset(checkpoint.path, checkpoint.config, expect_preset)
        return checkpoint
    path = resolve_checkpoint(checkpoint)
    state = read_checkpoint(path)
    data = state.get("config")
    if not isinstance(data, dict):
        raise UserError(f"{path}: checkpoint has no model config (its 'config' entry is missing or not a dict)")
    try:
        config = M2AEConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: checkpoint has an invalid model config: {exc}") from None
    _check_preset(path, config, expect_preset)
    model = M2AENet(config)
    mismatch = _weights_mismatch(model.state_dict(), state.get("model"))
    if mismatch is not None:
        raise UserError(f"{path}: weights do not match the {config.preset!r} network its config describes: "
                        f"{mismatch}")
    model.load_state_dict(state["model"])
    step = state.get("step", 0)
    if not isinstance(step, int) or step < 0:
        raise UserError(f"{path}: checkpoint has an invalid step {step!r}")
    model.eval()
    return LoadedCheckpoint(model, config, step, path, file_sha256(path), state)
