"""Gradient transformations: the small pieces every optimizer is a chain of (the optax idea).

A transformation works on ONE parameter's arrays and keeps its state explicit::

    state    = t.init(w)               # w: ndarray, the parameter value
    u, state = t.update(g, state, w)   # g: ndarray dLoss/dw, same shape and dtype as w

``u`` is the transformed gradient. The last link of an optimizer's chain
(:func:`scale_by_learning_rate`) turns it into the step the optimizer adds to the weights,
``w <- w + u``. The state is a flat dict ``{name: ndarray | int}`` using torch's names
(``momentum_buffer``, ``exp_avg``, ``exp_avg_sq`` ...), so an optimizer's ``state_dict`` looks
like torch's. ``update`` never writes into ``g`` or ``w``. It updates the state's buffers in place
and returns the same dict. The ``u`` it returns may be a state buffer, so read it and don't
write to it. The buffers are ndarrays of ``w``'s shape also for a 0-d ``w``, where NumPy arithmetic
returns scalars: a scalar can neither be updated in place nor be an ``out=`` argument.

Hyperparameters are stored as Python floats. NumPy 2 treats Python scalars as "weak", so
``0.9 * g`` keeps float32 as float32 with no float64 round trip.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

State = dict
InitFn = Callable[[np.ndarray], State]
UpdateFn = Callable[[np.ndarray, State, np.ndarray], "tuple[np.ndarray, State]"]


class Transform(NamedTuple):
    """A gradient transformation: ``init(w) -> state`` and ``update(g, state, w) -> (u, state)``."""

    init: InitFn
    update: UpdateFn


def _no_state(w: np.ndarray) -> State:
    return {}


def chain(*transforms: Transform | None) -> Transform:
    """Apply ``transforms`` one after another: ``u = t_n(... t_2(t_1(g)))``.

    ``None`` links are skipped, so an optional piece reads ``trace(mu) if mu else None``. The
    chain's state is the union of its links' state dicts, so their key names must be distinct.
    """
    transforms = tuple(t for t in transforms if t is not None)

    def init(w):
        state: State = {}
        for t in transforms:
            state.update(t.init(w))
        return state

    def update(g, state, w):
        for t in transforms:
            g, state = t.update(g, state, w)
        return g, state

    return Transform(init, update)


def scale(factor: float) -> Transform:
    """Multiply by a constant: ``u = factor * g``. ``scale(-1)`` first is torch's ``maximize``."""
    factor = float(factor)
    return Transform(_no_state, lambda g, state, w: (factor * g, state))


def scale_by_learning_rate(lr: float) -> Transform:
    """Turn a direction into a descent step: ``u = -lr * g``.

    References:
        Robbins & Monro, "A Stochastic Approximation Method", 1951.
    """
    return scale(-float(lr))


