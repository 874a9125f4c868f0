"""``gradient-order``: a Linear layer that takes its own SGD step in backward, graded on the order
of the backward pass (the lecture's correction to Project 1's layers.py).

The course's layers.py has each layer update its own weights during backward. The handout said:
compute the gradient, update the weights, then compute grad_for_next. That is wrong, and the
lecture corrects it: grad_for_next (dLoss/dx, the previous layer's gradient) must be computed with
the weights of the forward pass, before any update, because the loss was computed with those weights::

    dx = g W          (W of the forward pass)      right
    W <- W - lr dW;  dx = g W   (the new W)         wrong: the previous layer descends a gradient
                                                    of a loss that no forward pass computed

The assignment hands out ``LinearSGD(in_features, out_features, lr)`` (starter:
``tricklab assignment new gradient-order DIR``). Its backward returns dx and updates W and b
with this batch's gradient. The checks compare one layer's dx and its updated weights with the
reference, and then train a two-layer model (Linear, tanh, Linear, squared error) for a few
steps, where the first layer's weights show whether the second layer handed back dx computed
with the forward pass's weights.
"""

from __future__ import annotations

import numpy as np

from ... import nn
from ..core import Assignment, Check, expect_close
from .linear import SHAPES, check_layer_forward, check_layer_parameters, linear_pair

LR = 0.1
WRONG_ORDER = ("the previous layer's gradient must use the weights of the forward pass: compute dx = g W "
               "first and update the weights only after it (the lecture's correction)")


class LinearSGD(nn.Linear):
    """A fully connected layer that takes its own SGD step in backward (the course's layers.py).

    Shapes: x (batch, in_features), W (out_features, in_features), b (out_features,).
    Forward: y = x W^T + b. Backward, with g = dLoss/dy, in this order::

        dx = g W                    (with W as it was in the forward pass: BEFORE the update)
        dW = g^T x,  db = sum of g over the batch
        W <- W - lr * dW,  b <- b - lr * db     (this batch's gradient only)
        return dx

    ``weight`` and ``bias`` are Parameters. Each update uses this batch's gradient only: if backward
    adds dW into ``weight.grad``, it sets ``.grad`` back to zero after the step.
    """

    def __init__(self, in_features, out_features, lr, rng=None, dtype=None):
        super().__init__(in_features, out_features, rng=rng, dtype=dtype)
        self.lr = lr

    def backward(self, grad_output):
        grad_input = super().backward(grad_output)  # dx with the forward pass's W; dW, db into .grad
        for p in (self.weight, self.bias):
            p.data -= self.lr * p.grad
            p.grad[...] = 0
        return grad_input


def _pair(sub, rng, n_in, n_out):
    """The student's LinearSGD and the reference with the same weights."""
    return linear_pair(sub, rng, n_in, n_out, LR)


def check_parameters(sub, rng):
    check_layer_parameters(sub, (LR,), "LinearSGD({n_in}, {n_out}, lr)")


def check_forward(sub, rng):
    check_layer_forward(sub, rng, (LR,))


def check_input_gradient(sub, rng):
    for batch, n_in, n_out in SHAPES:
        mine, ref = _pair(sub, rng, n_in, n_out)
        x, g = rng.standard_normal((batch, n_in)), rng.standard_normal((batch, n_out))
        w_new = mine.weight.data - LR * g.T @ x
        mine(x.copy()), ref(x)
        expect_close(mine.backward(g.copy()), ref.backward(g), "backward's dLoss/dx", f"x {x.shape}, grad {g.shape}",
                     mistakes={WRONG_ORDER: g @ w_new})


def check_update(sub, rng):
    for batch, n_in, n_out in SHAPES:
        mine, ref = _pair(sub, rng, n_in, n_out)
        x, g = rng.standard_normal((batch, n_in)), rng.standard_normal((batch, n_out))
        w, b = mine.weight.data.copy(), mine.bias.data.copy()
        mine(x.copy()), ref(x)
        mine.backward(g.copy()), ref.backward(g)
        shapes = f"x {x.shape}, grad {g.shape}, lr {LR}"
        expect_close(mine.weight.data, ref.weight.data, "weight after backward (W - lr g^T x)", shapes,
                     mistakes={"the step goes against the gradient: W <- W - lr * dW": w + LR * g.T @ x,
                               "the weights are not updated: backward ends with W <- W - lr * g^T x": w,
                               "dW = g^T x sums over the batch (the loss already averages); yours divides by "
                               "the batch size": w - LR * g.T @ x / batch if batch > 1 else None})
        expect_close(mine.bias.data, ref.bias.data, "bias after backward (b - lr sum of g)", shapes,
                     mistakes={"the bias is not updated: b <- b - lr * (sum of g over the batch)": b,
                               "db sums g over the batch; yours is the mean": b - LR * g.mean(axis=0)
                               if batch > 1 else None})


