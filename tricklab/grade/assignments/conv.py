"""``conv2d``: Conv2d's forward (a cross-correlation, as torch), its input gradient and its weight
and bias gradients, with integer stride and zero padding (dilation 1, groups 1).

On x (N, C, H, W) padded by p zeros on each side (xp), weight w (O, C, k, k), bias b (O,)::

    H' = floor((H + 2p - k) / s) + 1                       (likewise W')
    y[n, o, i, j]   = b[o] + sum_{c, u, v} w[o, c, u, v] xp[n, c, s i + u, s j + v]
    dLoss/db[o]     = sum_{n, i, j} gy[n, o, i, j]
    dLoss/dw[o, c, u, v] = sum_{n, i, j} gy[n, o, i, j] xp[n, c, s i + u, s j + v]
    dLoss/dxp[n, c, a, e] = sum_{o, u, v; s i + u = a, s j + v = e} gy[n, o, i, j] w[o, c, u, v]

and dLoss/dx is dLoss/dxp without its border. Besides tricklab's Conv2d, the student's backward is
compared with central differences of the student's own forward: L = sum(gy * y) is linear in each
of x, w and b, so the differences are exact up to rounding. The known mistakes' outputs are
computed from the same inputs (a convolution is the correlation with the flipped kernel), so a hint
appears only when the student's numbers, or the output's shape, equal one of them.
"""

from __future__ import annotations

import numpy as np

from ... import nn
from ..core import Assignment, CheckFailure, Check, expect, expect_close

# (N, C, H, W, out_channels, kernel, stride, padding); every wrong size formula below gives another shape
PLAIN = [(2, 1, 5, 5, 2, 3, 1, 0), (1, 3, 4, 6, 2, 2, 1, 0), (3, 2, 6, 5, 4, 3, 1, 0)]
STRIDED = [(2, 2, 7, 6, 3, 3, 2, 1), (3, 2, 9, 5, 4, 5, 3, 2), (1, 3, 9, 7, 2, 3, 2, 0)]
FD_SHAPES = [(2, 2, 5, 4, 3, 3, 2, 1), (1, 1, 4, 4, 2, 2, 1, 0)]
FD_STEP = 1e-3

HINT_FLIPPED = ("Conv2d is a cross-correlation, as in torch: y = sum w[o, c, u, v] x[n, c, s i + u, s j + v]; "
                "yours flips the kernel (a convolution: w[:, :, ::-1, ::-1])")
HINT_DX_FLIPPED = ("dLoss/dx is the transposed convolution: each gy[n, o, i, j] w[o] added back onto the window "
                   "it came from (gy correlated with the flipped kernel); yours uses the kernel flipped the other "
                   "way round")


