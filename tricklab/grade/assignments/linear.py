"""``linear``: the affine layer y = x W^T + b, its input gradient and its parameter gradients."""

from __future__ import annotations

import numpy as np

from ... import nn
from ..core import Assignment, Check, expect, expect_close

SHAPES = [(1, 3, 2), (2, 5, 4), (7, 4, 6)]  # (batch, in_features, out_features), batch 1 and 2 included


def linear_pair(sub, rng, n_in, n_out, *args):
    """The student's layer and the reference, both built as ``(n_in, n_out, *args)`` (LinearSGD's
    ``args``: its lr), with the same weights."""
    seed = int(rng.integers(2**31))
    mine, ref = sub.make(n_in, n_out, *args, rng=seed), sub.ref(n_in, n_out, *args, rng=seed)
    mine.weight.data[...] = rng.standard_normal((n_out, n_in))
    mine.bias.data[...] = rng.standard_normal(n_out)
    ref.weight.data[...], ref.bias.data[...] = mine.weight.data, mine.bias.data
    return mine, ref


def check_layer_parameters(sub, args: tuple = (), call: str = "Linear({n_in}, {n_out})"):
    """weight (n_out, n_in) and bias (n_out,) are Parameters of the layer built as ``(n_in, n_out,
    *args)``; ``call`` names that layer in the messages."""
    for _, n_in, n_out in SHAPES:
        layer = sub.make(n_in, n_out, *args, rng=0)
        what = call.format(n_in=n_in, n_out=n_out)
        for name, shape in (("weight", (n_out, n_in)), ("bias", (n_out,))):
            p = getattr(layer, name, None)
            expect(p is not None and hasattr(p, "data") and hasattr(p, "grad"),
                   f"{what}.{name} must be a Parameter (with .data and .grad)")
            expect(p.data.shape == shape, f"{what}.{name} has shape {p.data.shape}, expected {shape}")


def check_layer_forward(sub, rng, args: tuple = ()):
    """y = x W^T + b from the layer built as ``(n_in, n_out, *args)``, against the reference."""
    for batch, n_in, n_out in SHAPES:
        mine, ref = linear_pair(sub, rng, n_in, n_out, *args)
        x = rng.standard_normal((batch, n_in))
        expect_close(mine(x.copy()), ref(x), "forward output y", f"x {x.shape}, W {mine.weight.data.shape}",
                     mistakes={"the bias is missing: y = x W^T + b": x @ mine.weight.data.T})


def check_parameters(sub, rng):
    check_layer_parameters(sub)


def check_forward(sub, rng):
    check_layer_forward(sub, rng)


def check_input_gradient(sub, rng):
    for batch, n_in, n_out in SHAPES:
        mine, ref = linear_pair(sub, rng, n_in, n_out)
        x, g = rng.standard_normal((batch, n_in)), rng.standard_normal((batch, n_out))
        mine(x.copy()), ref(x)
        expect_close(mine.backward(g.copy()), ref.backward(g), "backward's dLoss/dx", f"x {x.shape}, grad {g.shape}")


def _zero_grads(*layers):
    for layer in layers:
        for p in (layer.weight, layer.bias):
            p.grad[...] = 0.0


def check_parameter_gradients(sub, rng):
    for batch, n_in, n_out in SHAPES:
        mine, ref = linear_pair(sub, rng, n_in, n_out)
        x, g = rng.standard_normal((batch, n_in)), rng.standard_normal((batch, n_out))
        _zero_grads(mine, ref)
        mine(x.copy()), ref(x)
        mine.backward(g.copy()), ref.backward(g)
        shapes = f"x {x.shape}, grad {g.shape}"
        expect_close(mine.weight.grad, ref.weight.grad, "weight.grad (dLoss/dW)", shapes,
                     mistakes={"dL/dW = g^T x sums over the batch (the loss already averages); yours divides by "
                               "the batch size": g.T @ x / batch if batch > 1 else None})
        expect_close(mine.bias.grad, ref.bias.grad, "bias.grad (dLoss/db)", shapes,
                     mistakes={"dL/db sums g over the batch; yours is the mean": g.mean(axis=0) if batch > 1 else None})


def check_gradients_accumulate(sub, rng):
    _, n_in, n_out = SHAPES[1]
    mine, ref = linear_pair(sub, rng, n_in, n_out)
    _zero_grads(mine, ref)
    for _ in range(2):
        x, g = rng.standard_normal((3, n_in)), rng.standard_normal((3, n_out))
        mine(x.copy()), ref(x)
        mine.backward(g.copy()), ref.backward(g)
    expect_close(mine.weight.grad, ref.weight.grad, "weight.grad after two backward passes", "two batches of x (3, 5)",
                 mistakes={"backward must add into weight.grad (+=), not overwrite it": g.T @ x})


ASSIGNMENTS = (
    Assignment("linear", "Linear(in_features, out_features): forward y = x W^T + b and backward", nn.Linear, (
        Check("weight and bias are Parameters of the right shapes", 1, check_parameters),
        Check("forward: y = x W^T + b", 2, check_forward),
        Check("backward: dLoss/dx = g W", 2, check_input_gradient),
        Check("backward: dLoss/dW = g^T x, dLoss/db = sum of g over the batch", 3, check_parameter_gradients),
        Check("backward adds into .grad (gradients accumulate)", 1, check_gradients_accumulate),
    )),
)
