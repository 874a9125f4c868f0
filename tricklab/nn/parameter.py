"""A trainable array and the gradient that backward accumulates into it."""

from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable tensor: ``.data`` holds the value, ``.grad`` the accumulated dLoss/d(data).

    Both are ndarrays of the same shape and dtype; ``backward`` of the owning module adds (+=)
    into ``.grad`` and ``zero_grad`` sets it back to zeros.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray, dtype=None):
        arr = np.array(data, dtype=dtype if dtype is not None else None, copy=True)
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"Parameter needs a floating-point array, got dtype {arr.dtype}")
        self.data = arr
        self.grad = np.zeros_like(arr)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def astype_(self, dtype) -> "Parameter":
        """Convert value and gradient to ``dtype`` in place (on this object)."""
        self.data = self.data.astype(dtype, copy=False)
        self.grad = self.grad.astype(dtype, copy=False)
        return self

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"