def add_decayed_weights(weight_decay: float) -> Transform:
    """Add the weight-decay term: ``u = g + lambda * w``.

    ``lambda * w`` is the gradient of the penalty ``(lambda / 2) * sum_l ||W_l||_F^2``.
    Where this link sits in the chain decides the kind of decay:

    * **before** an adaptive scaling (``scale_by_adam``, ``scale_by_rms``): L2 regularization.
      The decay is rescaled together with the gradient (torch ``Adam(weight_decay=...)``).
    * **after** it, just before ``scale_by_learning_rate``: decoupled weight decay,
      ``w <- w - lr * (adam(g) + lambda * w) = (1 - lr*lambda) w - lr * adam(g)`` (torch ``AdamW``).

    For plain SGD, the two placements are the same thing.

    References:
        Krogh & Hertz, "A Simple Weight Decay Can Improve Generalization", NIPS 1991;
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    weight_decay = float(weight_decay)

    def update(g, state, w):
        return (g + weight_decay * w if weight_decay != 0 else g), state

    return Transform(_no_state, update)


def trace(momentum: float, dampening: float = 0.0, nesterov: bool = False) -> Transform:
    """Momentum (heavy ball) with torch's conventions::

        b_1 = g_1                                  (first step: a copy of the gradient)
        b_t = mu * b_{t-1} + (1 - dampening) * g_t
        u_t = g_t + mu * b_t    if nesterov else b_t

    The Nesterov form is Sutskever et al.'s reformulation: the gradient is taken at the current
    weights and the look-ahead is folded into the update.

    References:
        Polyak, "Some methods of speeding up the convergence of iteration methods", 1964;
        Nesterov, "A method for solving a convex programming problem with convergence rate
        O(1/k^2)", 1983; Sutskever, Martens, Dahl & Hinton, "On the importance of initialization
        and momentum in deep learning", ICML 2013.
    """
    momentum, dampening = float(momentum), float(dampening)

    def update(g, state, w):
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = np.array(g)  # an array even where g is a 0-d result
        else:
            buf *= momentum
            buf += (1.0 - dampening) * g if dampening != 0 else g
        return (g + momentum * buf if nesterov else buf), state

    return Transform(_no_state, update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  amsgrad: bool = False) -> Transform:
    """Adam's bias-corrected moment scaling::

        m_t = b1 * m_{t-1} + (1 - b1) * g          (exp_avg)
        v_t = b2 * v_{t-1} + (1 - b2) * g^2        (exp_avg_sq)
        vmax_t = max(vmax_{t-1}, v_t)              (amsgrad only: max_exp_avg_sq)
        u = (m_t / (1 - b1^t)) / (sqrt(v_t or vmax_t) / sqrt(1 - b2^t) + eps)

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
        Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (amsgrad).
    """
    b1, b2, eps = float(b1), float(b2), float(eps)

    def init(w):
        state = {"step": 0, "exp_avg": np.zeros_like(w), "exp_avg_sq": np.zeros_like(w)}
        if amsgrad:
            state["max_exp_avg_sq"] = np.zeros_like(w)
        return state

    def update(g, state, w):
        t = state["step"] = int(state["step"]) + 1
        m, v = state["exp_avg"], state["exp_avg_sq"]
        tmp = np.subtract(g, m, out=np.empty_like(m))  # one work array, same operations in order
        tmp *= 1.0 - b1
        m += tmp  # m += (1 - b1) (g - m)
        np.multiply(g, 1.0 - b2, out=tmp)
        tmp *= g
        v *= b2
        v += tmp  # v = b2 v + (1 - b2) g g
        if amsgrad:
            v = np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        denom = np.sqrt(v, out=tmp)
        denom /= (1.0 - b2**t) ** 0.5
        denom += eps
        u = m / (1.0 - b1**t)
        u /= denom
        return u, state

    return Transform(init, update)


def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8, centered: bool = False) -> Transform:
    """RMSprop: divide the gradient by a running root mean square of recent gradients::

        s_t = alpha * s_{t-1} + (1 - alpha) * g^2               (square_avg)
        a_t = alpha * a_{t-1} + (1 - alpha) * g                 (grad_avg, centered only)
        u   = g / (sqrt(s_t - a_t^2 if centered else s_t) + eps)

    The centered variant divides by an estimate of the gradient's standard deviation, not its
    root mean square. Torch puts ``eps`` outside the square root, and so does this transform.

    References:
        Tieleman & Hinton, "Lecture 6.5 - rmsprop", COURSERA: Neural Networks for Machine
        Learning, 2012; Graves, "Generating Sequences With Recurrent Neural Networks", 2013
        (centered).
    """
    alpha, eps = float(alpha), float(eps)

    def init(w):
        state = {"square_avg": np.zeros_like(w)}
        if centered:
            state["grad_avg"] = np.zeros_like(w)
        return state

    def update(g, state, w):
        s = state["square_avg"]
        s *= alpha
        s += (1.0 - alpha) * g * g
        if centered:
            a = state["grad_avg"]
            a += (1.0 - alpha) * (g - a)
            avg = np.sqrt(s - a * a)
        else:
            avg = np.sqrt(s)
        avg += eps
        return g / avg, state

    return Transform(init, update)
