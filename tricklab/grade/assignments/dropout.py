"""``dropout`` and ``dropout-classic``: Dropout with inverted scaling (torch's) and the lecture's classic form.

``p`` is the drop probability (torch's); the lecture's keep probability is alpha = 1 - p. With a fresh
Bernoulli(alpha) mask m on every training forward pass::

    inverted (scaling="inverted"):  train y = m x / alpha, dLoss/dx = m g / alpha;  eval y = x
    classic  (scaling="test"):      train y = m x,         dLoss/dx = m g;  eval y = alpha x, dLoss/dx = alpha g

The student's generator differs from tricklab's (the reference cuts its mask from raw random bits,
see :func:`tricklab.nn.dropout.bernoulli_mask`), so the checks test properties of the student's own
mask, read from its output (x holds no zeros, so y_i = 0 exactly where unit i was dropped): every
output is 0 or x times the scale, backward zeros exactly the same units, the drop rate is p within
a binomial bound, and masks differ between examples and between calls.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ... import nn
from ..core import Assignment, Check, expect, expect_close

SHAPES = [(1, 6), (2, 5), (3, 4, 5)]  # batch 1 and 2, and an input of more than two axes
PS = (0.2, 0.5, 0.75)
RATE_SHAPE, SIGMAS = (200, 500), 5.0  # 100 000 units: the drop rate's 5-sigma binomial bound is about 0.008

HINT_REDRAWN = "the mask in backward is not the mask of forward"
HINT_UNSCALED = "no dropout scaling: inverted dropout divides by 1 - p in training"
HINT_EVAL_DROPS = "eval mode must not drop"
HINT_CLASSIC = "classic dropout scales at test time by alpha = 1 - p, not in training"


def _train_scale(scaling: str, p: float) -> float:
    """The factor on kept units in training: 1/alpha (inverted) or 1 (classic)."""
    return 1.0 / (1.0 - p) if scaling == "inverted" else 1.0


def _make(sub, rng, p, scaling):
    seed = int(rng.integers(2**31))
    return sub.make(p, rng=seed) if scaling == "inverted" else sub.make(p, scaling="test", rng=seed)


def _inputs(rng, shape):
    """Normal values, never exactly 0: an output of exactly 0 is a dropped unit."""
    x = rng.standard_normal(shape)
    x[x == 0] = 1.0
    return x


def _output(layer, x, what):
    y = np.asarray(layer(x.copy()), dtype=np.float64)
    expect(y.shape == x.shape, f"{what}: shape {y.shape}, expected the input's {x.shape}")
    return y


def _masked(values, kept, scale):
    """The output of dropout with mask ``kept``: values * scale where kept, 0 elsewhere."""
    return np.where(kept, values * scale, 0.0)


def check_training_output(sub, rng, scaling):
    for shape in SHAPES:
        for p in PS:
            layer = _make(sub, rng, p, scaling)
            x = _inputs(rng, shape)
            y = _output(layer, x, f"training forward output (p={p})")
            kept, scale = y != 0, _train_scale(scaling, p)
            mistakes = ({HINT_UNSCALED: _masked(x, kept, 1.0)} if scaling == "inverted"
                        else {HINT_CLASSIC: _masked(x, kept, 1.0 / (1.0 - p))})
            expect_close(y, _masked(x, kept, scale), f"training forward output (p={p}) on the units it kept",
                         f"x {x.shape}; expected 0 or x{' / (1 - p)' if scaling == 'inverted' else ''}",
                         mistakes=mistakes)


def check_drop_rate(sub, rng, scaling):
    n = int(np.prod(RATE_SHAPE))
    for p in PS:
        layer = _make(sub, rng, p, scaling)
        y = _output(layer, _inputs(rng, RATE_SHAPE), f"training forward output (p={p})")
        rate, bound = float(np.mean(y == 0)), SIGMAS * np.sqrt(p * (1 - p) / n)
        flipped = ("\n  hint: p is the probability of dropping a unit (torch's p; the lecture's alpha = 1 - p "
                   "keeps it); yours drops with probability 1 - p"
                   if p != 0.5 and abs(rate - (1 - p)) <= bound else "")
        expect(abs(rate - p) <= bound, f"Dropout(p={p}) dropped a fraction {rate:.4f} of {n} units; expected "
                                       f"{p} within {bound:.4f} ({SIGMAS:g} binomial standard deviations){flipped}")


def check_fresh_masks(sub, rng, scaling):
    p = 0.5
    layer = _make(sub, rng, p, scaling)
    x = _inputs(rng, (64, 100))
    first = _output(layer, x, "training forward output") != 0
    second = _output(layer, x, "second training forward output") != 0
    expect(not np.array_equal(first, second), "two training forward passes on the same x (64, 100) dropped the same "
           "units: draw a new mask on every forward pass")
    expect(len(np.unique(first, axis=0)) > 1, "every example of x (64, 100) dropped the same units: each example "
           "gets its own mask (draw it with x's shape, not one row for the whole batch)")


def check_backward_mask(sub, rng, scaling):
    for shape in SHAPES:
        for p in PS:
            layer = _make(sub, rng, p, scaling)
            x, g = _inputs(rng, shape), rng.standard_normal(shape)
            kept, scale = _output(layer, x, f"training forward output (p={p})") != 0, _train_scale(scaling, p)
            gx = np.asarray(layer.backward(g.copy()), dtype=np.float64)
            expect(gx.shape == g.shape, f"backward's dLoss/dx (p={p}): shape {gx.shape}, expected {g.shape}")
            mistakes = {HINT_REDRAWN: _masked(g, gx != 0, scale)}
            mistakes.update({HINT_UNSCALED: _masked(g, kept, 1.0)} if scaling == "inverted"
                            else {HINT_CLASSIC: _masked(g, kept, 1.0 / (1.0 - p))})
            expect_close(gx, _masked(g, kept, scale), f"backward's dLoss/dx (p={p})",
                         f"x, grad {shape}; expected 0 where forward's output was 0, "
                         f"{'g / (1 - p)' if scaling == 'inverted' else 'g'} elsewhere", mistakes=mistakes)


def _eval_mistakes(y, x, p, scaling):
    """The hints of eval mode: dropping (the output holds zeros), or the classic form's wrong scale."""
    mistakes = {}
    if (y == 0).any():
        mistakes[HINT_EVAL_DROPS] = _masked(x, y != 0, 1.0) if np.allclose(y[y != 0], x[y != 0]) \
            else _masked(x, y != 0, 1.0 / (1.0 - p))
    if scaling == "test":
        mistakes[HINT_CLASSIC] = x
        mistakes["the test-time output is alpha x = (1 - p) x; yours divides by alpha"] = x / (1.0 - p)
    return mistakes


