"""First-order rounding-error bounds of an MLP's forward and backward pass, for parity tolerances.

A value v computed in floating point with unit roundoff u (2^-24 for float32, 2^-53 for float64)
is carried as a :class:`Bounded` pair (v, e): v is the exact value (computed in float64) and e a
bound such that, to first order in u, the floating-point result lies within u e of v. The rules
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., sections 2.2 and 3.1: each
operation rounds once, fl(a op b) = (a op b)(1 + delta), |delta| <= u) are::

    a + b, a - b    e = e_a + e_b + |a +- b|
    a * b           e = e_a |b| + |a| e_b + |a b|
    a / b           e = e_a / |b| + |a| e_b / b^2 + |a / b|
    sqrt(a)         e = e_a / (2 sqrt(a)) + sqrt(a)
    sum_k a_k       e = sum_k e_k + (n - 1) sum_k |a_k|            (gamma_{n-1}: any order)
    A @ B           e = e_A |B| + |A| e_B + n |A| |B|              (gamma_n, n = inner size, FMA or not)
    f(a)            e = |f'(a)| e_a + ULP_FACTOR m_f               (a library function, m_f its terms)
    relu(a)         e = e_a unless a < -SAFETY u e_a (then both results are exactly 0)

so e is the sum of the |terms| that make up each entry (|x|^T |g| for a weight gradient), with
the errors of the inputs carried through every layer (the depth factor is not guessed, it is
accumulated). Sums are bounded for any order and precision of accumulation, so the bound covers
NumPy, the numba kernels and torch alike. Where a ReLU's input is within its own error of 0 the
mask may differ between two correct computations: that gradient entry gets the whole |g| / u.

Comparisons allow ``SAFETY * u * e`` for the result under test plus ``SAFETY * u64 * e`` for the
float64 reference; the factor 2 covers the neglected second-order terms and formulas that differ
from the one modelled by one rounding per term (torch writes batch norm's backward with
(z - mu) inv_std^2 where tricklab writes u = (z - mu) inv_std). A real bug is not hidden by this:
an error of 1e-3 relative to a gradient exceeds the bound on most draws (checked by injection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tricklab import nn

SAFETY = 2.0
ULP_FACTOR = 8.0  # tanh, exp within 4 ulps (8 u) of the exact result: NumPy's SIMD float32 tanh allows 2 ulps
UNIT = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}


@dataclass(frozen=True)
class Bounded:
    """Exact value ``v`` and first-order error bound ``e`` (in units of u) of a floating-point result."""

    v: np.ndarray
    e: np.ndarray

    def __add__(self, other):
        other = exact(other)
        v = self.v + other.v
        return Bounded(v, self.e + other.e + np.abs(v))

    def __sub__(self, other):
        other = exact(other)
        v = self.v - other.v
        return Bounded(v, self.e + other.e + np.abs(v))

    def __mul__(self, other):
        other = exact(other)
        v = self.v * other.v
        return Bounded(v, self.e * np.abs(other.v) + np.abs(self.v) * other.e + np.abs(v))

    def __truediv__(self, other):
        other = exact(other)
        v = self.v / other.v
        return Bounded(v, self.e / np.abs(other.v) + np.abs(self.v) * other.e / other.v**2 + np.abs(v))

    def __matmul__(self, other):
        n = self.v.shape[-1]
        a, b = np.abs(self.v), np.abs(other.v)
        return Bounded(self.v @ other.v, self.e @ b + a @ other.e + n * (a @ b))

    @property
    def T(self):
        return Bounded(self.v.T, self.e.T)

    def sum(self, axis: int):
        n = self.v.shape[axis]
        return Bounded(self.v.sum(axis), self.e.sum(axis) + (n - 1) * np.abs(self.v).sum(axis))

    def mean(self, axis: int):
        return self.sum(axis) / self.v.shape[axis]


def exact(value) -> Bounded:
    """A value held exactly (float32 weights, inputs and gradients widened to float64)."""
    if isinstance(value, Bounded):
        return value
    v = np.asarray(value, dtype=np.float64)
    return Bounded(v, np.zeros_like(v))


def rounded(constant: float) -> Bounded:
    """A constant such as eps or momentum, rounded once to the working precision."""
    v = np.asarray(constant, dtype=np.float64)
    return Bounded(v, np.abs(v))


def sqrt(a: Bounded) -> Bounded:
    v = np.sqrt(a.v)
    return Bounded(v, a.e / (2 * v) + v)


def tanh(a: Bounded) -> Bounded:
    v = np.tanh(a.v)
    return Bounded(v, (1 - v**2) * a.e + ULP_FACTOR * np.abs(v))


def sigmoid(a: Bounded) -> Bounded:
    """Terms (1 + |tanh(z/2)|) / 2, tricklab's form; they also bound torch's 1 / (1 + exp(-z))."""
    t = np.tanh(a.v / 2)
    v = (1 + t) / 2
    return Bounded(v, v * (1 - v) * a.e + ULP_FACTOR * (1 + np.abs(t)) / 2)


def relu(a: Bounded, unit: float) -> tuple[Bounded, np.ndarray, np.ndarray]:
    """max(0, a), the mask a > 0 and where that mask is uncertain (a within its error of 0)."""
    uncertain = np.abs(a.v) <= SAFETY * unit * a.e
    kept = a.v > 0
    return Bounded(np.maximum(a.v, 0), np.where(kept | uncertain, a.e, 0.0)), kept, uncertain


# ----------------------------------------------------------------------------- the MLP's passes
def _linear(m: nn.Linear, x: Bounded):
    w = exact(m.weight.data)
    z = x @ w.T
    if m.bias is not None:
        z = z + exact(m.bias.data)

    def backward(g: Bounded, grads: dict, prefix: str) -> Bounded:
        grads[prefix + "weight"] = g.T @ x
        if m.bias is not None:
            grads[prefix + "bias"] = g.sum(axis=0)
        return g @ w

    return z, backward


def _batchnorm(m: nn.BatchNorm1d, z: Bounded):
    if m.units is not None or not m.training:
        raise TypeError("rounding bounds model BatchNorm1d on all units with batch statistics only")
    B = z.v.shape[0]
    mu = z.mean(axis=0)
    d = z - mu
    var = (d * d).mean(axis=0)
    inv_std = exact(1.0) / sqrt(var + rounded(m.eps))
    u = d * inv_std
    gamma = exact(m.weight.data) if m.affine else exact(np.ones(z.v.shape[1]))
    out = u * gamma + exact(m.bias.data) if m.affine else u
    f = 1.0 / (int(m.num_batches_tracked) + 1) if m.momentum is None else m.momentum
    buffers = {"running_mean": rounded(1 - f) * exact(m.running_mean) + rounded(f) * mu,
               "running_var": rounded(1 - f) * exact(m.running_var) + rounded(f) * (var * rounded(B / (B - 1)))}

    def backward(g: Bounded, grads: dict, prefix: str) -> Bounded:
        sum_g, sum_gu = g.sum(axis=0), (g * u).sum(axis=0)
        if m.affine:
            grads[prefix + "weight"], grads[prefix + "bias"] = sum_gu, sum_g
        return gamma * inv_std * (g - sum_g / B - u * (sum_gu / B))

    return out, backward, buffers


def _activation(m: nn.Module, z: Bounded, unit: float):
    if isinstance(m, nn.Identity):
        return z, lambda g, grads, prefix: g
    if isinstance(m, nn.ReLU):
        y, kept, uncertain = relu(z, unit)

        def relu_backward(g: Bounded, grads: dict, prefix: str) -> Bounded:
            e = np.where(kept, g.e, 0.0) + np.where(uncertain, g.e + np.abs(g.v) / unit, 0.0)
            return Bounded(np.where(kept, g.v, 0.0), e)

        return y, relu_backward
    if isinstance(m, nn.Sigmoid):
        y = sigmoid(z)
        return y, lambda g, grads, prefix: g * (y * (exact(1.0) - y))
    if isinstance(m, nn.Tanh):
        y = tanh(z)
        return y, lambda g, grads, prefix: g * (exact(1.0) - y * y)
    raise TypeError(f"no rounding model for {type(m).__name__}")


def mlp_bounds(model: nn.Sequential, x: np.ndarray, gy: np.ndarray) -> dict[str, Bounded]:
    """Exact values and bounds of the output, the input gradient, every parameter gradient and buffer.

    Call it before the model's own forward pass: the running statistics are read as they were.

    ``model`` is a Sequential of Linear, BatchNorm1d (training), ReLU, Sigmoid, Tanh and Identity
    layers; keys are ``"output"``, ``"input_grad"`` and the names of ``named_parameters`` and
    ``named_buffers`` (num_batches_tracked is exact and left out).
    """
    unit = UNIT[model.dtype]
    h, backwards, out = exact(x), [], {}
    for name, layer in model._modules.items():
        if isinstance(layer, nn.Linear):
            h, backward = _linear(layer, h)
        elif isinstance(layer, nn.BatchNorm1d):
            h, backward, buffers = _batchnorm(layer, h)
            out.update({f"{name}.{k}": b for k, b in buffers.items()})
        else:
            h, backward = _activation(layer, h, unit)
        backwards.append((f"{name}.", backward))
    out["output"] = h
    g = exact(gy)
    for prefix, backward in reversed(backwards):
        g = backward(g, out, prefix)
    out["input_grad"] = g
    return out


def assert_within_bound(actual, reference, bound: Bounded, unit: float, name: str) -> None:
    """|actual - reference| <= SAFETY (unit + u64) e, entry by entry, with the worst entry reported."""
    actual, reference = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    allowed = SAFETY * (unit + UNIT[np.dtype(np.float64)]) * bound.e
    excess = np.abs(actual - reference) - allowed
    if excess.size and excess.max() > 0:
        i = np.unravel_index(np.argmax(excess), excess.shape)
        raise AssertionError(
            f"{name}{list(map(int, i))}: {actual[i]:.9g} against the float64 reference {reference[i]:.9g}, "
            f"|diff| {abs(actual[i] - reference[i]):.3g} > rounding bound {allowed[i]:.3g}")
