"""Weight initialization: Xavier (Glorot), Kaiming (He), orthogonal via SVD, normal, zeros.

Each function returns a new array of the requested ``shape`` (weights are (fan_out, fan_in) as in
PyTorch's ``Linear``, convolution kernels (out, in/groups, kh, kw) as in its ``Conv2d``) drawn from ``rng`` (a ``numpy.random.Generator`` or a seed). The lecture's
key point about initialization: neurons with identical connections that are identically
initialized never diverge, so weights must be random; these schemes choose the scale so that
activations and gradients keep their variance from layer to layer.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from .._rng import RngLike, as_generator

_GAINS = {
    "linear": 1.0,
    "identity": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
}


def calculate_gain(nonlinearity: str = "linear", param: float | None = None) -> float:
    """Recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``.

    linear/sigmoid: 1, tanh: 5/3, relu: sqrt(2), leaky_relu(a): sqrt(2 / (1 + a^2)) with a = ``param``
    (0.01 if None). As torch, a slope that is not a number (a bool, a list, a string) is a
    ValueError; unlike torch, NumPy scalars count as numbers.
    """
    if nonlinearity == "leaky_relu":
        if param is not None and (isinstance(param, (bool, np.bool_)) or not isinstance(param, Real)):
            raise ValueError(f"calculate_gain: the leaky_relu negative slope must be a number, got {param!r}")
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity not in _GAINS:
        raise ValueError(f"nonlinearity must be one of {sorted(_GAINS) + ['leaky_relu']}, got {nonlinearity!r}")
    return _GAINS[nonlinearity]


def fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field (torch's rule).

    The receptive field is the product of shape[2:] (1 for a Linear weight): for a Conv2d kernel
    (out, in/groups, kh, kw), fan_in = in/groups * kh * kw and fan_out = out * kh * kw, as in torch
    (whose fan_out does not divide by groups either).
    """
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape, mode: str) -> int:
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def xavier_uniform(shape, gain: float = 1.0, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """Glorot & Bengio 2010: W ~ U[-a, a], a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return as_generator(rng).uniform(-a, a, size=shape).astype(dtype)


def xavier_normal(shape, gain: float = 1.0, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """Glorot & Bengio 2010: W ~ N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return (std * as_generator(rng).standard_normal(size=shape)).astype(dtype)


def kaiming_uniform(shape, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """He et al. 2015: W ~ U[-b, b], b = gain * sqrt(3 / fan), gain = ``calculate_gain(nonlinearity, a)``.

    The default nonlinearity is torch's, leaky_relu with slope ``a``: gain sqrt(2 / (1 + a^2)), so
    a = 0 is He's ReLU gain sqrt(2) and a = sqrt(5) gives b = 1/sqrt(fan_in), torch's Linear default.
    """
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(shape, mode))
    return as_generator(rng).uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_normal(shape, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                   rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """He et al. 2015: W ~ N(0, std^2), std = gain / sqrt(fan), the gain as in :func:`kaiming_uniform`."""
    gain = calculate_gain(nonlinearity, a)
    std = gain / math.sqrt(_fan(shape, mode))
    return (std * as_generator(rng).standard_normal(size=shape)).astype(dtype)


def orthogonal(shape, gain: float = 1.0, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """Saxe et al. 2014: W = gain * Q where Q has orthonormal rows or columns.

    Q comes from the SVD of a Gaussian matrix A = U S V^T: Q = U V^T is the orthogonal matrix
    nearest to A, with orthonormal rows when rows <= cols, else orthonormal columns. A kernel of
    more than 2 dimensions is Q of shape (shape[0], prod(shape[1:])) reshaped, as in torch.
    """
    if len(shape) < 2:
        raise ValueError(f"orthogonal init needs at least 2 dimensions, got shape {tuple(shape)}")
    rows, cols = shape[0], int(np.prod(shape[1:]))
    a = as_generator(rng).standard_normal((rows, cols))
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    return (gain * (u @ vt)).reshape(shape).astype(dtype)


def uniform(shape, low: float = 0.0, high: float = 1.0, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """W ~ U[low, high]; ``uniform(shape, -1/sqrt(n), 1/sqrt(n))`` is Glorot & Bengio's "standard" init."""
    return as_generator(rng).uniform(low, high, size=shape).astype(dtype)


def normal(shape, mean: float = 0.0, std: float = 1.0, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """W ~ N(mean, std^2)."""
    return (mean + std * as_generator(rng).standard_normal(size=shape)).astype(dtype)


def zeros(shape, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """W = 0 (for biases; for weights it is the symmetric start that never breaks symmetry)."""
    return np.zeros(shape, dtype=dtype)


def constant(shape, value: float = 0.0, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """W = value everywhere: every unit identical, the lecture's never-diverging case."""
    return np.full(shape, value, dtype=dtype)


def default_linear(shape, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """PyTorch's Linear and Conv2d default: U[-1/sqrt(fan_in), 1/sqrt(fan_in)] (kaiming_uniform with a=sqrt(5))."""
    fan_in, _ = fan_in_and_fan_out(shape)
    bound = 1.0 / math.sqrt(fan_in)
    return as_generator(rng).uniform(-bound, bound, size=shape).astype(dtype)


INITIALIZERS = {
    "default": default_linear,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "orthogonal": orthogonal,
    "normal": normal,
    "uniform": uniform,
    "zeros": zeros,
}


def get_initializer(init):
    """Resolve an ``init=`` argument: a name from ``INITIALIZERS`` or a callable(shape, rng, dtype)."""
    if callable(init):
        return init
    if init is None:
        return default_linear
    if init not in INITIALIZERS:
        raise ValueError(f"init must be a callable or one of {sorted(INITIALIZERS)}, got {init!r}")
    return INITIALIZERS[init]