def check_eval(sub, rng, scaling):
    for shape in SHAPES:
        for p in PS:
            layer = _make(sub, rng, p, scaling)
            layer.eval()
            x, g = _inputs(rng, shape), rng.standard_normal(shape)
            alpha = 1.0 if scaling == "inverted" else 1.0 - p
            y = _output(layer, x, f"eval-mode output (p={p})")
            expect_close(y, alpha * x, f"eval-mode output (p={p})", f"x {x.shape}",
                         mistakes=_eval_mistakes(y, x, p, scaling))
            gx = np.asarray(layer.backward(g.copy()), dtype=np.float64)
            expect_close(gx, alpha * g, f"eval-mode backward's dLoss/dx (p={p})", f"x, grad {shape}",
                         mistakes=_eval_mistakes(gx, g, p, scaling))


def check_p_zero(sub, rng):
    for shape in SHAPES:
        layer = _make(sub, rng, 0.0, "inverted")
        x, g = _inputs(rng, shape), rng.standard_normal(shape)
        expect_close(_output(layer, x, "training forward output (p=0)"), x, "training forward output (p=0)",
                     f"x {x.shape}")
        expect_close(layer.backward(g.copy()), g, "backward's dLoss/dx (p=0)", f"x, grad {shape}")


def _checks(scaling: str) -> tuple[Check, ...]:
    inverted = scaling == "inverted"
    return (
        Check("training: each output is 0 or " + ("x / (1 - p) (inverted scaling)" if inverted else "x (no scaling)"),
              2, partial(check_training_output, scaling=scaling)),
        Check(f"training: the drop rate is p within {SIGMAS:g} sigma over {int(np.prod(RATE_SHAPE))} units", 2,
              partial(check_drop_rate, scaling=scaling)),
        Check("training: a fresh mask for every example and every forward pass", 1,
              partial(check_fresh_masks, scaling=scaling)),
        Check("backward uses forward's mask: 0 where forward dropped, " + ("g / (1 - p)" if inverted else "g")
              + " elsewhere", 3, partial(check_backward_mask, scaling=scaling)),
        Check("eval mode is the identity (forward and backward)" if inverted
              else "eval mode scales by alpha = 1 - p: y = alpha x, dLoss/dx = alpha g", 2 if not inverted else 1,
              partial(check_eval, scaling=scaling)),
    )


ASSIGNMENTS = (
    Assignment("dropout", "Dropout(p): inverted dropout, y = m x / (1 - p) in training and the identity in eval",
               nn.Dropout, _checks("inverted") + (Check("p = 0 is the identity", 1, check_p_zero),)),
    Assignment("dropout-classic", "Dropout(p, scaling=\"test\"): the lecture's classic dropout, y = m x in "
               "training and alpha x (alpha = 1 - p) at test time", nn.Dropout, _checks("test")),
)
