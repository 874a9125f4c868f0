"""DropConnect (Wan et al. 2013): drop connections (single weights) instead of whole units.

References:
    Wan, L., Zeiler, M., Zhang, S., LeCun, Y. and Fergus, R. "Regularization of Neural Networks
    using DropConnect." ICML 2013.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .._rng import RngLike, as_generator
from ._checks import check_batch_input, check_probability
from .activation import ReLU, Sigmoid, Tanh
from .dropout import bernoulli_mask
from .linear import affine_output_shape, affine_parameters
from .module import Module

MASKS = ("example", "batch")
INFERENCES = ("mean", "gaussian")
ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


def _resolve_activation(activation, dtype) -> Module | None:
    if activation is None:
        return None
    if isinstance(activation, Module):
        return activation.to(dtype)
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation](dtype=dtype)
    raise ValueError(f"DropConnect: activation must be None, a Module or one of {sorted(ACTIVATIONS)}, "
                     f"got {activation!r}")


class DropConnect(Module):
    """A linear layer whose weights are dropped: r = a((M ⊙ W) v + b), M_ij ~ Bernoulli(keep).

    ``p`` is the *drop* probability (PyTorch's spelling); the paper's p is the keep probability,
    here ``keep = 1 - p``. As in the paper, training does not rescale the kept weights and
    inference uses the expectation keep * W. The bias b (absent from the paper's equation) is a
    weight from no input unit and is never dropped. Shapes: v (batch, in), W (out, in),
    M (batch, out, in) or (out, in), r (batch, out).

    Equations [train]::

        mask="example":  M_b ~ Bernoulli(keep)^(out x in) drawn for every example b (the paper)
        mask="batch":    one M shared by the whole minibatch (one matrix product, cheaper)
        u_b = (M_b ⊙ W) v_b + b,      r_b = a(u_b)

    Equations [test] (the paper's Section 3, "Inference")::

        inference="mean":      r = a(keep W v + b)
        inference="gaussian":  u ~ N(mu, var)  with  mu = keep W v + b,
                               var = keep (1 - keep) (W ⊙ W)(v ⊙ v)          (moment matching)
                               r = 1/S sum_s a(u_s),  u_s = mu + sqrt(var) ε_s,  ε_s ~ N(0, I)

    The Gaussian rule matters only through a nonlinearity, so ``activation`` (a Module such as
    :class:`ReLU`, or "relu", "tanh", "sigmoid") is part of this layer and the forward pass
    returns r = a(u); with ``activation=None`` the layer returns u and Gaussian inference is the
    mean (averaging the identity over samples only adds noise). ``n_samples`` = S; the samples
    take S * batch * out memory and come from ``rng``, so Gaussian inference is itself random.

    Backward, with g_u = a'(u) ⊙ dLoss/dr and the mask of the forward pass::

        train:  dLoss/dv_b = (M_b ⊙ W)^T g_u_b,   dLoss/dW += sum_b M_b ⊙ (g_u_b v_b^T),   dLoss/db += sum_b g_u_b
        mean:   dLoss/dv = keep W^T g_u,          dLoss/dW += keep g_u^T v
        gaussian: through u_s = mu + sqrt(var) ε_s with the samples ε_s fixed (reparameterized).

    The mask of the last training pass is kept in ``weight_mask`` for backward (and inspection).
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True,
                 mask: str = "example", inference: str = "mean", n_samples: int = 128, activation=None,
                 init="default", rng: RngLike = None, dtype=None):
        super().__init__(dtype=dtype)
        self.p = check_probability("DropConnect", "p (drop probability)", p)
        if mask not in MASKS:
            raise ValueError(f"DropConnect: mask must be one of {MASKS}, got {mask!r}")
        if inference not in INFERENCES:
            raise ValueError(f"DropConnect: inference must be one of {INFERENCES}, got {inference!r}")
        if not (isinstance(n_samples, Integral) and not isinstance(n_samples, bool) and n_samples > 0):
            raise ValueError(f"DropConnect: n_samples must be a positive integer, got {n_samples!r}")
        self.mask_mode, self.inference, self.n_samples = mask, inference, int(n_samples)
        self.rng = as_generator(rng)
        affine_parameters(self, in_features, out_features, bias, init, self.rng)
        self.activation = _resolve_activation(activation, self.dtype)
        self.weight_mask = None  # M of the last training pass, reused by backward
        self._cache = None

    @property
    def keep(self) -> float:
        return 1.0 - self.p

    def forward(self, x):
        v = check_batch_input(self, x)
        W, keep = self.weight.data, self.dtype.type(self.keep)
        if self.training:
            shape = (v.shape[0],) + W.shape if self.mask_mode == "example" else W.shape
            self.weight_mask = bernoulli_mask(self.rng, shape, self.keep, self.dtype)
            if self.mask_mode == "example":
                u = np.matmul(self.weight_mask * W, v[:, :, None])[:, :, 0]
            else:
                u = v @ (self.weight_mask * W).T
            kind, extra = "train", None
        else:
            u = keep * (v @ W.T)
            kind, extra = "mean", None
            if self.inference == "gaussian" and self.activation is not None:
                var = keep * (1 - keep) * ((v * v) @ (W * W).T)
                std = np.sqrt(var)
                eps = self.rng.standard_normal((self.n_samples,) + u.shape, dtype=self.dtype)
                kind, extra = "gaussian", (std, eps)
        if self.bias is not None:
            u = u + self.bias.data
        self._cache = (kind, v, extra)
        if self.activation is None:
            return u
        if kind == "gaussian":
            std, eps = extra
            return self.activation(u + std * eps).mean(axis=0)
        return self.activation(u)

    def backward(self, grad_output):
        kind, v, extra = self._saved("_cache")
        g = np.asarray(grad_output, dtype=self.dtype)
        W, keep = self.weight.data, self.dtype.type(self.keep)
        if kind == "gaussian":
            std, eps = extra
            g_s = self.activation.backward(np.broadcast_to(g / self.dtype.type(self.n_samples), eps.shape))
            g_mu, g_std = g_s.sum(axis=0), (g_s * eps).sum(axis=0)
            # d std / d var = 1 / (2 std); where var = 0 (all inputs zero) the variance path is cut
            g_var = np.divide(g_std, 2 * std, out=np.zeros_like(g_std), where=std > 0)
            c = 2 * keep * (1 - keep)
            grad_input = keep * (g_mu @ W) + c * v * (g_var @ (W * W))
            self.weight.grad += keep * (g_mu.T @ v) + c * W * (g_var.T @ (v * v))
            if self.bias is not None:
                self.bias.grad += g_mu.sum(axis=0)
            return grad_input
        g_u = g if self.activation is None else self.activation.backward(g)
        if kind == "mean":
            grad_input = keep * (g_u @ W)
            self.weight.grad += keep * (g_u.T @ v)
        elif self.mask_mode == "example":
            grad_input = np.matmul(g_u[:, None, :], self.weight_mask * W)[:, 0, :]
            self.weight.grad += (self.weight_mask * (g_u[:, :, None] * v[:, None, :])).sum(axis=0)
        else:
            grad_input = g_u @ (self.weight_mask * W)
            self.weight.grad += self.weight_mask * (g_u.T @ v)
        if self.bias is not None:
            self.bias.grad += g_u.sum(axis=0)
        return grad_input

    output_shape = affine_output_shape

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, p={self.p}, "
                f"bias={self.bias is not None}, mask={self.mask_mode!r}, inference={self.inference!r}")
