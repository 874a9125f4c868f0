"""Max-norm constraint (Srivastava et al. 2014): cap the norm of each unit's incoming weight vector.

References:
    Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I. and Salakhutdinov, R. "Dropout: A
    Simple Way to Prevent Neural Networks from Overfitting." JMLR 15, 2014, Section 5.1
    (max-norm regularization, typical c from 3 to 4; used together with dropout).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ._checks import check_nonnegative
from .module import Module
from .parameter import Parameter


def _weights(target) -> list[Parameter]:
    if isinstance(target, Module):
        params = list(target.parameters())
    elif isinstance(target, Parameter):
        params = [target]
    else:
        params = list(target)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"max_norm_ expects a Module, a Parameter or Parameters, got {type(p).__name__}")
    return [p for p in params if p.data.ndim >= 2]


def max_norm_(params_or_module: Module | Parameter | Iterable[Parameter], max_norm: float = 3.0,
              dim: int = 0) -> int:
    """Project every unit's incoming weight vector onto the ball ||w_i||_2 <= c, in place.

    A unit's incoming weights are the slice ``w[i]`` along ``dim`` (the rows of a Linear's
    (out, in) weight for ``dim=0``, as ``torch.renorm(w, 2, dim, c)``)::

        w_i <- w_i * min(1, c / ||w_i||_2)

    Rows already inside the ball are left untouched (bit for bit). Only parameters with two or
    more dimensions are constrained, so biases (1-D) are skipped, whether a module or a list of
    parameters is given. Apply it after each optimizer step. Returns how many units were rescaled.
    """
    check_nonnegative("max_norm_", "max_norm", max_norm)
    rescaled = 0
    for p in _weights(params_or_module):
        if not -p.data.ndim <= dim < p.data.ndim:
            raise ValueError(f"max_norm_: dim {dim} is out of range for a weight of shape {p.data.shape}")
        axes = tuple(a for a in range(p.data.ndim) if a != dim % p.data.ndim)
        norms = np.sqrt(np.sum(p.data.astype(np.float64) ** 2, axis=axes, keepdims=True))
        over = norms > max_norm
        if over.any():
            scale = np.where(over, max_norm / np.where(over, norms, 1.0), 1.0)
            p.data[...] = np.where(over, p.data * scale.astype(p.data.dtype), p.data)
            rescaled += int(over.sum())
    return rescaled


class MaxNorm:
    """The constraint as an object: ``constraint = MaxNorm(3.0)``, then ``constraint(model)`` after
    each ``optimizer.step()`` (a trainer can hold a list of such callables). See :func:`max_norm_`.
    """

    def __init__(self, max_norm: float = 3.0, dim: int = 0):
        self.max_norm, self.dim = check_nonnegative("MaxNorm", "max_norm", max_norm), int(dim)

    def __call__(self, params_or_module) -> int:
        return max_norm_(params_or_module, self.max_norm, self.dim)

    def __repr__(self) -> str:
        return f"MaxNorm(max_norm={self.max_norm}, dim={self.dim})"
