"""Hold out a validation split from the training data.

Hyperparameters and early stopping are tuned on a validation set carved from the training data;
the test set is touched once, at the end. Nothing here takes test data.
"""

from __future__ import annotations

import numpy as np

from .._rng import RngLike, as_generator


def _val_count(n: int, val_fraction: float | None, val_size: int | None) -> int:
    if val_fraction is not None and val_size is not None:
        raise ValueError(f"give val_fraction or val_size, not both (got {val_fraction}, {val_size})")
    if val_size is None:
        val_fraction = 0.1 if val_fraction is None else val_fraction
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        val_size = int(round(n * val_fraction))
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be in 1..{n - 1} for {n} examples, got {val_size}")
    return int(val_size)


def _stratified_counts(y: np.ndarray, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class validation counts proportional to class sizes (largest remainder), summing to val_size."""
    classes, counts = np.unique(y, return_counts=True)
    share = counts * val_size / len(y)
    take = np.floor(share).astype(np.int64)
    extra = np.argsort(-(share - take), kind="stable")[: val_size - take.sum()]
    take[extra] += 1
    return classes, take


def split_indices(n: int, val_fraction: float | None = None, val_size: int | None = None,
                  seed: RngLike = 0, stratify: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays ``(train_idx, val_idx)`` covering ``range(n)``.

    The validation indices are the first ``val_size`` of a seeded permutation (default
    ``val_fraction=0.1``). With ``stratify=y`` each class contributes in proportion to its size.
    """
    val_size = _val_count(n, val_fraction, val_size)
    rng = as_generator(seed)
    if stratify is None:
        val = rng.permutation(n)[:val_size]
    else:
        y = np.asarray(stratify)
        if len(y) != n:
            raise ValueError(f"stratify has length {len(y)}, expected {n}")
        classes, take = _stratified_counts(y, val_size)
        val = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k]
                              for c, k in zip(classes, take)])
    mask = np.zeros(n, dtype=bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def train_val_split(X: np.ndarray, y: np.ndarray, val_fraction: float | None = None,
                    val_size: int | None = None, seed: RngLike = 0, stratify: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split training data ``(X, y)`` into ``(X_train, y_train, X_val, y_val)``.

    Args:
        X: ndarray of shape (n_ex, ...); y: ndarray of shape (n_ex,).
        val_fraction: share held out (default 0.1); or val_size: number held out.
        seed: int seed, Generator or None, for the permutation.
        stratify: keep the class proportions of ``y`` in both parts.

    Both parts keep the original order of the examples.
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X of shape {X.shape} and y of shape {y.shape} differ in length")
    train, val = split_indices(len(X), val_fraction, val_size, seed, y if stratify else None)
    return X[train], y[train], X[val], y[val]
