"""Affine layer and the shape-only layers around it (Identity, Flatten)."""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from .._rng import RngLike, as_generator
from ._blas import gemm_accumulate
from . import init as init_
from .inference import is_inference_mode, output_buffer
from .module import Module
from .parameter import Parameter


def affine_parameters(owner: Module, in_features, out_features, bias: bool, init, rng: np.random.Generator) -> None:
    """Give ``owner`` a ``weight`` (out, in) and ``bias`` (out,) drawn exactly as :class:`Linear` draws them.

    The same ``rng`` therefore gives a noisy linear layer the same weights as a plain ``Linear``.
    """
    name = type(owner).__name__
    for arg, value in (("in_features", in_features), ("out_features", out_features)):
        if not (isinstance(value, Integral) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"{name}: {arg} must be a positive integer, got {value!r}")
    owner.in_features, owner.out_features = int(in_features), int(out_features)
    shape = (owner.out_features, owner.in_features)
    owner.weight = Parameter(init_.get_initializer(init)(shape, rng=rng, dtype=owner.dtype))
    if bias:
        bound = 1.0 / math.sqrt(owner.in_features)
        owner.bias = Parameter(rng.uniform(-bound, bound, size=owner.out_features).astype(owner.dtype))
    else:
        owner.register_parameter("bias", None)



def affine_output_shape(owner: Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(in_features,) -> (out_features,) for any layer holding ``affine_parameters``."""
    if tuple(input_shape) != (owner.in_features,):
        raise ValueError(f"{type(owner).__name__}({owner.in_features}, {owner.out_features}) expects examples of shape "
                         f"({owner.in_features},), got {tuple(input_shape)}")
    return (owner.out_features,)


class Linear(Module):
    """Fully connected layer, z = x W^T + b.

    Shapes: x (batch, in_features) (or (..., in_features)), W (out_features, in_features) as in
    PyTorch, b (out_features,), z (batch, out_features).

    Backward, with g = dLoss/dz::

        dLoss/dx = g W          (computed with W as it was in the forward pass)
        dLoss/dW += g^T x
        dLoss/db += sum_batch g

    ``init`` names a scheme from :mod:`tricklab.nn.init` ("default" is PyTorch's
    U[-1/sqrt(in), 1/sqrt(in)]) or is a callable ``f(shape, rng=..., dtype=...)``; the bias is
    drawn from U[-1/sqrt(in), 1/sqrt(in)] as in PyTorch.

    In :func:`~tricklab.nn.inference.inference_mode` x is not kept and z is written into an
    array the layer reuses on its next call there.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init="default",
                 rng: RngLike = None, dtype=None):
        super().__init__(dtype=dtype)
        affine_parameters(self, in_features, out_features, bias, init, as_generator(rng))
        self._x = None

    def forward(self, x):
        x = self._cast_input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) got input of shape {x.shape}; "
                f"expected (batch, {self.in_features})"
            )
        if is_inference_mode():  # nothing kept; the output goes into the layer's reused array
            self._x = None
            z = np.matmul(x, self.weight.data.T, out=output_buffer(self, x.shape[:-1] + (self.out_features,)))
        else:
            self._x = x
            z = x @ self.weight.data.T
        if self.bias is not None:
            z += self.bias.data
        return z

    def backward(self, grad_output):
        g = self._grad_output(grad_output)
        grad_input = g @ self.weight.data
        self.backward_parameters(g)
        return grad_input

    def backward_parameters(self, grad_output):
        x, g = self._saved("_x"), self._grad_output(grad_output)
        g2, x2 = g.reshape(-1, self.out_features), x.reshape(-1, self.in_features)
        gemm_accumulate(self.weight.grad, g2.T, x2)  # dW += g^T x, one BLAS call
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)

    def _grad_output(self, grad_output) -> np.ndarray:
        """dLoss/dz in the module's dtype, refused unless it has the shape of the last output."""
        g = np.asarray(grad_output, dtype=self.dtype)
        expected = self._saved("_x").shape[:-1] + (self.out_features,)
        if g.shape != expected:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}).backward got a gradient of shape "
                             f"{g.shape}; expected the output's shape {expected}")
        return g

    output_shape = affine_output_shape

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """y = x; dLoss/dx = dLoss/dy."""

    def forward(self, x):
        return self._cast_input(x)

    def backward(self, grad_output):
        return grad_output


class Flatten(Module):
    """Reshape (batch, d1, d2, ...) to (batch, d1*d2*...) from ``start_dim`` on, as torch.nn.Flatten."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1, dtype=None):
        super().__init__(dtype=dtype)
        self.start_dim, self.end_dim = start_dim, end_dim
        self._shape = self._flat_shape = None

    def forward(self, x):
        x = self._cast_input(x)
        self._shape = x.shape
        start = self.start_dim % x.ndim
        end = self.end_dim % x.ndim
        new_shape = x.shape[:start] + (int(np.prod(x.shape[start:end + 1])),) + x.shape[end + 1:]
        self._flat_shape = new_shape
        return x.reshape(new_shape)

    def backward(self, grad_output):
        shape, g = self._saved("_shape"), np.asarray(grad_output)
        if g.shape != self._flat_shape:
            raise ValueError(f"Flatten.backward got a gradient of shape {g.shape}; expected the output's shape "
                             f"{self._flat_shape}")
        return g.reshape(shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = (1, *input_shape)  # start_dim and end_dim count the batch axis, as in forward
        start, end = self.start_dim % len(shape), self.end_dim % len(shape)
        if start == 0:
            raise ValueError("Flatten(start_dim=0) would merge the batch axis; use start_dim >= 1")
        return shape[1:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
