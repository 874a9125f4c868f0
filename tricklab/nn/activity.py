"""L1 regularization of activations: a penalty lam * sum |y| that pushes activations to be sparse.

References:
    Goodfellow, I., Bengio, Y. and Courville, A. "Deep Learning." MIT Press 2016, Section 7.10
    ("Sparse Representations": a norm penalty on the activations, Omega(h) = ||h||_1).
"""

from __future__ import annotations


import numpy as np

from ._checks import check_nonnegative
from .module import Module


class ActivityL1(Module):
    """The identity in the forward pass that adds lam * mean_b sum_k |y_bk| to the loss.

    Place it after the layer whose activations y (batch, ...) should be sparse. Each forward pass
    records the penalty (a float, for the history; the loss module does not see it)::

        penalty = lam / B * sum_b sum_k |y_bk|        (B = batch size: the mean over examples of
                                                      each example's L1 norm, matching a loss that
                                                      is averaged over the batch)
        dLoss/dx = dLoss/dy + lam / B * sgn(y)        (sgn(0) = 0, as torch.abs's gradient)

    A 1-D input is one example (B = 1). The penalty is recorded in training and in eval mode;
    :func:`activity_penalty` sums it over a model so a trainer adds it to the reported loss.
    """

    def __init__(self, lam: float = 1e-4, dtype=None):
        super().__init__(dtype=dtype)
        self.lam = check_nonnegative("ActivityL1", "lam", lam)
        self.penalty = 0.0
        self._sign_scaled = None

    def forward(self, x):
        x = self._cast_input(x)
        scale = self.lam / (x.shape[0] if x.ndim >= 2 else 1)
        self.penalty = float(scale * np.abs(x).sum())
        self._sign_scaled = self.dtype.type(scale) * np.sign(x)
        return x

    def backward(self, grad_output):
        return grad_output + self._saved("_sign_scaled")

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


def activity_penalty(model: Module) -> float:
    """The sum of the ``penalty`` recorded by every module of ``model`` at its last forward pass."""
    return float(sum(m.penalty for m in model.modules() if isinstance(getattr(m, "penalty", None), (int, float))))
