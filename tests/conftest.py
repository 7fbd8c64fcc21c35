"""Test-wide set-up: torch threads for the shared CI cores, a seeded generator, and one
small model exported once per session for every test that reads ONNX exports."""

import os

# Two CPU cores on CI: keep torch from oversubscribing them when tests run (set before
# anything imports torch, which reads it once).
os.environ.setdefault("OMP_NUM_THREADS", "2")

import contextlib
import hashlib
import io
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from factories import (
    EXPORTED_PRECISIONS,
    EXPORTED_VARIANTS,
    SMALL_CONFIG,
    ExportedModels,
    one_torch_thread,
    perturbed_model,
)

from m2ae.cli import main
from m2ae.model.checkpoint import save_checkpoint


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _digests(paths: list[Path]) -> dict[Path, str]:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportedModels]:
    """Export once for the session; afterwards, check that no test changed the files."""
    root = tmp_path_factory.mktemp("exported")
    checkpoint, out = root / "net.pt", root / "onnx"
    save_checkpoint(checkpoint, {"config": SMALL_CONFIG.to_dict(), "step": 7,
                                 "model": perturbed_model(SMALL_CONFIG, seed=0).state_dict()})
    command = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--variants", ",".join(EXPORTED_VARIANTS),
               "--precision", ",".join(EXPORTED_PRECISIONS), "--calib-images", "2", "--no-progress"]
    # A session fixture cannot use capsys: export's report to stderr is redirected instead.
    stderr = io.StringIO()
    with one_torch_thread(), contextlib.redirect_stderr(stderr):
        for extra in ([], ["--mask-input"]):
            assert main([*command, *extra]) == 0, stderr.getvalue()
    models = ExportedModels(checkpoint, out, stderr.getvalue())
    # Root may write anywhere, so file modes cannot keep the files read-only: check instead.
    before = _digests([models.checkpoint, *models.out.iterdir()])
    yield models
    after = _digests([models.checkpoint, *models.out.iterdir()])
    assert after == before, "a test changed or added files of the shared exported_models"