# --------------------------------------------------------------------------- the reference, for the mistakes
def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def size_mistakes(size: int, kernel: int, stride: int, padding: int) -> dict[str, int]:
    """{hint: the output size a known mistake gives} along one axis."""
    return {"H' = floor((H + 2p - k) / s) + 1 rounds down; yours rounds up":
            -(-(size + 2 * padding - kernel) // stride) + 1,
            "H' = floor((H + 2p - k) / s) + 1; yours leaves out the stride": size + 2 * padding - kernel + 1,
            "H' = floor((H + 2p - k) / s) + 1; yours leaves out the padding": (size - kernel) // stride + 1,
            "H' = floor((H + 2p - k) / s) + 1: the padding is added on both sides; yours adds it once":
            (size + padding - kernel) // stride + 1}


def _reference(case, w, b):
    """tricklab's Conv2d of ``case`` in float64 with weight ``w`` and bias ``b``."""
    _, c, _, _, o, k, s, p = case
    layer = nn.Conv2d(c, o, k, stride=s, padding=p, dtype=np.float64)
    layer.weight.data[...], layer.bias.data[...] = w, b
    return layer


def _flipped(w):
    return w[:, :, ::-1, ::-1]


def _describe(case) -> str:
    n, c, h, w, o, k, s, p = case
    return f"x ({n}, {c}, {h}, {w}), Conv2d({c}, {o}, {k}, stride={s}, padding={p})"


# --------------------------------------------------------------------------- building the layers
def conv_pair(sub, rng, case):
    """The student's layer and the reference for ``case``, with the same random weight and bias."""
    _, c, _, _, o, k, s, p = case
    seed = int(rng.integers(2**31))
    mine, ref = sub.make(c, o, k, stride=s, padding=p, rng=seed), sub.ref(c, o, k, stride=s, padding=p, rng=seed)
    mine.weight.data[...] = rng.standard_normal((o, c, k, k))
    mine.bias.data[...] = rng.standard_normal(o)
    ref.weight.data[...], ref.bias.data[...] = mine.weight.data, mine.bias.data
    return mine, ref


def _inputs(rng, case):
    """x (N, C, H, W) and an output gradient gy (N, O, H', W')."""
    n, c, h, w, o, k, s, p = case
    x = rng.standard_normal((n, c, h, w))
    return x, rng.standard_normal((n, o, output_size(h, k, s, p), output_size(w, k, s, p)))


def _zero_grads(*layers):
    for layer in layers:
        layer.weight.grad[...] = 0.0
        layer.bias.grad[...] = 0.0


def expect_output_shape(y, case) -> None:
    """The shape of y (N, O, H', W'), with the hint of the size formula a wrong shape matches."""
    n, c, h, w, o, k, s, p = case
    want = (n, o, output_size(h, k, s, p), output_size(w, k, s, p))
    got = np.shape(y)
    if got == want:
        return
    rows, cols = size_mistakes(h, k, s, p), size_mistakes(w, k, s, p)
    hints = [hint for hint in rows if got == (n, o, rows[hint], cols[hint])]
    hint = f"\n  hint: {hints[0]}" if hints else ""
    raise CheckFailure(f"forward output y: shape {got}, expected {want} (inputs: {_describe(case)}){hint}")


# --------------------------------------------------------------------------- checks
def check_parameters(sub, rng):
    for case in PLAIN + STRIDED:
        _, c, _, _, o, k, s, p = case
        layer = sub.make(c, o, k, stride=s, padding=p, rng=0)
        what = f"Conv2d({c}, {o}, {k})"
        for name, shape in (("weight", (o, c, k, k)), ("bias", (o,))):
            param = getattr(layer, name, None)
            expect(param is not None and hasattr(param, "data") and hasattr(param, "grad"),
                   f"{what}.{name} must be a Parameter (with .data and .grad)")
            layout = " (out_channels, in_channels, kh, kw)" if name == "weight" else ""
            expect(param.data.shape == shape, f"{what}.{name} has shape {param.data.shape}, expected {shape}{layout}")


def _check_forward(sub, rng, cases):
    for case in cases:
        mine, ref = conv_pair(sub, rng, case)
        x, _ = _inputs(rng, case)
        y = mine(x.copy())
        expect_output_shape(y, case)
        w, b = mine.weight.data.copy(), mine.bias.data.copy()
        expect_close(y, ref(x), "forward output y", _describe(case),
                     mistakes={HINT_FLIPPED: _reference(case, _flipped(w), b)(x),
                               "the bias is missing: y = b[o] + sum w x": _reference(case, w, 0 * b)(x),
                               "yours flips the kernel (a convolution), and the bias is missing":
                               _reference(case, _flipped(w), 0 * b)(x)})


def check_forward(sub, rng):
    _check_forward(sub, rng, PLAIN)


def check_forward_strided(sub, rng):
    _check_forward(sub, rng, STRIDED)


def check_input_gradient(sub, rng):
    for case in PLAIN + STRIDED:
        mine, ref = conv_pair(sub, rng, case)
        x, g = _inputs(rng, case)
        mine(x.copy()), ref(x)
        wrong = _reference(case, _flipped(mine.weight.data), mine.bias.data)
        wrong(x)
        expect_close(mine.backward(g.copy()), ref.backward(g), "backward's dLoss/dx", f"{_describe(case)}, "
                     f"grad {g.shape}", mistakes={HINT_DX_FLIPPED: wrong.backward(g)})


def _expect_bias_grad(got, g, want, what, shapes):
    """bias.grad against ``want``; the hint of a sum over some of N, H', W' only, by shape or value."""
    got = np.asarray(got)
    for axes, name in (((0,), "N only"), ((2, 3), "H', W' only"), ((0, 2), "N, H' only"), ((0, 3), "N, W' only")):
        if got.shape == g.sum(axis=axes).shape != want.shape:
            raise CheckFailure(f"{what}: shape {got.shape}, expected {want.shape} (inputs: {shapes})\n  hint: "
                               f"dLoss/db[o] sums gy over N, H' and W'; yours sums over {name}")
    n, _, ho, wo = g.shape
    expect_close(got, want, what, shapes, mistakes={
        "dLoss/db[o] sums gy over N, H' and W'; yours is the mean": g.mean(axis=(0, 2, 3)),
        "dLoss/db[o] sums gy over N, H' and W'; yours averages over H', W'": g.sum(axis=(0, 2, 3)) / (ho * wo)
        if ho * wo > 1 else None,
        "dLoss/db[o] sums gy over N, H' and W' (the loss already averages); yours divides by the batch size":
        g.sum(axis=(0, 2, 3)) / n if n > 1 else None,
        "dLoss/db[o] sums gy over N, H' and W'; yours takes the first example only": g[0].sum(axis=(1, 2))
        if n > 1 else None})


def check_parameter_gradients(sub, rng):
    for case in PLAIN + STRIDED:
        mine, ref = conv_pair(sub, rng, case)
        x, g = _inputs(rng, case)
        _zero_grads(mine, ref)
        mine(x.copy()), ref(x)
        mine.backward(g.copy()), ref.backward(g)
        shapes = f"{_describe(case)}, grad {g.shape}"
        dw = ref.weight.grad
        expect_close(mine.weight.grad, dw, "weight.grad (dLoss/dw)", shapes,
                     mistakes={"dLoss/dw[o, c, u, v] = sum gy[n, o, i, j] x[n, c, s i + u, s j + v]; yours is "
                               "flipped (w[:, :, ::-1, ::-1])": _flipped(dw),
                               "dLoss/dw sums over the batch (the loss already averages); yours divides by the "
                               "batch size": dw / len(x) if len(x) > 1 else None})
        _expect_bias_grad(mine.bias.grad, g, ref.bias.grad, "bias.grad (dLoss/db)", shapes)


def check_gradients_accumulate(sub, rng):
    case = STRIDED[0]
    mine, ref = conv_pair(sub, rng, case)
    _zero_grads(mine, ref)
    for _ in range(2):
        x, g = _inputs(rng, case)
        mine(x.copy()), ref(x)
        mine.backward(g.copy()), ref.backward(g)
    last = _reference(case, mine.weight.data, mine.bias.data)
    _zero_grads(last)
    last(x), last.backward(g)
    hint = "backward must add into .grad (+=), not overwrite it"
    expect_close(mine.weight.grad, ref.weight.grad, "weight.grad after two backward passes",
                 f"two batches of {_describe(case)}", mistakes={hint: last.weight.grad})
    expect_close(mine.bias.grad, ref.bias.grad, "bias.grad after two backward passes",
                 f"two batches of {_describe(case)}", mistakes={hint: last.bias.grad})


def central_differences(loss, array: np.ndarray, step: float = FD_STEP) -> np.ndarray:
    """(loss(a + h e_i) - loss(a - h e_i)) / 2h for every entry i of ``array``, perturbed in place and restored."""
    grad = np.zeros_like(array)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + step
        up = loss()
        flat[i] = keep - step
        down = loss()
        flat[i] = keep
        out[i] = (up - down) / (2 * step)
    return grad


def check_finite_differences(sub, rng):
    for case in FD_SHAPES:
        mine, _ = conv_pair(sub, rng, case)
        x, g = _inputs(rng, case)
        _zero_grads(mine)
        mine(x.copy())
        dx = np.array(mine.backward(g.copy()), dtype=np.float64)
        dw, db = np.array(mine.weight.grad, dtype=np.float64), np.array(mine.bias.grad, dtype=np.float64)

        def loss():
            return float(np.sum(g * np.asarray(mine(x.copy()), dtype=np.float64)))

        shapes = f"{_describe(case)}, L = sum(gy * y), step {FD_STEP:g}"
        expect_close(dx, central_differences(loss, x), "your dLoss/dx against finite differences of your forward",
                     shapes)
        expect_close(dw, central_differences(loss, mine.weight.data),
                     "your weight.grad against finite differences of your forward", shapes)
        expect_close(db, central_differences(loss, mine.bias.data),
                     "your bias.grad against finite differences of your forward", shapes)


ASSIGNMENTS = (
    Assignment("conv2d", "Conv2d(in_channels, out_channels, kernel_size, stride, padding): the cross-correlation "
               "forward and its three backward products (integer stride and zero padding; dilation 1, groups 1)",
               nn.Conv2d, (
                   Check("weight (O, C, kh, kw) and bias (O,) are Parameters", 1, check_parameters),
                   Check("forward: y = b + sum w x, a cross-correlation (stride 1, no padding)", 2, check_forward),
                   Check("forward with stride and padding: H' = floor((H + 2p - k) / s) + 1", 2,
                         check_forward_strided),
                   Check("backward: dLoss/dx, the transposed convolution", 3, check_input_gradient),
                   Check("backward: dLoss/dw (input correlated with gy), dLoss/db = sum of gy over N, H', W'", 3,
                         check_parameter_gradients),
                   Check("backward adds into .grad (gradients accumulate)", 1, check_gradients_accumulate),
                   Check("backward agrees with finite differences of your own forward (float64)", 2,
                         check_finite_differences),
               )),
)
