"""Elementwise activations y = f(z) with dLoss/dz = f'(z) * dLoss/dy.

Each forward returns a fresh array and keeps what f'(z) needs (y itself for ReLU, sigmoid and
tanh, whose derivatives are functions of y). The passes are the plain NumPy functions below;
with the numba kernels ReLU and the derivatives run their compiled twins of the same name in
:mod:`._compiled` (see :mod:`._kernels`). In :func:`~tricklab.nn.inference.inference_mode`
nothing is kept and ReLU, sigmoid and tanh write y into an array the layer reuses on its next call
there.
"""

from __future__ import annotations

import numpy as np

from . import _kernels as K
from .inference import is_inference_mode, output_buffer
from .module import Module


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = max(0, x), NaN passed through (as np.maximum); into ``out`` if given (it may be x)."""
    return np.maximum(x, x.dtype.type(0), out=out)


def relu_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dLoss/dz = dLoss/dy * 1[y > 0], from the output y = max(0, z)."""
    return g * (y > 0)


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """y = 1 / (1 + exp(-z)) computed as (1 + tanh(z/2)) / 2: the same value, and no exp that
    overflows for large |z|. One array (``out`` if given, which may be z itself), updated in place."""
    y = np.multiply(z, 0.5, out=np.empty_like(z) if out is None else out)
    np.tanh(y, out=y)
    y += 1.0
    y *= 0.5
    return y


def sigmoid_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dLoss/dz = dLoss/dy * y (1 - y), from the output y = sigmoid(z)."""
    return g * y * (1 - y)


def tanh_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dLoss/dz = dLoss/dy * (1 - y^2), from the output y = tanh(z)."""
    return g * (1 - y * y)


class ReLU(Module):
    """y = max(0, z);  f'(z) = 1[z > 0]."""

    def forward(self, x):
        x = self._cast_input(x)
        fast = K.compiled()
        kernel = fast.relu if fast else relu
        if is_inference_mode():
            self._y = None
            return kernel(x, output_buffer(self, x.shape))
        self._y = kernel(x)
        return self._y

    def backward(self, grad_output):
        y = self._saved("_y")
        fast = K.compiled()
        return (fast.relu_backward if fast else relu_backward)(np.asarray(grad_output, dtype=self.dtype), y)


class LeakyReLU(Module):
    """y = z if z > 0 else a z;  f'(z) = 1 if z > 0 else a  (a = ``negative_slope``)."""

    def __init__(self, negative_slope: float = 0.01, dtype=None):
        super().__init__(dtype=dtype)
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        x = self._cast_input(x)
        positive = x > 0
        self._positive = None if is_inference_mode() else positive
        return np.where(positive, x, x * self.dtype.type(self.negative_slope))

    def backward(self, grad_output):
        slope = np.where(self._saved("_positive"), self.dtype.type(1), self.dtype.type(self.negative_slope))
        return np.asarray(grad_output, dtype=self.dtype) * slope

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """y = 1 / (1 + exp(-z));  f'(z) = y (1 - y).  Computed without overflow for large |z|."""

    def forward(self, x):
        x = self._cast_input(x)
        inference = is_inference_mode()
        y = sigmoid(x, output_buffer(self, x.shape) if inference else None)
        self._y = None if inference else y
        return y

    def backward(self, grad_output):
        y = self._saved("_y")
        fast = K.compiled()
        return (fast.sigmoid_backward if fast else sigmoid_backward)(np.asarray(grad_output, dtype=self.dtype), y)


class Tanh(Module):
    """y = tanh(z);  f'(z) = 1 - y^2."""

    def forward(self, x):
        x = self._cast_input(x)
        if is_inference_mode():
            self._y = None
            return np.tanh(x, out=output_buffer(self, x.shape))
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_output):
        y = self._saved("_y")
        fast = K.compiled()
        return (fast.tanh_backward if fast else tanh_backward)(np.asarray(grad_output, dtype=self.dtype), y)
