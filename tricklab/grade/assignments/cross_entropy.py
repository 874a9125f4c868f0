"""``softmax-cross-entropy``: CrossEntropyLoss on logits z (batch, C) and integer classes d (batch,).

    Loss = -(1/B) sum_t log softmax(z_t)[d_t]        (forward returns it as a float)
    dLoss/dz_t = (softmax(z_t) - onehot(d_t)) / B    (backward() returns it, shape (B, C))

computed without overflow for logits of any size: softmax of z - max(z), and log softmax as
(z - max z) - log sum exp(z - max z) rather than the log of a softmax that underflowed to 0.
"""

from __future__ import annotations

import numpy as np

from ... import nn
from ...nn.loss import log_softmax
from ..core import Assignment, Check, expect_close
from .activations import no_float_errors

SHAPES = [(1, 3), (2, 5), (6, 4)]  # (batch, classes), batch 1 and 2 included
SHIFT_HINT = ("softmax of logits shifted by their max: exp(z - max z) lies in (0, 1] and never overflows, and "
              "softmax(z - max z) = softmax(z)")
LOG_HINT = ("the log of a softmax that underflowed to 0 is -inf: compute log softmax(z) = (z - max z) - "
            "log sum_j exp(z_j - max z) directly")


def _batch(rng, batch, classes):
    return 2.0 * rng.standard_normal((batch, classes)), rng.integers(classes, size=batch)


def _per_example(z, d):
    return -log_softmax(z)[np.arange(len(d)), d]


def _onehot(d, classes):
    return np.eye(classes)[d]


def _shapes(z, d) -> str:
    return f"logits {z.shape}, target {d.shape}"


def loss_mistakes(z, d):
    per_example, batch = _per_example(z, d), len(d)
    return {"the loss is the mean over the batch, yours is the sum": per_example.sum() if batch > 1 else None,
            "forward returns one number, the mean over the batch; yours returns one loss per example": per_example,
            "the loss is -log softmax(z)[d]; yours has the opposite sign": -per_example.mean(),
            "the mean is over the batch only (divide by B); yours divides by B * C too":
                per_example.mean() / z.shape[1]}


def gradient_mistakes(z, d):
    p, onehot, batch = np.exp(log_softmax(z)), _onehot(d, z.shape[1]), len(d)
    return {"the gradient is divided by the batch size B: (softmax - onehot) / B": p - onehot if batch > 1 else None,
            "dLoss/dz = (softmax - onehot) / B; yours leaves out the one-hot target": p / batch,
            "dLoss/dz = (softmax - onehot) / B; yours has the opposite sign": (onehot - p) / batch}


def check_loss(sub, rng):
    for batch, classes in SHAPES:
        z, d = _batch(rng, batch, classes)
        expect_close(sub.make()(z.copy(), d.copy()), sub.ref()(z, d), "forward's loss", _shapes(z, d),
                     loss_mistakes(z, d))


def check_gradient(sub, rng):
    for batch, classes in SHAPES:
        z, d = _batch(rng, batch, classes)
        mine, ref = sub.make(), sub.ref()
        mine(z.copy(), d.copy()), ref(z, d)
        expect_close(mine.backward(), ref.backward(), "backward's dLoss/dlogits", _shapes(z, d),
                     gradient_mistakes(z, d))


def _compare_without_float_errors(sub, z, d, what: str, hint: str):
    mine, ref = sub.make(), sub.ref()
    shapes = f"{_shapes(z, d)}, {what}"
    loss = no_float_errors(sub, f"forward with {what}", hint, lambda: mine(z.copy(), d.copy()))
    expect_close(loss, ref(z, d), "forward's loss", shapes, loss_mistakes(z, d))
    grad = no_float_errors(sub, f"backward with {what}", hint, mine.backward)
    expect_close(grad, ref.backward(), "backward's dLoss/dlogits", shapes, gradient_mistakes(z, d))


# batch 1 below, where the mean and the sum agree: these checks are about large logits only
def check_large_logits(sub, rng):
    for offset in (1000.0, -1000.0):  # exp(1000) overflows; exp(-1000) underflows to 0, and 0 / 0 is NaN
        z, d = _batch(rng, 1, 5)
        _compare_without_float_errors(sub, z + offset, d, f"logits near {offset:g}", SHIFT_HINT)


def check_small_target_probability(sub, rng):
    for classes in (2, 4):
        z, d = _batch(rng, 1, classes)
        z[0, d[0]] -= 800.0  # softmax(z)[d] ~ exp(-800) underflows to 0
        _compare_without_float_errors(sub, z, d, "the target's logit 800 below the others", LOG_HINT)


ASSIGNMENTS = (
    Assignment("softmax-cross-entropy", "CrossEntropyLoss: forward(logits, target) returns the mean of "
               "-log softmax(z)[d] over the batch, backward() returns (softmax(z) - onehot(d)) / B",
               nn.CrossEntropyLoss, (
        Check("forward: the mean over the batch of -log softmax(z)[d], a float", 2, check_loss),
        Check("backward: dLoss/dz = (softmax(z) - onehot(d)) / B", 2, check_gradient),
        Check("logits near 1000 and -1000: softmax of z - max(z), no overflow, no NaN", 2, check_large_logits),
        Check("a target probability that underflows: log softmax computed directly, finite loss", 1,
              check_small_target_probability),
    )),
)
