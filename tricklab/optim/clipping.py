"""Gradient clipping: bound the step a single exploding gradient can cause (torch.nn.utils').

Both functions modify ``p.grad`` in place, between ``backward`` and ``optimizer.step()``.
``params`` is a single :class:`Parameter` or any iterable of them (a generator is fine).
"""

from __future__ import annotations

import types
import warnings
from typing import Iterable

import numpy as np

from ..nn.parameter import Parameter


def _as_list(params: Parameter | Iterable[Parameter]) -> list[Parameter]:
    if isinstance(params, Parameter):
        return [params]
    is_generator = isinstance(params, types.GeneratorType)
    params = list(params)
    if is_generator and not params:
        warnings.warn("params is an empty generator (already consumed?): nothing is clipped",
                      stacklevel=3)
    return params


def clip_grad_value_(params: Parameter | Iterable[Parameter], clip_value: float = 5.0) -> None:
    """Clip every gradient entry to ``[-clip_value, clip_value]``.

    This is the lecture's ceiling, "if dD/dw > theta then dD/dw = theta" (typically theta = 5),
    applied on both sides as in ``torch.nn.utils.clip_grad_value_``. Clipping each entry on its
    own can change the direction of the gradient. :func:`clip_grad_norm_` keeps the direction.
    """
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value!r}")
    for p in _as_list(params):
        np.clip(p.grad, -clip_value, clip_value, out=p.grad)


def clip_grad_norm_(params: Parameter | Iterable[Parameter], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    """Rescale all gradients together so that their joint norm is at most ``max_norm``.

    Returns the total norm before clipping, as a float::

        total = || ( ||g_1||_p, ..., ||g_n||_p ) ||_p     (= the p-norm of all entries; max for inf)
        g_i  <- g_i * min(1, max_norm / (total + 1e-6))

    This is ``torch.nn.utils.clip_grad_norm_`` (including ``norm_type=inf`` and the ``1e-6``). A
    non-finite total raises RuntimeError if ``error_if_nonfinite``. Otherwise the gradients are
    scaled by the resulting NaN or 0 factor, as torch does.

    References:
        Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
        ICML 2013.
    """
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm!r}")
    grads = [p.grad for p in _as_list(params)]
    if not grads:
        return 0.0
    norms = [np.linalg.norm(g.ravel(), norm_type) for g in grads]
    total = np.linalg.norm(np.stack(norms), norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients "
                           f"is {float(total)}, so it cannot be clipped; pass "
                           "error_if_nonfinite=False to scale by it anyway")
    coef = min(max_norm / (total + 1e-6), 1.0)
    with np.errstate(invalid="ignore"):  # inf * 0 -> NaN when the norm was inf: documented above
        for g in grads:
            g *= coef
    return float(total)
