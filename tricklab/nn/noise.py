"""Gaussian noise injection on inputs or activations, additive or multiplicative, in training only.

References:
    Bishop, C. M. "Training with Noise is Equivalent to Tikhonov Regularization." Neural
    Computation 7(1), 1995 (additive noise on the inputs).
    Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I. and Salakhutdinov, R. "Dropout: A
    Simple Way to Prevent Neural Networks from Overfitting." JMLR 15, 2014, Section 10
    (multiplicative Gaussian noise).
"""

from __future__ import annotations

from .._rng import RngLike, as_generator
from ._checks import check_nonnegative
from .module import Module

MODES = ("additive", "multiplicative")


class GaussianNoise(Module):
    """Add or multiply fresh Gaussian noise elementwise in training; the identity at eval.

    With ε ~ N(0, 1) drawn for every element on every training forward pass::

        mode="additive":        train: y = x + std ε          dLoss/dx = dLoss/dy
        mode="multiplicative":  train: y = x (1 + std ε)      dLoss/dx = (1 + std ε) dLoss/dy
        both:                   eval:  y = x                  (E[y] = x in training)

    Multiplicative noise with std^2 = p / (1 - p) has the mean and variance of inverted dropout
    with drop probability p (Srivastava et al. 2014, Section 10, "Gaussian dropout"). The draw of
    the last training pass is kept in ``noise`` (ε) and reused by backward.
    """

    def __init__(self, std: float = 0.1, mode: str = "additive", rng: RngLike = None, dtype=None):
        super().__init__(dtype=dtype)
        std = check_nonnegative("GaussianNoise", "std", std)
        if mode not in MODES:
            raise ValueError(f"GaussianNoise: mode must be one of {MODES}, got {mode!r}")
        self.std, self.mode, self.rng = float(std), mode, as_generator(rng)
        self.noise = None
        self._scale = None

    def forward(self, x):
        x = self._cast_input(x)
        if not self.training:
            self._scale = self.dtype.type(1)
            return x
        self.noise = self.rng.standard_normal(x.shape, dtype=self.dtype)
        if self.mode == "additive":
            self._scale = self.dtype.type(1)
            return x + self.dtype.type(self.std) * self.noise
        self._scale = 1 + self.dtype.type(self.std) * self.noise
        return x * self._scale

    def backward(self, grad_output):
        return grad_output * self._saved("_scale")

    def extra_repr(self) -> str:
        return f"std={self.std}, mode={self.mode!r}"
