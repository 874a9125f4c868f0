"""Standardizer: statistics of the training set only."""

from __future__ import annotations

import numpy as np
import pytest

from tricklab.data import Standardizer


@pytest.fixture
def train_test():
    rng = np.random.default_rng(0)
    train = rng.normal(loc=[5.0, -2.0, 0.0], scale=[3.0, 0.5, 10.0], size=(500, 3))
    test = rng.normal(loc=1.0, scale=1.0, size=(200, 3))
    return train, test


def test_fits_train_statistics_only(train_test):
    train, test = train_test
    s = Standardizer().fit(train)
    np.testing.assert_allclose(s.mean, train.mean(0))
    np.testing.assert_allclose(s.std, train.std(0))
    assert not np.allclose(s.mean, test.mean(0), atol=0.1)
    Z = s.transform(train)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(Z.std(0), 1, atol=1e-5)
    np.testing.assert_allclose(s.transform(test), (test - train.mean(0)) / train.std(0), rtol=1e-5)


def test_global_mode_and_inverse(train_test):
    train, test = train_test
    s = Standardizer(per_feature=False)
    Z = s.fit_transform(train)
    assert s.mean.shape == () and np.isclose(s.mean, train.mean()) and np.isclose(s.std, train.std())
    assert abs(Z.mean()) < 1e-5 and abs(Z.std() - 1) < 1e-5
    np.testing.assert_allclose(s.inverse_transform(s.transform(test)), test, rtol=1e-5, atol=1e-5)


def test_constant_features_are_only_centred():
    X = np.zeros((10, 2, 2), dtype=np.uint8)
    X[:, 0, 0] = np.arange(10)
    s = Standardizer().fit(X)
    test = np.full((1, 2, 2), 7, dtype=np.uint8)
    out = s.transform(test)
    assert np.isfinite(out).all() and out[0, 1, 1] == 7.0


def test_constant_test_is_relative_to_the_magnitude():
    """Constant 1e100 and constant 0 standardize to exact zeros; values 1e-8 apart around 0 are a
    real feature (std 8e-9) and get unit variance; a feature that varies only by rounding (one
    ulp of 1e100) counts as constant, with scikit-learn's bound."""
    n = 30
    tiny = np.tile([-1e-8, 0.0, 1e-8], n // 3)
    one_ulp = np.tile([1e100, np.nextafter(1e100, np.inf)], n // 2)
    X = np.stack([np.full(n, 1e100), np.zeros(n), tiny, one_ulp, np.full(n, -3e-200)], axis=1)
    s = Standardizer(dtype=np.float64).fit(X)
    Z = s.transform(X)
    np.testing.assert_array_equal(Z[:, [0, 1, 4]], 0.0)
    np.testing.assert_array_equal(s.std[[0, 1, 3, 4]], 1.0)
    rounding = n * np.finfo(np.float64).eps * np.abs(tiny).max() / tiny.std()  # a sum of n values, over sigma
    np.testing.assert_allclose(Z[:, 2], (tiny - tiny.mean()) / tiny.std(), rtol=0, atol=rounding)
    assert Z[:, 2].std() == pytest.approx(1.0, rel=1e-12)
    assert s.mean[0] == 1e100 and s.mean[4] == -3e-200
    np.testing.assert_array_equal(Standardizer(per_feature=False).fit_transform(np.full((10, 4), 1e100)), 0.0)


def test_state_dict_round_trip(train_test):
    train, test = train_test
    a = Standardizer().fit(train)
    b = Standardizer()
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.transform(test), b.transform(test))


def test_errors():
    with pytest.raises(RuntimeError, match="fit"):
        Standardizer().transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 4\)"):
        Standardizer().fit(np.ones((5, 3))).transform(np.zeros((2, 4)))
