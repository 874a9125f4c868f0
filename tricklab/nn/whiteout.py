"""Whiteout (Li and Liu): Gaussian noise on every connection, its variance adapted to the weight.

References:
    Li, Y. and Liu, F. "Whiteout: Gaussian Adaptive Noise Regularization in Deep Neural
    Networks." arXiv:1612.01490, 2016 (revised through 2018; earlier title "Whiteout: Gaussian
    Adaptive Noise Injection Regularization in Deep Neural Networks").
"""

from __future__ import annotations

import numpy as np

from .._rng import RngLike, as_generator
from ._checks import check_batch_input, check_nonnegative
from .linear import affine_output_shape, affine_parameters
from .module import Module

MODES = ("additive", "multiplicative")


class Whiteout(Module):
    """A linear layer whose input x_j reaches unit i through its own noisy copy x~_ij (whiteout).

    The formula implemented (Li and Liu, the definition of whiteout noise): every connection
    j -> i of every example gets its own Gaussian draw e_ij with variance::

        var_ij = sigma^2 |w_ij|^(-gamma) + lam

        mode="additive":        x~_ij = x_j + e_ij,    e_ij ~ N(0, var_ij)
        mode="multiplicative":  x~_ij = x_j e_ij,      e_ij ~ N(1, var_ij)
        y_i = sum_j w_ij x~_ij + b_i                                    [train]
        y_i = sum_j w_ij x_j + b_i                                      [test: E[x~_ij] = x_j]

    Small weights get large noise, so their contribution is penalized more. In a linear model
    with squared loss, E[(t - y)^2] = (t - E y)^2 + Var y and Var y_i = sum_j w_ij^2 var_ij x'_j
    (x'_j = 1 additive, x_j^2 multiplicative), i.e. the penalty
    sum_j x'_j (sigma^2 |w_ij|^(2 - gamma) + lam w_ij^2): bridge (gamma in (0, 2)), lasso (gamma = 1,
    lam = 0), elastic net (gamma = 1, lam > 0), ridge (sigma = 0); the multiplicative form weights
    it by x_j^2, like the adaptive lasso. :meth:`output_variance` returns Var y.

    Implementation (vectorized, e of shape (batch, out, in), per example as in the paper):
    e_ij = s_ij z_bij (+ 1 multiplicative), s = sqrt(var), z ~ N(0, 1) from ``rng``.
    |w| is replaced by |w| + ``eps`` so that a zero weight gets large but finite noise. Then::

        additive:        y_b = W x_b + b + sum_j (W ⊙ s ⊙ z_b)_ij
        multiplicative:  y_b = W x_b + b + sum_j (W ⊙ s ⊙ z_b)_ij x_bj

    Backward holds z fixed. With ``grad_through_std=True`` (default) the dependence of s on w is
    differentiated too (the reparameterization gradient, ds/dw = -gamma sigma^2 (|w| + eps)^(-gamma-1)
    sgn(w) / (2 s)); its expectation is the gradient of the expected loss, the paper's penalized
    objective. With ``grad_through_std=False`` the drawn noise e is treated as a constant input
    (what plain back-propagation through the perturbed network does); for a linear unit with squared
    loss its expectation is the gradient of clean loss + sum_j x'_j w_ij^2 var_ij with var_ij held
    fixed, i.e. the sigma^2 (bridge) part of the penalty made 2 / (2 - gamma) times stronger.
    """

    def __init__(self, in_features: int, out_features: int, sigma: float = 0.1, gamma: float = 1.0,
                 lam: float = 0.0, mode: str = "additive", grad_through_std: bool = True, eps: float = 1e-8,
                 bias: bool = True, init="default", rng: RngLike = None, dtype=None):
        super().__init__(dtype=dtype)
        self.sigma = check_nonnegative("Whiteout", "sigma", sigma)
        self.gamma = check_nonnegative("Whiteout", "gamma", gamma)
        self.lam = check_nonnegative("Whiteout", "lam", lam)
        self.eps = check_nonnegative("Whiteout", "eps", eps)
        if self.gamma > 0 and self.eps == 0:
            raise ValueError("Whiteout: eps must be > 0 when gamma > 0 (|w|^(-gamma) is infinite at w = 0)")
        if mode not in MODES:
            raise ValueError(f"Whiteout: mode must be one of {MODES}, got {mode!r}")
        self.mode, self.grad_through_std = mode, bool(grad_through_std)
        self.rng = as_generator(rng)
        affine_parameters(self, in_features, out_features, bias, init, self.rng)
        self.noise = None  # z of the last training pass, reused by backward
        self._cache = None

    def noise_std(self) -> np.ndarray:
        """s_ij = sqrt(sigma^2 (|w_ij| + eps)^(-gamma) + lam), shape (out, in)."""
        dt = self.dtype.type
        return np.sqrt(dt(self.sigma**2) * (np.abs(self.weight.data) + dt(self.eps)) ** dt(-self.gamma) + dt(self.lam))

    def output_variance(self, x) -> np.ndarray:
        """Var[y | x] in training, (batch, out): sum_j w_ij^2 var_ij (times x_j^2 if multiplicative)."""
        x = check_batch_input(self, x)
        ws2 = (self.weight.data * self.noise_std()) ** 2
        if self.mode == "additive":
            return np.broadcast_to(ws2.sum(axis=1), (x.shape[0], self.out_features)).copy()
        return (x * x) @ ws2.T

    def forward(self, x):
        x = check_batch_input(self, x)
        W = self.weight.data
        y = x @ W.T
        if self.training:
            s = self.noise_std()
            self.noise = self.rng.standard_normal((x.shape[0],) + W.shape, dtype=self.dtype)
            zws = self.noise * (W * s)
            y += zws.sum(axis=2) if self.mode == "additive" else np.matmul(zws, x[:, :, None])[:, :, 0]
            self._cache = (x, s, zws)
        else:
            self._cache = (x, None, None)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output):
        x, s, zws = self._saved("_cache")
        g = np.asarray(grad_output, dtype=self.dtype)
        W = self.weight.data
        grad_input = g @ W
        self.weight.grad += g.T @ x
        if s is not None:
            z = self.noise
            if self.mode == "additive":
                gz = np.einsum("bo,boi->oi", g, z)
            else:
                grad_input += np.matmul(g[:, None, :], zws)[:, 0, :]
                gz = np.einsum("bo,boi,bi->oi", g, z, x, optimize=True)
            # d(w s)/dw = s + w ds/dw; the second term only when differentiating through the std
            dws = s
            if self.grad_through_std and self.sigma > 0 and self.gamma > 0:
                dt = self.dtype.type
                a = np.abs(W) + dt(self.eps)
                ds = dt(-0.5 * self.gamma * self.sigma**2) * a ** dt(-self.gamma - 1) * np.sign(W) / s
                dws = s + W * ds
            self.weight.grad += gz * dws
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0)
        return grad_input

    output_shape = affine_output_shape

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, sigma={self.sigma}, "
                f"gamma={self.gamma}, lam={self.lam}, mode={self.mode!r}, bias={self.bias is not None}")
