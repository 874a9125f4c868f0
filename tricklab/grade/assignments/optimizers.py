"""``sgd-momentum`` and ``adam``: optimizers written as tricklab.optim's (and torch.optim's) are.

The protocol is the reference's: the optimizer is built with a list of :class:`Parameter` first,
then its hyperparameters by keyword; ``step()`` updates every ``p.data`` from ``p.grad``;
``zero_grad()`` sets every ``p.grad`` to zero. Each check builds a 1-d and a 2-d parameter, gives
both optimizers (the student's and tricklab's) the same gradients for a few steps and compares the
parameters after every step: a mistake in the state (a momentum buffer, Adam's moments and step
count) shows at the step where it first changes the trajectory.

The references are tricklab.optim.SGD and tricklab.optim.Adam with the assignment's scope: the
subclasses below keep the hyperparameters the course asks for (no dampening, maximize, amsgrad)
and carry the equations the starter file shows. tricklab.optim.SGD and tricklab.optim.Adam
themselves score full marks too (tested).

AdamW is graded through the student's single ``Adam`` class: ``Adam(params, ...,
decoupled_weight_decay=True)`` is AdamW in torch (``torch.optim.Adam``'s flag of that name) and in
tricklab (``tricklab.optim.AdamW`` is ``Adam`` with that flag set), so the grader, which looks up
one class per assignment, needs no second one and the student writes the update once.
"""

from __future__ import annotations

import numpy as np

from ... import optim
from ...nn import Parameter
from ..core import Assignment, Check, expect, expect_close, matches

SHAPES = ((3,), (2, 4))  # a bias-like and a weight-like parameter in one optimizer
STEPS = 4


class SGD(optim.SGD):
    """SGD with momentum, Nesterov momentum and L2 weight decay, as ``torch.optim.SGD``.

    ``params`` is a list of Parameter. ``step()`` updates every ``p`` from ``p.grad``, keeping one
    momentum buffer per parameter::

        g = p.grad + weight_decay * p.data          (L2 weight decay: before the momentum)
        buf = g                                     (first step; only when momentum > 0)
        buf = momentum * buf + g                    (later steps)
        u = g + momentum * buf  if nesterov  else  buf      (u = g when momentum == 0)
        p.data -= lr * u

    ``step()`` leaves ``p.grad`` unchanged; ``zero_grad()`` sets every ``p.grad`` to 0.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


class Adam(optim.Adam):
    """Adam (Kingma & Ba 2015) as ``torch.optim.Adam``; AdamW with ``decoupled_weight_decay=True``.

    ``params`` is a list of Parameter; ``betas = (beta1, beta2)``. ``step()`` updates every ``p``
    from ``p.grad``, keeping per parameter the step count t and the moments m, v (both start at 0)::

        g = p.grad + weight_decay * p.data          (L2, only when decoupled_weight_decay is False)
        t = t + 1
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)                (bias correction)
        v_hat = v / (1 - beta2 ** t)
        u = m_hat / (sqrt(v_hat) + eps)             (eps outside the square root)
        p.data -= lr * u                            (Adam)
        p.data -= lr * (u + weight_decay * p.data)  (AdamW, decoupled_weight_decay=True: the
                                                     decay bypasses the moments)

    ``step()`` leaves ``p.grad`` unchanged; ``zero_grad()`` sets every ``p.grad`` to 0.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 decoupled_weight_decay=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay)


# --------------------------------------------------------------------------- trajectories
def _draw(rng, scale=1.0, steps=STEPS):
    """Initial values of the parameters and ``steps`` gradients for each, all float64."""
    w0 = [scale * rng.standard_normal(shape) for shape in SHAPES]
    grads = [[scale * rng.standard_normal(shape) for shape in SHAPES] for _ in range(steps)]
    return w0, grads


def _trajectory(w0, grads, update):
    """``path[t][i]``: parameter i after step t+1 of ``w <- update(w, g, state)`` (one state per parameter)."""
    ws, states, path = [w.copy() for w in w0], [{} for _ in w0], []
    for gs in grads:
        ws = [update(w, g, s) for w, g, s in zip(ws, gs, states)]
        path.append(ws)
    return path


