"""DataLoader: a fresh permutation each epoch, seeded, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tricklab.data import DataLoader, GaussianNoise


def epochs(loader, n):
    return [[(xb.copy(), yb.copy()) for xb, yb in loader] for _ in range(n)]


def flat(epoch):
    return np.concatenate([yb for _, yb in epoch])


def test_each_epoch_is_a_permutation_and_epochs_differ():
    X, y = np.arange(103.0)[:, None] * np.ones(3), np.arange(103)
    loader = DataLoader(X, y, batch_size=10, rng=0)
    assert len(loader) == 11
    first, second = epochs(loader, 2)
    assert [len(yb) for _, yb in first] == [10] * 10 + [3]
    for epoch in (first, second):
        np.testing.assert_array_equal(np.sort(flat(epoch)), np.arange(103))
        for xb, yb in epoch:
            np.testing.assert_array_equal(xb[:, 0], yb)
    assert not np.array_equal(flat(first), flat(second))


def test_same_seed_same_sequence():
    X = np.arange(50)
    a = [flat(e) for e in epochs(DataLoader(X, X, 8, rng=7), 3)]
    b = [flat(e) for e in epochs(DataLoader(X, X, 8, rng=np.random.default_rng(7)), 3)]
    np.testing.assert_array_equal(a, b)
    c = [flat(e) for e in epochs(DataLoader(X, X, 8, rng=8), 3)]
    assert not np.array_equal(a, c)


def test_drop_last_and_no_shuffle():
    X = np.arange(25)
    loader = DataLoader(X, X, 10, drop_last=True, rng=0)
    assert len(loader) == 2 and [len(b) for b, _ in loader] == [10, 10]
    ordered = DataLoader(X, X, 10, shuffle=False)
    np.testing.assert_array_equal(flat(epochs(ordered, 1)[0]), X)


def test_iter_draws_the_permutation_eagerly():
    X = np.arange(20)
    loader = DataLoader(X, X, 5, rng=0)
    before = loader.rng.bit_generator.state
    iter(loader)
    assert loader.rng.bit_generator.state != before


def test_state_dict_resumes_exactly_with_augmentation():
    X, y = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32), np.arange(40)
    make = lambda seed: DataLoader(X, y, 6, rng=seed, transform=GaussianNoise(0.1, image_shape=(4, 4)))
    run = make(1)
    epochs(run, 2)
    state = json.loads(json.dumps(run.state_dict()))
    expected = epochs(run, 3)
    resumed = make(999)
    resumed.load_state_dict(state)
    for e_exp, e_got in zip(expected, epochs(resumed, 3)):
        for (xe, ye), (xg, yg) in zip(e_exp, e_got):
            np.testing.assert_array_equal(ye, yg)
            np.testing.assert_array_equal(xe, xg)


def test_transform_gets_the_loader_rng_and_labels_untouched():
    seen = []

    def transform(xb, rng):
        seen.append(rng)
        return xb + 1
    loader = DataLoader(np.zeros((6, 2)), np.arange(6), 4, rng=0, transform=transform)
    for xb, yb in loader:
        assert (xb == 1).all() and yb.dtype == np.arange(1).dtype
    assert all(r is loader.rng for r in seen) and len(seen) == 2


def test_errors():
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros(4), np.zeros(4), 0)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros(4), np.zeros(4), 2.5)
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5,\)"):
        DataLoader(np.zeros((4, 3)), np.zeros(5), 2)
    loader = DataLoader(np.zeros(4), np.zeros(4), 2, rng=np.random.Generator(np.random.MT19937(0)))
    with pytest.raises(ValueError, match="MT19937"):
        loader.load_state_dict(DataLoader(np.zeros(4), np.zeros(4), 2, rng=0).state_dict())
