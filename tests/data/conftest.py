"""Fixtures: an environment that hides every data root but the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def no_default_roots(tmp_path, monkeypatch) -> Path:
    """Unset TRICKLAB_DATA, hide shared/data beside the checkout and point the user cache at an
    empty folder; returns that cache root."""
    from tricklab.data import mnist

    monkeypatch.delenv("TRICKLAB_DATA", raising=False)
    monkeypatch.setattr(mnist, "checkout_data_root", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "tricklab"