def _call(cls_name, hyper):
    args = ", ".join(["params"] + [f"{k}={v!r}" for k, v in hyper.items()])
    return f"{cls_name}({args}), params of shapes {' and '.join(str(s) for s in SHAPES)}"


def _run(opt, params, grads):
    """``(path, grad_path, before, error)``: every parameter's value and .grad after each step of
    ``opt`` given ``grads`` and its value before each step (copies), up to the step that raised
    ``error`` (None if none did)."""
    path, grad_path, before = [], [], []
    try:
        for gs in grads:
            before.append([np.array(p.data, copy=True) for p in params])
            for p, g in zip(params, gs):
                p.grad[...] = g
            opt.step()
            path.append([np.array(p.data, copy=True) for p in params])
            grad_path.append([np.array(p.grad, copy=True) for p in params])
    except Exception as exc:  # the student's step: reported after the steps before it are compared
        if not path:
            raise
        return path, grad_path, before, exc
    return path, grad_path, before, None


def _follows(got, path) -> bool:
    """Whether the trajectory ``got`` is ``path`` at every step."""
    try:
        return all(matches(g, w) for gs, ws in zip(got, path) for g, w in zip(gs, ws))
    except (TypeError, ValueError):
        return False


def _compare_steps(sub, hyper, w0, grads, mistakes=None, grad_mistakes=None):
    """Run the student's optimizer and the reference on the same gradients; compare every
    parameter after every step (and ``p.grad`` with the given gradient if ``grad_mistakes``).

    ``mistakes`` maps a hint to the update of a known mistake. The hint is given only when the
    student's whole trajectory is that mistake's (two mistakes may agree on the first steps).
    """
    mine, ref = [Parameter(w) for w in w0], [Parameter(w) for w in w0]
    opt, ref_opt = sub.make(mine, **hyper), sub.ref(ref, **hyper)
    got, got_grads, before, error = _run(opt, mine, grads)
    want, _, _, _ = _run(ref_opt, ref, grads)
    wrong = {hint: path for hint, update in (mistakes or {}).items() if update is not None
             for path in [_trajectory(w0, grads, update)] if _follows(got, path)}
    call = _call(sub.reference.__name__, hyper)
    for t, gs in enumerate(grads[:len(got)]):
        for i, g in enumerate(gs):
            expect_close(got[t][i], want[t][i], f"parameter {i} (shape {want[t][i].shape}) after step {t + 1}", call,
                         mistakes={hint: path[t][i] for hint, path in wrong.items()})
            if grad_mistakes is not None:
                expect_close(got_grads[t][i], g, f"parameter {i}'s .grad after step {t + 1} (step must not change it)",
                             call, mistakes={hint: wrong_grad(g, before[t][i])
                                             for hint, wrong_grad in grad_mistakes.items()})
    if error is not None:
        raise error


def check_zero_grad(sub, rng):
    w0, grads = _draw(rng, steps=1)
    params = [Parameter(w) for w in w0]
    opt = sub.make(params, lr=0.1)
    for p, g in zip(params, grads[0]):
        p.grad[...] = g
    opt.zero_grad()
    for i, p in enumerate(params):
        grad = getattr(p, "grad", None)
        expect(isinstance(grad, np.ndarray) and grad.shape == p.data.shape,
               f"after zero_grad(), parameter {i}'s .grad must be an array of shape {p.data.shape}, "
               f"got {type(grad).__name__} {getattr(grad, 'shape', '')}")
        expect_close(grad, np.zeros_like(p.data), f"parameter {i}'s .grad after zero_grad()")


# --------------------------------------------------------------------------- SGD
def _sgd(lr, momentum=0.0, wd=0.0, dampening=0.0, ema_from_zero=False,
         decay_after_momentum=False, ascent=False):
    """One SGD update ``w <- update(w, g, state)``, correct with the defaults, else a known mistake."""

    def update(w, g, state):
        d = g if decay_after_momentum else g + wd * w
        u = d
        if momentum:
            old = state.get("buf", np.zeros_like(w) if ema_from_zero else None)
            buf = d.copy() if old is None else momentum * old + (1 - dampening) * d
            state["buf"] = buf
            u = buf
        if decay_after_momentum:
            u = u + wd * w
        return w + lr * u if ascent else w - lr * u

    return update


