"""Fused optimizer updates: SGD's and Adam's whole chain of gradient transforms plus ``w += u`` as
one compiled loop (numba) per parameter, used while the numba kernels are on.

The chains in optimizer.py (of transforms.py's links) are the definition; each loop below performs
the same float operations in the chain's order, in the parameter's dtype, in one pass over w, g and
the state instead of one NumPy pass per link and temporary. tests/optim/test_fused.py checks every
step of multi-step runs against the chain. Importing this module imports numba; the optimizers
reach it through ``nn._kernels.compiled("tricklab.optim.fused")``.
"""

from __future__ import annotations

import numpy as np

from ..nn._kernels import njit
from ..nn.parameter import Parameter


def fits(p: Parameter, *state_arrays) -> bool:
    """Whether the loops can take ``p``: C-contiguous float arrays of one dtype and shape (a state
    entry may be None: not yet made)."""
    w = p.data
    if w.dtype.kind != "f" or not w.flags.c_contiguous:
        return False
    for a in (p.grad, *state_arrays):
        if a is not None and (not isinstance(a, np.ndarray) or a.dtype != w.dtype or a.shape != w.shape
                              or not a.flags.c_contiguous):
            return False
    return True


@njit
def _sgd_loop(w, g, buf, lr, momentum, one_minus_dampening, weight_decay, nesterov, maximize, first):
    for i in range(w.shape[0]):
        gi = -g[i] if maximize else g[i]  # maximize: ascend
        gi = gi + weight_decay * w[i]  # add_decayed_weights (weight_decay may be 0)
        if momentum != 0:  # trace: b = g (first step) else mu b + (1 - dampening) g
            b = gi if first else momentum * buf[i] + one_minus_dampening * gi
            buf[i] = b
            gi = gi + momentum * b if nesterov else b
        w[i] = w[i] - lr * gi  # scale_by_learning_rate, then w += u


@njit
def _adam_loop(w, g, m, v, vmax, lr, b1c, b2, b2c, eps, weight_decay, decoupled, amsgrad, maximize,
               bias1, bias2_sqrt):
    for i in range(w.shape[0]):
        gi = -g[i] if maximize else g[i]
        if not decoupled:
            gi = gi + weight_decay * w[i]  # L2: decay before the moments
        m[i] = m[i] + b1c * (gi - m[i])  # m = b1 m + (1 - b1) g
        v[i] = b2 * v[i] + b2c * gi * gi  # v = b2 v + (1 - b2) g^2
        vi = v[i]
        if amsgrad:
            vmax[i] = max(vmax[i], vi)
            vi = vmax[i]
        u = (m[i] / bias1) / (np.sqrt(vi) / bias2_sqrt + eps)
        if decoupled:
            u = u + weight_decay * w[i]  # AdamW: decay bypasses the moments
        w[i] = w[i] - lr * u


def sgd_(w, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first):
    """SGD's chain (optimizer.SGD) and w += u in place; buf is the momentum buffer (None without
    momentum), written from g at the ``first`` step."""
    t = w.dtype.type
    _sgd_loop(w.reshape(-1), g.reshape(-1), (w if buf is None else buf).reshape(-1), t(lr), t(momentum),
              t(1.0 - dampening), t(weight_decay), bool(nesterov), bool(maximize), bool(first))


def adam_(w, g, m, v, vmax, lr, b1, b2, eps, weight_decay, decoupled, amsgrad, maximize, step):
    """Adam's chain (optimizer.Adam, AdamW with ``decoupled``) and w += u in place, at step number
    ``step`` (1 at the first); m, v, vmax the moment buffers (vmax None without amsgrad)."""
    t = w.dtype.type
    _adam_loop(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), (v if vmax is None else vmax).reshape(-1),
               t(lr), t(1.0 - b1), t(b2), t(1.0 - b2), t(eps), t(weight_decay), bool(decoupled), bool(amsgrad),
               bool(maximize), t(1.0 - b1**step), t((1.0 - b2**step) ** 0.5))
