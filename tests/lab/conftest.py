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


LAYERS = ('[[model.layers]]\ntype = "Linear"\nout_features = 16\n\n[[model.layers]]\ntype = "BatchNorm1d"\n\n'
          '[[model.layers]]\ntype = "ReLU"\n\n[[model.layers]]\ntype = "Dropout"\np = 0.1\n\n'
          '[[model.layers]]\ntype = "Linear"\n')


@pytest.fixture
def layers_config(tmp_path):
    """A small MNIST-1D MLP written as a layer list: 0 Linear, 1 BatchNorm1d, 2 ReLU, 3 Dropout, 4 Linear."""
    path = tmp_path / "layers.toml"
    path.write_text('[run]\nname = "layers"\n\n[data]\nname = "mnist1d"\n\n[optimizer]\nlr = 0.01\n\n'
                    '[train]\nepochs = 2\nbatch_size = 128\n\n' + LAYERS)
    return path


@pytest.fixture
def regression_config(tmp_path):
    """An .npz regression problem, y = x w + noise (x_train of shape (300, 4), float32), and a TOML
    file training the layer list above on it with loss.name = "mse"; returns the TOML's path."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=300)).astype(np.float32)
    np.savez(tmp_path / "regression.npz", x_train=x, y_train=y)
    path = tmp_path / "regression.toml"
    path.write_text(f'[run]\nname = "regression"\n\n[data]\nname = "npz"\npath = "{tmp_path / "regression.npz"}"\n\n'
                    '[loss]\nname = "mse"\n\n[optimizer]\nlr = 0.01\n\n[train]\nepochs = 3\nbatch_size = 32\n\n'
                    + LAYERS)
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
