"""``activations`` (ReLU), ``leaky-relu``, ``sigmoid`` and ``tanh``: y = f(x) elementwise and
backward's dLoss/dx = g * f'(x), with f' computed from what forward cached.

The grader grades one class per run (``--class`` renames it, the starter writes one skeleton from
one reference), so each activation is an assignment of its own; ``activations`` grades ReLU, the
first one a course asks for.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ... import nn
from ..core import Assignment, Check, CheckFailure, _student_frames, expect, expect_close

SHAPES = [(1, 4), (2, 3), (5, 3, 2)]  # batch 1 and 2, and an input with more than one feature axis
SATURATED = np.array([-1000.0, 1000.0])  # exp(1000) overflows float64 (max ~ exp(709.8))


def _inputs(rng, shape):
    return 3.0 * rng.standard_normal(shape), rng.standard_normal(shape)


def no_float_errors(sub, what: str, hint: str, compute):
    """``compute()`` with NumPy's overflow, 0/0 and division by zero raised (underflow to 0 is
    exact enough); a CheckFailure naming the student's line and ``hint`` if one happens."""
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            return compute()
        except FloatingPointError as exc:
            raise CheckFailure(f"{what}: {exc}{_student_frames(exc, sub.path)}\n  hint: {hint}") from None


def _large_inputs(rng, shape=(2, 4)):
    """±1000 and values of |x| up to 1000 (exp overflows beyond 709.78)."""
    rest = rng.uniform(-1000.0, 1000.0, int(np.prod(shape)) - SATURATED.size)
    return np.concatenate([SATURATED, rest]).reshape(shape), rng.standard_normal(shape)


# --------------------------------------------------------------------------- shared checks
def compare_forward(sub, rng, mistakes, kwargs=({},)):
    """forward of the student's layer and the reference's, built with each of ``kwargs``, on SHAPES;
    ``mistakes(x, **kw)`` gives the known mistakes' outputs."""
    for shape in SHAPES:
        for kw in kwargs:
            mine, ref = sub.make(**kw), sub.ref(**kw)
            x, _ = _inputs(rng, shape)
            expect_close(mine(x.copy()), ref(x), f"forward output y{_args(kw)}", f"x {x.shape}", mistakes(x, **kw))


def compare_backward(sub, rng, mistakes, kwargs=({},)):
    """backward after forward, as :func:`compare_forward`; ``mistakes(x, g, y, **kw)``."""
    for shape in SHAPES:
        for kw in kwargs:
            mine, ref = sub.make(**kw), sub.ref(**kw)
            x, g = _inputs(rng, shape)
            mine(x.copy())
            y = ref(x)
            expect_close(mine.backward(g.copy()), ref.backward(g), f"backward's dLoss/dx{_args(kw)}",
                         f"x {x.shape}, grad {g.shape}", mistakes(x, g, y, **kw))


def no_mistakes(*args, **kwargs):
    return {}


def forward_backward_checks(forward: str, backward: str, forward_mistakes, backward_mistakes,
                            kwargs=({},)) -> tuple[Check, Check]:
    """An activation's two checks, 2 points each: :func:`compare_forward` named ``forward`` and
    :func:`compare_backward` named ``backward``, with the known mistakes and the ``kwargs`` to build with."""
    return (Check(forward, 2, partial(compare_forward, mistakes=forward_mistakes, kwargs=kwargs)),
            Check(backward, 2, partial(compare_backward, mistakes=backward_mistakes, kwargs=kwargs)))


def _args(kw) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in kw.items())})" if kw else ""


def check_arguments_unchanged(sub, rng):
    x, g = _inputs(rng, SHAPES[1])
    x0, g0 = x.copy(), g.copy()
    layer = sub.make()
    layer(x)
    expect(np.array_equal(x, x0), "forward changed its input x in place (an assignment such as x[mask] = ... "
                                  "writes into the caller's array); compute the output into a new array")
    layer.backward(g)
    expect(np.array_equal(g, g0), "backward changed grad_output in place (it is the next layer's array, "
                                  "which may still be in use); return a new array")


ARGUMENTS_UNCHANGED = Check("forward and backward leave their arguments unchanged", 1, check_arguments_unchanged)


# --------------------------------------------------------------------------- ReLU
def relu_backward_mistakes(x, g, y):
    return {"ReLU's derivative is 1[x > 0]; yours passes g through unchanged where x < 0": g,
            "ReLU's derivative at x < 0 is 0, not x": np.where(x > 0, g, g * x),
            "ReLU's derivative is 1[x > 0], not the input x: dLoss/dx = g * 1[x > 0]": g * x,
            "ReLU's derivative is 1[x > 0], not the output max(0, x): dLoss/dx = g * 1[x > 0]": g * y}


def relu_forward_mistakes(x):
    return {"ReLU is max(0, x), yours is min(0, x)": np.minimum(x, 0), "ReLU is max(0, x), not |x|": np.abs(x)}


# --------------------------------------------------------------------------- LeakyReLU
SLOPES = ({}, {"negative_slope": 0.2})  # torch's default 0.01, and another


def leaky_forward_mistakes(x, negative_slope=0.01):
    return {"LeakyReLU keeps x where x > 0 and gives negative_slope * x where x <= 0; yours gives 0 there "
            "(that is ReLU)": np.maximum(x, 0)}


def leaky_backward_mistakes(x, g, y, negative_slope=0.01):
    return {"LeakyReLU's derivative at x < 0 is negative_slope, not 0": g * (x > 0),
            "LeakyReLU's derivative at x < 0 is negative_slope, not negative_slope * x":
                np.where(x > 0, g, g * negative_slope * x)}


