"""Minibatches in a fresh random order every epoch.

Stochastic gradient descent visits the examples in a random order: a fixed order (worse, one
sorted by class) makes successive updates correlated and the weights oscillate. Each ``iter()``
draws a new permutation from the loader's generator, so a seed fixes the whole sequence of
epochs, and ``state_dict()`` saves the generator so a run can resume exactly.

References:
    LeCun, Bottou, Orr & Müller (1998), "Efficient BackProp", section 4.2 (shuffling the examples).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

from .._rng import RngLike, as_generator

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _json_friendly(obj):
    if isinstance(obj, dict):
        return {k: _json_friendly(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class DataLoader:
    """Iterate over ``(xb, yb)`` minibatches of ``(X, y)``.

    Args:
        X: ndarray of shape (n_ex, ...); y: ndarray of shape (n_ex,).
        batch_size: examples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: draw a new permutation at every ``iter()``; else keep the stored order.
        drop_last: skip the final incomplete batch.
        rng: Generator, int seed or None; drives the permutations and ``transform``.
        transform: ``transform(xb, rng) -> xb`` applied to every minibatch (augmentation),
            with this loader's generator.

    ``len(loader)`` is the number of batches per epoch: ``ceil(n_ex / batch_size)``, or
    ``floor`` with ``drop_last``.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, rng: RngLike = None, transform: Transform | None = None):
        X, y = np.asarray(X), np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"X of shape {X.shape} and y of shape {y.shape} differ in length")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if drop_last and batch_size > len(X):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(X)} examples with "
                             "drop_last=True: an epoch would have no batch")
        self.X, self.y = X, y
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.rng = as_generator(rng)
        self.transform = transform

    def __len__(self) -> int:
        n = len(self.X)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.rng.permutation(len(self.X)) if self.shuffle else np.arange(len(self.X))
        return self._batches(order)

    def _batches(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb, yb = self.X[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb, self.rng)
            yield xb, yb

    def state_dict(self) -> dict:
        """The generator state (``rng.bit_generator.state``, arrays as lists: JSON-friendly).

        Taken between epochs, loading it into a loader over the same data makes the remaining
        epochs (order and augmentation) repeat exactly.
        """
        return {"bit_generator": _json_friendly(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        saved = state["bit_generator"]
        ours = type(self.rng.bit_generator).__name__
        if saved.get("bit_generator") != ours:
            raise ValueError(f"state is for bit generator {saved.get('bit_generator')!r}, "
                             f"this loader's generator uses {ours!r}")
        self.rng.bit_generator.state = saved