def _train(layers, xs, targets):
    """``path[t]``: [W1, b1, W2, b2] after step t+1 of training ``layers`` (two LinearSGD) as
    layer 1, tanh, layer 2 on the loss 0.5 ||y - target||^2, whose gradient is g = y - target."""
    path = []
    for x, target in zip(xs, targets):
        h = np.tanh(layers[0](x))
        g = layers[1](h) - target
        dh = layers[1].backward(g)
        layers[0].backward(dh * (1 - h * h))
        path.append([np.array(p.data, dtype=np.float64) for layer in layers for p in (layer.weight, layer.bias)])
    return path


class _Mistake:
    """A NumPy LinearSGD with a known mistake: dx from the updated weights (``dx_after_update``), or
    an update with the gradient accumulated over every backward so far (``accumulate``)."""

    class _P:
        def __init__(self, data):
            self.data = data.copy()

    def __init__(self, weight, bias, dx_after_update=False, accumulate=False):
        self.weight, self.bias = self._P(weight), self._P(bias)
        self.dx_after_update, self.accumulate = dx_after_update, accumulate
        self.gw, self.gb = np.zeros_like(weight), np.zeros_like(bias)

    def __call__(self, x):
        self.x = x
        return x @ self.weight.data.T + self.bias.data

    def backward(self, g):
        dx = g @ self.weight.data
        gw, gb = g.T @ self.x, g.sum(axis=0)
        if self.accumulate:
            self.gw, self.gb = self.gw + gw, self.gb + gb
            gw, gb = self.gw, self.gb
        self.weight.data = self.weight.data - LR * gw
        self.bias.data = self.bias.data - LR * gb
        return g @ self.weight.data if self.dx_after_update else dx


def check_two_layer_training(sub, rng):
    sizes, steps, batch = (4, 5, 3), 3, 2
    pairs = [_pair(sub, rng, n_in, n_out) for n_in, n_out in zip(sizes, sizes[1:])]
    mine, ref = [m for m, _ in pairs], [r for _, r in pairs]
    xs = [rng.standard_normal((batch, sizes[0])) for _ in range(steps)]
    targets = [rng.standard_normal((batch, sizes[-1])) for _ in range(steps)]
    start = [(layer.weight.data, layer.bias.data) for layer in mine]
    wrong = {hint: _train([_Mistake(w, b, **how) for w, b in start], xs, targets) for hint, how in (
        (WRONG_ORDER, dict(dx_after_update=True)),
        ("each backward must update with this batch's gradient: zero .grad after the step (or don't accumulate "
         "it across backward calls)", dict(accumulate=True)))}
    got, want = _train(mine, [x.copy() for x in xs], targets), _train(ref, xs, targets)
    names = ("first layer's weight", "first layer's bias", "second layer's weight", "second layer's bias")
    for t in range(steps):
        for i, name in enumerate(names):
            expect_close(got[t][i], want[t][i], f"{name} after training step {t + 1}",
                         f"LinearSGD({sizes[0]}, {sizes[1]}, lr={LR}), tanh, LinearSGD({sizes[1]}, {sizes[2]}, "
                         f"lr={LR}), loss 0.5 ||y - target||^2, batches x ({batch}, {sizes[0]})",
                         mistakes={hint: path[t][i] for hint, path in wrong.items()})


ASSIGNMENTS = (
    Assignment("gradient-order", "LinearSGD(in_features, out_features, lr): a Linear layer whose backward "
               "returns dLoss/dx computed with the forward pass's weights, then takes its SGD step", LinearSGD, (
                   Check("weight and bias are Parameters of the right shapes", 1, check_parameters),
                   Check("forward: y = x W^T + b", 1, check_forward),
                   Check("backward returns dLoss/dx = g W with the weights of the forward pass", 3,
                         check_input_gradient),
                   Check("backward updates W <- W - lr g^T x and b <- b - lr sum of g", 2, check_update),
                   Check("two layers trained for 3 steps: the first layer learns from the forward pass's weights",
                         2, check_two_layer_training),
               )),
)
