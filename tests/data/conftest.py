"""Fixtures: the shared MNIST files and an environment that hides every other data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
        pytest.skip("shared MNIST files not found: set TRICKLAB_DATA or put shared/data beside the checkout")
    return root


@pytest.fixture
def no_default_roots(tmp_path, monkeypatch) -> Path:
    """Unset TRICKLAB_DATA and point the user cache at an empty folder; returns that cache root."""
    monkeypatch.delenv("TRICKLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "tricklab"