def check_plain_sgd(sub, rng):
    w0, grads = _draw(rng)
    lr = 0.1
    _compare_steps(sub, dict(lr=lr), w0, grads, mistakes={
        "the step goes against the gradient: p.data -= lr * p.grad": _sgd(lr, ascent=True)})


def check_momentum(sub, rng):
    w0, grads = _draw(rng)
    lr, mu = 0.1, 0.9
    _compare_steps(sub, dict(lr=lr, momentum=mu), w0, grads, mistakes={
        "the first step must start the buffer at the gradient (torch), not at momentum * 0 + (1 - momentum) g":
            _sgd(lr, mu, dampening=mu, ema_from_zero=True),
        "the buffer adds the gradient itself: buf = momentum * buf + g, not + (1 - momentum) * g":
            _sgd(lr, mu, dampening=mu),
        "momentum is ignored: keep a buffer per parameter, buf = momentum * buf + g, and step with it":
            _sgd(lr)})


def check_weight_decay(sub, rng):
    w0, grads = _draw(rng)
    lr, mu, wd = 0.1, 0.9, 0.1
    for hyper in (dict(lr=lr, weight_decay=wd), dict(lr=lr, momentum=mu, weight_decay=wd)):
        m = hyper.get("momentum", 0.0)
        _compare_steps(sub, hyper, w0, grads, mistakes={
            "weight decay adds wd * p to the gradient before the momentum":
                _sgd(lr, m, wd, decay_after_momentum=True) if m else None,
            "weight_decay is ignored: the gradient is p.grad + weight_decay * p.data": _sgd(lr, m)},
            grad_mistakes={"step must not change p.grad: compute g = p.grad + weight_decay * p.data as a new array "
                           "(p.grad += ... changes the gradient the training loop sees)": lambda g, w: g + wd * w})


def check_nesterov(sub, rng):
    w0, grads = _draw(rng)
    lr, mu = 0.1, 0.9
    _compare_steps(sub, dict(lr=lr, momentum=mu, nesterov=True), w0, grads, mistakes={
        "Nesterov's update is g + momentum * buf, with buf after this step's update; yours steps with plain "
        "momentum's momentum * buf + g": _sgd(lr, mu)})


# --------------------------------------------------------------------------- Adam
def _adam(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False, no_bias_correction=False,
          eps_inside_sqrt=False, eps_before_correction=False, coupled=False, decay_without_lr=False,
          decay_after_step=False):
    """One Adam(W) update ``w <- update(w, g, state)``, correct with the defaults, else a known mistake."""

    def update(w, g, state):
        t = state["t"] = state.get("t", 0) + 1
        d = g + wd * w if (wd and (not decoupled or coupled)) else g
        m = state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * d
        v = state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * d * d
        m_hat, v_hat = (m, v) if no_bias_correction else (m / (1 - b1**t), v / (1 - b2**t))
        if eps_inside_sqrt:
            u = m_hat / np.sqrt(v_hat + eps)
        elif eps_before_correction:  # the paper's "efficient" form: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)
            u = m / (1 - b1**t) * np.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
        else:
            u = m_hat / (np.sqrt(v_hat) + eps)
        if not decoupled or coupled:
            return w - lr * u
        if decay_without_lr:
            return w - lr * u - wd * w
        if decay_after_step:
            return (w - lr * u) * (1 - lr * wd)
        return w - lr * (u + wd * w)

    return update


ADAM = dict(lr=0.1, betas=(0.8, 0.95), eps=1e-3)  # small gradients (scale 0.1) make eps visible


def check_adam(sub, rng):
    w0, grads = _draw(rng, scale=0.1)
    lr, (b1, b2), eps = ADAM["lr"], ADAM["betas"], ADAM["eps"]
    _compare_steps(sub, ADAM, w0, grads, mistakes={
        "no bias correction in Adam: divide m by 1 - beta1^t and v by 1 - beta2^t":
            _adam(lr, b1, b2, eps, no_bias_correction=True),
        "eps goes outside the square root: m_hat / (sqrt(v_hat) + eps)": _adam(lr, b1, b2, eps, eps_inside_sqrt=True),
        "eps is added after the bias correction, sqrt(v / (1 - beta2^t)) + eps (torch), not to sqrt(v) with "
        "the correction folded into the step size": _adam(lr, b1, b2, eps, eps_before_correction=True)})


