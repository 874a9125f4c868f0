"""Validation split carved from the training data."""

from __future__ import annotations

import numpy as np
import pytest

from tricklab.data import split_indices, train_val_split


def test_disjoint_and_covering():
    train, val = split_indices(1000, val_fraction=0.1, seed=0)
    assert len(val) == 100 and len(train) == 900
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))


def test_reproducible_and_seed_dependent():
    a = split_indices(500, val_size=50, seed=1)[1]
    np.testing.assert_array_equal(a, split_indices(500, val_size=50, seed=1)[1])
    assert not np.array_equal(a, split_indices(500, val_size=50, seed=2)[1])


def test_train_val_split_arrays_follow_indices():
    X, y = np.arange(200).reshape(100, 2), np.arange(100) % 10
    X_tr, y_tr, X_val, y_val = train_val_split(X, y, val_size=20, seed=5)
    train, val = split_indices(100, val_size=20, seed=5)
    np.testing.assert_array_equal(X_val, X[val])
    np.testing.assert_array_equal(y_tr, y[train])
    assert X_tr.shape == (80, 2) and X_val.shape == (20, 2)


def test_stratified_keeps_class_proportions():
    y = np.repeat(np.arange(4), [400, 300, 200, 100])
    _, y_tr, _, y_val = train_val_split(np.zeros((1000, 3)), y, val_fraction=0.1, seed=0, stratify=True)
    assert np.bincount(y_val).tolist() == [40, 30, 20, 10]
    assert np.bincount(y_tr).tolist() == [360, 270, 180, 90]


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, val_fraction=1.5)
    with pytest.raises(ValueError, match="not both"):
        split_indices(10, val_fraction=0.1, val_size=2)
    with pytest.raises(ValueError, match="val_size"):
        split_indices(10, val_size=10)
    with pytest.raises(ValueError, match=r"\(5, 2\).*\(4,\)"):
        train_val_split(np.zeros((5, 2)), np.zeros(4))
