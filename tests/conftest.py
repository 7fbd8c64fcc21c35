import os

import numpy as np
import pytest

# Two CPU cores on CI: keep torch from oversubscribing them when tests run.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
