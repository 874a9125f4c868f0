"""Standardize inputs to zero mean and unit variance, with statistics of the training set.

Equations::

    fit:        mu = mean_n(X_train[n]),   sigma = std_n(X_train[n])
    transform:  X' = (X - mu) / sigma
    inverse:    X  = X' * sigma + mu

Per feature (``mu``, ``sigma`` of shape ``X.shape[1:]``) or global (scalars). Centred inputs of
similar variance keep the Hessian better conditioned and gradient steps balanced across weights.

A constant feature (e.g. MNIST's always-blank border pixels) is only centred (``sigma`` is taken
as 1), so unseen test values cannot blow up. "Constant" is relative to the feature's magnitude,
with scikit-learn's bound on the rounding error of a two-pass variance over ``n`` values
(``_is_constant_feature``; Chan, Golub & LeVeque 1983)::

    constant  <=>  sigma^2 <= n eps sigma^2 + (n eps mu)^2  <=>  sigma sqrt(1 - n eps) <= n eps |mu|

with ``eps`` the float64 machine epsilon: every value 1e100 is constant, values 1e-8 apart around
0 are not. The statistics are computed around the first example, ``mu = x_1 + mean(X - x_1)``
(the "shifted data" algorithm), so a constant feature gets ``mu`` exactly and standardizes to
exact zeros. scikit-learn's StandardScaler flags constants with the same bound and also sets
their scale to 1, but takes the mean as ``sum / n``, which need not reproduce a constant (ten
copies of 1e100 average to one ulp, 1.9e84, off): its constant features then come out as
rounding noise of the constant's magnitude instead of zeros.

References:
    LeCun, Bottou, Orr & Müller (1998), "Efficient BackProp", section 4.3 (normalizing the inputs);
    Chan, Golub & LeVeque (1983), "Algorithms for computing the sample variance: analysis and
    recommendations", The American Statistician 37(3).
"""

from __future__ import annotations

import numpy as np


def _is_constant(std: np.ndarray, mean: np.ndarray, n: int, eps: float) -> np.ndarray:
    """``sigma sqrt(1 - n eps) <= n eps |mu|``: scikit-learn's bound solved for sigma (no mu^2 to overflow)."""
    return std * np.sqrt(max(1.0 - n * eps, 0.0)) <= n * eps * np.abs(mean)


class Standardizer:
    """Zero mean, unit variance per feature (default) or globally; fit on training data only.

    Args:
        per_feature: statistics per feature (over axis 0) or one mean and std for all values.
        eps: relative rounding error of the constant test above; a constant's ``sigma`` is 1.
        dtype: output dtype of ``transform`` and ``inverse_transform`` (float32 by default).
    """

    def __init__(self, per_feature: bool = True, eps: float = float(np.finfo(np.float64).eps),
                 dtype=np.float32):
        self.per_feature, self.eps, self.dtype = per_feature, eps, np.dtype(dtype)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, X_train: np.ndarray) -> "Standardizer":
        X = np.asarray(X_train)
        if X.ndim < 1 or len(X) < 1:
            raise ValueError(f"Standardizer.fit needs a non-empty array, got shape {X.shape}")
        axis = 0 if self.per_feature else None
        first = np.asarray(X[0] if self.per_feature else X.flat[0], dtype=np.float64)
        d = np.subtract(X, first, dtype=np.float64)
        d_mean = d.mean(axis=axis)
        d -= d_mean
        std = np.sqrt(np.square(d, out=d).mean(axis=axis))
        self.mean = np.asarray(first + d_mean)
        n = len(X) if self.per_feature else X.size
        self.std = np.where(_is_constant(std, self.mean, n, self.eps), 1.0, std)
        return self

    def _check(self, X: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise RuntimeError("Standardizer is not fitted: call fit(X_train) first")
        X = np.asarray(X)
        if self.per_feature and X.shape[1:] != self.mean.shape:
            raise ValueError(f"Standardizer fitted on features of shape {self.mean.shape} got "
                             f"input of shape {X.shape}; expected (n_ex, *{self.mean.shape})")
        return X

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = self._check(X)
        return ((X - self.mean) / self.std).astype(self.dtype, copy=False)

    def fit_transform(self, X_train: np.ndarray) -> np.ndarray:
        return self.fit(X_train).transform(X_train)

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        Z = self._check(Z)
        return (Z * self.std + self.mean).astype(self.dtype, copy=False)

    def state_dict(self) -> dict:
        if self.mean is None:
            raise RuntimeError("Standardizer is not fitted: nothing to save")
        return {"mean": self.mean.copy(), "std": self.std.copy(), "per_feature": self.per_feature,
                "eps": self.eps}

    def load_state_dict(self, state: dict) -> None:
        mean, std = np.asarray(state["mean"], np.float64), np.asarray(state["std"], np.float64)
        if mean.shape != std.shape:
            raise ValueError(f"state mean of shape {mean.shape} and std of shape {std.shape} differ")
        self.mean, self.std = mean, std
        self.per_feature = bool(state.get("per_feature", mean.ndim > 0))
        self.eps = state.get("eps", self.eps)
