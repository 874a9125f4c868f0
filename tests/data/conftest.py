"""Fixtures: an environment that hides every data root but the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def no_default_roots(tmp_path, monkeypatch) -> Path:
    """Unset TRICKLAB_DATA and point the user cache at an empty folder; returns that cache root."""
    monkeypatch.delenv("TRICKLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "tricklab"
