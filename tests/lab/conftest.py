"""Fixtures for the lab: tiny MNIST-1D configurations, the shared MNIST files, one BLAS thread."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _one_blas_thread(monkeypatch):
    """Trials in this process use one BLAS thread: the test machines have two shared cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


@pytest.fixture
def tiny_config(tmp_path):
    """A TOML file for a small, fast MNIST-1D MLP; returns its path."""
    path = tmp_path / "tiny.toml"
    path.write_text('[run]\nname = "tiny"\n\n[data]\nname = "mnist1d"\n\n[model]\nhidden = [32]\n\n'
                    '[optimizer]\nlr = 0.01\n\n[train]\nepochs = 3\nbatch_size = 128\n')
    return path


@pytest.fixture(scope="session")
def mnist_root(shared_data):
    return str(shared_data)


@pytest.fixture
def subprocess_env():
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env
