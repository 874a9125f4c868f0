"""Shared fixtures: a seeded generator and the MNIST files beside the checkout."""

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def find_shared_data() -> Path | None:
    """``$TRICKLAB_DATA`` if set, else the first ``shared/data`` above this folder."""
    if os.environ.get("TRICKLAB_DATA"):
        return Path(os.environ["TRICKLAB_DATA"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = find_shared_data()
    if root is None or not (root / "mnist").is_dir():
        message = "shared MNIST files not found: set TRICKLAB_DATA or put shared/data beside the checkout"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run every test: a missing data set is a failure there
        pytest.skip(message)
    return root
