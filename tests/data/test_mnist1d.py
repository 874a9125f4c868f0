"""MNIST-1D generated offline; golden values were computed with the reference ``mnist1d`` package
(0.0.2.post1, ``make_dataset(get_dataset_args())``), which this generator matches bit for bit."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from tricklab.data import get_templates, load_mnist1d, make_mnist1d

REF_Y_FIRST = [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9, 4, 3, 4, 5, 1, 9, 0, 3]
REF_X0_FIRST = [-0.33200566736939013, -0.4719103656557236, -0.778697076293495,
                -1.0097408265367045, -0.8823525654053073, 0.10393481264623418]
REF_X_TEST_LAST = [0.4472328851428726, 0.6598756470890784, 0.8777343497528006, 1.1931518368352758]
REF_COUNTS = [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]
REF_T_FIRST = [-5.38753506670427, -5.111251217129692, -4.834967367555114]


@pytest.fixture(scope="module")
def data():
    return make_mnist1d()


def test_shapes_and_dtypes(data):
    assert data["x"].shape == (4000, 40) and data["x"].dtype == np.float32
    assert data["x_test"].shape == (1000, 40) and data["x_test"].dtype == np.float32
    assert data["y"].shape == (4000,) and data["y"].dtype == np.int64
    assert data["y_test"].shape == (1000,) and data["t"].shape == (40,)


def test_matches_reference_package(data):
    assert data["y"][:20].tolist() == REF_Y_FIRST
    np.testing.assert_allclose(data["x"][0, :6], REF_X0_FIRST, rtol=1e-6)
    np.testing.assert_allclose(data["x_test"][-1, -4:], REF_X_TEST_LAST, rtol=1e-6)
    np.testing.assert_allclose(data["t"][:3], REF_T_FIRST, rtol=1e-6)
    assert np.bincount(data["y"]).tolist() == REF_COUNTS


def test_classes_balanced_and_normalised(data):
    y = np.concatenate([data["y"], data["y_test"]])
    assert (np.bincount(y) == 500).all()
    assert np.bincount(data["y"]).min() > 350
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)
    assert abs(x.mean()) < 1e-6 and abs(x.std() - 1) < 1e-6


def test_templates_start_at_zero_and_are_distinct():
    t = get_templates()
    assert t["x"].shape == (10, 12) and np.all(t["x"][:, 0] == 0)
    assert len({row.tobytes() for row in t["x"]}) == 10


def test_deterministic_per_seed_and_leaves_global_state():
    state = np.random.get_state()[1].copy()
    a, b = make_mnist1d(num_samples=200, seed=3), make_mnist1d(num_samples=200, seed=3)
    c = make_mnist1d(num_samples=200, seed=4)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], c["x"])
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_needs_no_network_or_files(tmp_path, monkeypatch):
    def no_socket(*args, **kwargs):
        raise AssertionError("MNIST-1D must not use the network")
    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.chdir(tmp_path)
    X, y = load_mnist1d("test", num_samples=100, seed=1)
    assert X.shape == (20, 40) and y.shape == (20,)
    assert list(tmp_path.iterdir()) == []


def test_load_mnist1d_splits_are_copies(data):
    X, y = load_mnist1d("train")
    np.testing.assert_array_equal(X, data["x"])
    X[:] = 0
    np.testing.assert_array_equal(load_mnist1d("train")[0], data["x"])
    np.testing.assert_array_equal(load_mnist1d("test")[1], data["y_test"])
    with pytest.raises(ValueError, match="split"):
        load_mnist1d("val")