# --------------------------------------------------------------------------- Sigmoid
SIGMOID_OVERFLOW = ("exp(-x) overflows for x < -709: use only exp(-|x|), which lies in (0, 1]: s = 1/(1 + e) for "
                    "x >= 0 and e/(1 + e) for x < 0 with e = exp(-|x|) (np.where computes both of its branches, "
                    "so each must be safe everywhere), or s = (1 + tanh(x/2)) / 2")


def sigmoid_backward_mistakes(x, g, y):
    return {"sigmoid'(x) = s(x)(1 - s(x)), yours is s(x)": g * y,
            "sigmoid'(x) = s(x)(1 - s(x)) of the output s(x), yours is x(1 - x) of the input": g * x * (1 - x),
            "backward returns g * s(x)(1 - s(x)); yours forgets to multiply by grad_output g": y * (1 - y)}


def check_sigmoid_large_forward(sub, rng):
    x, _ = _large_inputs(rng)
    got = no_float_errors(sub, "forward at |x| up to 1000", SIGMOID_OVERFLOW, lambda: sub.make()(x.copy()))
    expect_close(got, sub.ref()(x), "forward output y for |x| up to 1000", f"x {x.shape} holding -1000 and 1000")


def check_sigmoid_large_backward(sub, rng):
    x, g = _large_inputs(rng)
    mine, ref = sub.make(), sub.ref()
    with np.errstate(all="ignore"):  # forward's own overflow is the check above's
        mine(x.copy())
    ref(x)
    got = no_float_errors(sub, "backward at |x| up to 1000",
                          "compute s(x)(1 - s(x)) from the output s(x) that forward cached, not from exp(-x) again",
                          lambda: mine.backward(g.copy()))
    expect_close(got, ref.backward(g), "backward's dLoss/dx for |x| up to 1000", f"x {x.shape} holding -1000 and 1000")


# --------------------------------------------------------------------------- Tanh
TANH_OVERFLOW = ("exp(x) overflows for |x| > 709 (and inf / inf is NaN): use np.tanh, or tanh(x) = sign(x) (1 - e) / "
                 "(1 + e) with e = exp(-2|x|)")


def tanh_backward_mistakes(x, g, y):
    return {"tanh'(x) = 1 - tanh(x)^2, yours is 1 - tanh(x)": g * (1 - y),
            "tanh'(x) = 1 - y^2 of the output y = tanh(x), yours is 1 - x^2 of the input": g * (1 - x * x),
            "backward returns g * (1 - tanh(x)^2); yours forgets to multiply by grad_output g": 1 - y * y}


def check_tanh_large(sub, rng):
    x, g = _large_inputs(rng)
    mine, ref = sub.make(), sub.ref()
    got = no_float_errors(sub, "forward at |x| up to 1000", TANH_OVERFLOW, lambda: mine(x.copy()))
    shapes = f"x {x.shape} holding -1000 and 1000"
    expect_close(got, ref(x), "forward output y for |x| up to 1000", shapes)
    got = no_float_errors(sub, "backward at |x| up to 1000", "compute 1 - y^2 from the output y that forward cached",
                          lambda: mine.backward(g.copy()))
    expect_close(got, ref.backward(g), "backward's dLoss/dx for |x| up to 1000", shapes)


ASSIGNMENTS = (
    Assignment("activations", "ReLU: forward y = max(0, x) and backward dLoss/dx = g * 1[x > 0]", nn.ReLU, (
        *forward_backward_checks("forward: y = max(0, x)", "backward: dLoss/dx = g * 1[x > 0]",
                                 relu_forward_mistakes, relu_backward_mistakes),
        ARGUMENTS_UNCHANGED,
    )),
    Assignment("leaky-relu", "LeakyReLU(negative_slope=0.01): y = x if x > 0 else negative_slope * x, and backward",
               nn.LeakyReLU, (
        *forward_backward_checks("forward: y = x if x > 0 else negative_slope * x (default 0.01)",
                                 "backward: dLoss/dx = g if x > 0 else negative_slope * g",
                                 leaky_forward_mistakes, leaky_backward_mistakes, SLOPES),
        ARGUMENTS_UNCHANGED,
    )),
    Assignment("sigmoid", "Sigmoid: y = 1 / (1 + exp(-x)) without overflow, backward dLoss/dx = g * y (1 - y)",
               nn.Sigmoid, (
        *forward_backward_checks("forward: y = 1 / (1 + exp(-x))", "backward: dLoss/dx = g * y (1 - y)",
                                 no_mistakes, sigmoid_backward_mistakes),
        Check("forward at x = -1000 and 1000: no overflow, no NaN", 2, check_sigmoid_large_forward),
        Check("backward at x = -1000 and 1000 uses the cached output: no overflow", 1, check_sigmoid_large_backward),
        ARGUMENTS_UNCHANGED,
    )),
    Assignment("tanh", "Tanh: y = tanh(x), backward dLoss/dx = g * (1 - y^2)", nn.Tanh, (
        *forward_backward_checks("forward: y = tanh(x)", "backward: dLoss/dx = g * (1 - y^2)",
                                 no_mistakes, tanh_backward_mistakes),
        Check("forward and backward at x = -1000 and 1000: no overflow, no NaN", 1, check_tanh_large),
        ARGUMENTS_UNCHANGED,
    )),
)
