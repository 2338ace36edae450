"""Shared test setup: one thread (two threads on a shared 2-core machine can be 10x slower),
fixed seeds, and a ``shared_data`` fixture that skips with a reason when the real data is absent."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def shared_data():
    """The real data root (``$TENFOLD_DATA`` or ../shared/data); skips when it is absent."""
    from tenfold.core.data import data_root

    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set TENFOLD_DATA)")
    return root


@pytest.fixture
def on_meta_default():
    """Run ``fn()`` with torch's default device set to ``meta``: a tensor created without ``device=`` is then a meta
    tensor and the run fails, which is how tests catch code that would break on CUDA (CI has no GPU)."""
    def run(fn):
        torch.set_default_device("meta")
        try:
            return fn()
        finally:
            torch.set_default_device(None)
    return run
