"""Argument checks the layers share; each error is one line naming the layer and the argument."""

from __future__ import annotations

from numbers import Real

import numpy as np


def is_real(value) -> bool:
    """A real number (Python or NumPy), not a bool; NaN passes here and fails every range check."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_probability(owner: str, name: str, value) -> float:
    """``value`` as a float in [0, 1), else ValueError naming ``owner`` and ``name``."""
    if not (is_real(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}")
    return float(value)


def check_nonnegative(owner: str, name: str, value) -> float:
    """``value`` as a float >= 0, else ValueError naming ``owner`` and ``name``."""
    if not (is_real(value) and value >= 0):
        raise ValueError(f"{owner}: {name} must be a number >= 0, got {value!r}")
    return float(value)


def check_batch_input(owner, x) -> np.ndarray:
    """Cast ``x`` and require the shape (batch, in_features) that per-example noise needs."""
    x = owner._cast_input(x)
    if x.ndim != 2 or x.shape[1] != owner.in_features:
        raise ValueError(
            f"{type(owner).__name__}({owner.in_features}, {owner.out_features}) got input of shape {x.shape}; "
            f"expected (batch, {owner.in_features})"
        )
    return x
