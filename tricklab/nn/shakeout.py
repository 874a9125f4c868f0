"""Shakeout (Kang, Li and Tao 2016): per input unit, either shake a weight to -c sgn(w) or enlarge it.

References:
    Kang, G., Li, J. and Tao, D. "Shakeout: A New Regularized Deep Neural Network Training
    Scheme." AAAI 2016 (extended in IEEE TPAMI 40(5), 2018).
"""

from __future__ import annotations

import numpy as np

from .._rng import RngLike, as_generator
from ._checks import check_batch_input, check_nonnegative, check_probability
from .dropout import bernoulli_mask
from .linear import affine_output_shape, affine_parameters
from .module import Module


class Shakeout(Module):
    """A linear layer trained with Shakeout weights w~ (Kang et al. 2016, Section 3).

    For every example and every input unit j a random switch r_j ~ Bernoulli(1 - tau) is drawn and
    applied to all weights leaving unit j (s_ij = sgn(w_ij))::

        r_j = 0:  w~_ij = -c s_ij
        r_j = 1:  w~_ij = (w_ij + c tau s_ij) / (1 - tau)

    so E[w~_ij] = tau (-c s_ij) + (w_ij + c tau s_ij) = w_ij, and c = 0 is inverted dropout of the
    input units (w~ = r w / (1 - tau)). The paper shows that the expected loss adds a combination
    of L0, L1 and L2 penalties on the weights (c sets the L1 part).

    Equations [train], x (batch, in), r (batch, in), W (out, in)::

        W1 = (W + c tau sgn(W)) / (1 - tau),   W2 = -c sgn(W)
        y  = (x ⊙ r) W1^T + (x ⊙ (1 - r)) W2^T + b

    Equations [test]::

        y = x W^T + b          (the expectation of the training output)

    Backward, g = dLoss/dy, the same r as the forward pass; sgn is piecewise constant, so its
    derivative is taken as 0 (as torch.sign's autograd does)::

        dLoss/dx = (g W1) ⊙ r + (g W2) ⊙ (1 - r)
        dLoss/dW += g^T (x ⊙ r) / (1 - tau),   dLoss/db += sum_b g

    The bias is not shaken. The switches of the last training pass are kept in ``mask``.
    """

    def __init__(self, in_features: int, out_features: int, tau: float = 0.5, c: float = 0.1, bias: bool = True,
                 init="default", rng: RngLike = None, dtype=None):
        super().__init__(dtype=dtype)
        self.tau = check_probability("Shakeout", "tau", tau)
        self.c = check_nonnegative("Shakeout", "c", c)
        self.rng = as_generator(rng)
        affine_parameters(self, in_features, out_features, bias, init, self.rng)
        self.mask = None
        self._cache = None

    def shaken_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(W1, W2): the weights used where r_j = 1 and where r_j = 0."""
        W, dt = self.weight.data, self.dtype.type
        sgn = np.sign(W)
        return (W + dt(self.c * self.tau) * sgn) / dt(1 - self.tau), dt(-self.c) * sgn

    def forward(self, x):
        x = check_batch_input(self, x)
        if self.training:
            self.mask = bernoulli_mask(self.rng, x.shape, 1.0 - self.tau, self.dtype)
            W1, W2 = self.shaken_weights()
            y = (x * self.mask) @ W1.T + (x * (1 - self.mask)) @ W2.T
            self._cache = (x, (W1, W2))
        else:
            y = x @ self.weight.data.T
            self._cache = (x, None)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output):
        x, shaken = self._saved("_cache")
        g = np.asarray(grad_output, dtype=self.dtype)
        if shaken is None:
            grad_input = g @ self.weight.data
            self.weight.grad += g.T @ x
        else:
            (W1, W2), r = shaken, self.mask
            grad_input = (g @ W1) * r + (g @ W2) * (1 - r)
            self.weight.grad += (g.T @ (x * r)) / self.dtype.type(1 - self.tau)
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0)
        return grad_input

    output_shape = affine_output_shape

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}, c={self.c}, "
                f"bias={self.bias is not None}")
