"""Shared fixtures: a seeded generator and the MNIST files beside the checkout; hypothesis profiles."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI draws the same examples on every run (no example database, no random seed): a red build is
# then reproducible from the log. Elsewhere ("dev") hypothesis explores new draws and replays the
# failures it keeps in .hypothesis/. HYPOTHESIS_PROFILE picks one explicitly.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


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