def check_adam_defaults(sub, rng):
    w0, grads = _draw(rng, scale=1e-3)  # steps of lr = 1e-3 are visible next to weights of 1e-3
    _compare_steps(sub, {}, w0, grads)


def check_adam_l2(sub, rng):
    w0, grads = _draw(rng, scale=0.1)
    lr, (b1, b2), eps = ADAM["lr"], ADAM["betas"], ADAM["eps"]
    wd = 0.5
    _compare_steps(sub, dict(ADAM, weight_decay=wd), w0, grads, mistakes={
        "Adam's weight_decay is L2 (torch's): add wd * p to the gradient before the moments; the decoupled decay "
        "is only for decoupled_weight_decay=True": _adam(lr, b1, b2, eps, wd, decoupled=True),
        "weight_decay is ignored: the gradient is p.grad + weight_decay * p.data": _adam(lr, b1, b2, eps)},
        grad_mistakes={"step must not change p.grad: compute g = p.grad + weight_decay * p.data as a new array "
                       "(p.grad += ... changes the gradient the training loop sees)": lambda g, w: g + wd * w})


def check_adamw(sub, rng):
    w0, grads = _draw(rng, scale=0.1)
    lr, (b1, b2), eps = ADAM["lr"], ADAM["betas"], ADAM["eps"]
    wd = 0.5
    _compare_steps(sub, dict(ADAM, weight_decay=wd, decoupled_weight_decay=True), w0, grads, mistakes={
        "AdamW decays the weights directly (p -= lr * wd * p), not through the gradient":
            _adam(lr, b1, b2, eps, wd, decoupled=True, coupled=True),
        "AdamW's decay is scaled by the learning rate: p -= lr * wd * p (torch), not wd * p":
            _adam(lr, b1, b2, eps, wd, decoupled=True, decay_without_lr=True),
        "AdamW decays the weights of before the step: p -= lr * (u + wd * p), not (p - lr * u) * (1 - lr * wd)":
            _adam(lr, b1, b2, eps, wd, decoupled=True, decay_after_step=True),
        "decoupled_weight_decay=True is ignored: AdamW decays the weights, p -= lr * wd * p": _adam(lr, b1, b2, eps)})


def _optimizer(name: str, summary: str, reference, *checks: Check) -> Assignment:
    """An optimizer assignment: zero_grad's check first, then ``checks``."""
    return Assignment(name, summary, reference, (Check("zero_grad() sets every .grad to 0", 1, check_zero_grad),
                                                 *checks), kind="optimizer")


ASSIGNMENTS = (
    _optimizer("sgd-momentum", "SGD(params, lr, momentum, weight_decay, nesterov): torch's SGD with momentum, "
               "Nesterov momentum and L2 weight decay", SGD,
               Check("plain SGD: p <- p - lr * g", 1, check_plain_sgd),
               Check("momentum: buf = g at the first step, then momentum * buf + g", 3, check_momentum),
               Check("weight decay: g + wd * p before the momentum; p.grad left unchanged", 2, check_weight_decay),
               Check("Nesterov: the update is g + momentum * buf", 2, check_nesterov)),
    _optimizer("adam", "Adam(params, lr, betas, eps, weight_decay, decoupled_weight_decay): torch's Adam with "
               "bias correction, L2 weight decay and AdamW's decoupled weight decay", Adam,
               Check("Adam: bias-corrected moments, p <- p - lr * m_hat / (sqrt(v_hat) + eps)", 4, check_adam),
               Check("the defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-8", 1, check_adam_defaults),
               Check("weight_decay is L2: g + wd * p before the moments; p.grad left unchanged", 2, check_adam_l2),
               Check("AdamW (decoupled_weight_decay=True): p <- p - lr * (u + wd * p)", 2, check_adamw)),
)
