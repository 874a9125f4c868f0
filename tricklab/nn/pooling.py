"""Pooling over (N, C, H, W) images, as torch.nn's MaxPool2d, AvgPool2d and AdaptiveAvgPool2d.

MaxPool2d and AvgPool2d slide a kh x kw window with stride (sh, sw) over the input padded by
(ph, pw) on each side; per axis the output has::

    Ho = floor((H + 2 ph - kh) / sh) + 1

entries (torch's ``ceil_mode=False``, ``dilation=1``). Both run as a loop over the kh*kw kernel
offsets (u, v): offset (u, v) of every window at once is the strided view
xp[:, :, u : u + sh (Ho - 1) + 1 : sh, v : v + sw (Wo - 1) + 1 : sw] of the padded input xp, so
nothing loops over the batch, the channels or the pixels. AdaptiveAvgPool2d is two matrix
products with averaging matrices.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .inference import is_inference_mode, output_buffer
from .module import Module


def _pair(value, name: str, layer: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (tuple or TOML list), each at least ``minimum``, as (height, width)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, Integral) and not isinstance(v, bool) and v >= minimum for v in pair):
        kind = "positive" if minimum > 0 else "non-negative"
        raise ValueError(f"{layer}: {name} must be a {kind} integer or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_images(layer: Module, x: np.ndarray) -> None:
    if x.ndim != 4:
        raise ValueError(f"{layer!r} got input of shape {x.shape}; expected (N, C, H, W)")


def _check_examples(layer: Module, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"{layer!r} expects examples of shape (C, H, W), got {tuple(input_shape)}")
    return tuple(input_shape)


class _Pool2d(Module):
    """What MaxPool2d and AvgPool2d share: the window geometry and its kernel-offset views."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, dtype=None):
        super().__init__(dtype=dtype)
        name = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", name, 1)
        self.padding = _pair(padding, "padding", name, 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding {self.padding} must be at most half of kernel_size "
                             f"{self.kernel_size} (as in torch)")
        self._input_shape = None

    def _output_size(self, height: int, width: int) -> tuple[int, int]:
        """(Ho, Wo) = floor((H + 2p - k) / s) + 1 per axis; at least 1, else the input is too small."""
        ho, wo = ((n + 2 * p - k) // s + 1 for n, p, k, s in zip((height, width), self.padding, self.kernel_size,
                                                                  self.stride))
        if ho < 1 or wo < 1:
            raise ValueError(f"{self!r}: images of {height}x{width} pixels are smaller than the (padded) kernel; "
                             f"the output would be {ho}x{wo}")
        return ho, wo

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        channels, height, width = _check_examples(self, input_shape)
        return (channels, *self._output_size(height, width))

    def _offsets(self, ho: int, wo: int):
        """(k, view) for each kernel offset (u, v) in row-major order, k = u kw + v: the index tuple of
        the strided view of the padded input that offset reads in every window."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        for u in range(kh):
            for v in range(kw):
                yield u * kw + v, (Ellipsis, slice(u, u + sh * (ho - 1) + 1, sh), slice(v, v + sw * (wo - 1) + 1, sw))

    def _pad(self, x: np.ndarray, value: float) -> np.ndarray:
        ph, pw = self.padding
        if ph == pw == 0:
            return x
        return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)

    def _padded_zeros(self) -> np.ndarray:
        n, c, h, w = self._input_shape
        ph, pw = self.padding
        return np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=self.dtype)

    def _crop(self, xp: np.ndarray) -> np.ndarray:
        (ph, pw), (h, w) = self.padding, self._input_shape[2:]
        return xp[:, :, ph:ph + h, pw:pw + w] if ph or pw else xp

    def _check_grad(self, g: np.ndarray) -> None:
        expected = (*self._input_shape[:2], *self._output_size(*self._input_shape[2:]))
        if g.shape != expected:
            raise ValueError(f"{type(self).__name__}.backward got a gradient of shape {g.shape}; expected the "
                             f"output's shape {expected}")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """The largest entry of each window, per example and channel, as ``torch.nn.MaxPool2d``.

    ``kernel_size``, ``stride`` (default: ``kernel_size``) and ``padding`` are ints or
    (height, width) pairs; padding adds -inf, so it is never the maximum, and is at most half the
    kernel (as in torch)::

        y[n, c, a, b] = max_{u < kh, v < kw} xp[n, c, sh a + u, sw b + v]

    Backward sends each output's gradient to its window's arg-max, summing where windows overlap::

        dLoss/dx[n, c, i, j] = sum_{(a, b): argmax of window (a, b) is (i, j)} dLoss/dy[n, c, a, b]

    The arg-max is torch's: the first maximum in row-major window order among the real (unpadded)
    entries (strict >, so ties go to the first), and a NaN is taken wherever it appears (the last
    NaN of a window wins), so NaN propagates. Forward keeps each window's offset of the arg-max
    (one byte per output for kernels up to 16x16) for backward; in
    :func:`~tricklab.nn.inference.inference_mode` it computes the maximum only.
    torch's ``dilation``, ``ceil_mode`` and ``return_indices`` are not offered.
    """

    def forward(self, x):
        x = self._cast_input(x)
        _check_images(self, x)
        ho, wo = self._output_size(*x.shape[2:])
        xp = self._pad(x, -np.inf)
        if is_inference_mode():  # the maximum only, no arg-max for backward, into the reused output
            self._argmax = None
            y = output_buffer(self, (*x.shape[:2], ho, wo))
            y[...] = -np.inf
            for _, view in self._offsets(ho, wo):
                np.maximum(y, xp[view], out=y)
            return y
        y = np.full((*x.shape[:2], ho, wo), -np.inf, dtype=self.dtype)
        argmax = self._first_real_offsets(y.shape)
        greater = np.empty(y.shape, dtype=bool)
        # as torch: max = -inf, then (max, argmax) = (v, k) wherever v > max or isnan(v)
        for k, view in self._offsets(ho, wo):
            v = xp[view]
            np.greater(v, y, out=greater)
            greater |= np.isnan(v)
            # arithmetic rather than copyto(where=...), which branches on every entry (8x slower):
            # max(y, v) is v exactly where greater (NaN included), and argmax < k where greater
            np.maximum(y, v, out=y)
            np.maximum(argmax, np.multiply(greater, k, dtype=argmax.dtype), out=argmax)
        self._input_shape, self._argmax = x.shape, argmax
        return y

    def _first_real_offsets(self, shape: tuple[int, ...]) -> np.ndarray:
        """Each window's offset k of its first unpadded entry: torch's arg-max before the first
        comparison, so a window of -inf sends its gradient into the image, not into the padding."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        rows, cols = np.arange(shape[2]) * sh, np.arange(shape[3]) * sw  # window corners in xp
        first_row, first_col = np.maximum(rows, ph) - rows, np.maximum(cols, pw) - cols
        argmax = np.empty(shape, dtype=np.min_scalar_type(kh * kw - 1))
        argmax[...] = first_row[:, None] * kw + first_col[None, :]
        return argmax

    def backward(self, grad_output):
        argmax = self._saved("_argmax")
        g = np.asarray(grad_output, dtype=self.dtype)
        self._check_grad(g)
        gxp, zero = self._padded_zeros(), self.dtype.type(0)
        finite = np.isfinite(g).all()  # g * mask would turn an inf gradient into NaN where the mask is 0
        for k, view in self._offsets(*g.shape[2:]):
            hit = argmax == k
            gxp[view] += g * hit if finite else np.where(hit, g, zero)  # where() branches per entry: slower
        return self._crop(gxp)


class AvgPool2d(_Pool2d):
    """The mean of each window, per example and channel, as ``torch.nn.AvgPool2d``.

    Padding adds zeros, which count in the mean (torch's default ``count_include_pad=True``)::

        y[n, c, a, b] = (1 / (kh kw)) sum_{u < kh, v < kw} xp[n, c, sh a + u, sw b + v]

    Backward spreads each output's gradient evenly over its window, summing where windows overlap::

        dLoss/dx[n, c, i, j] = (1 / (kh kw)) sum_{(a, b): window (a, b) holds (i, j)} dLoss/dy[n, c, a, b]

    torch's ``ceil_mode``, ``count_include_pad=False`` and ``divisor_override`` are not offered.
    """

    def _window_size(self):
        return self.dtype.type(self.kernel_size[0] * self.kernel_size[1])

    def forward(self, x):
        x = self._cast_input(x)
        _check_images(self, x)
        ho, wo = self._output_size(*x.shape[2:])
        xp = self._pad(x, 0)
        offsets = self._offsets(ho, wo)
        y = xp[next(offsets)[1]].copy()
        for _, view in offsets:
            y += xp[view]
        y /= self._window_size()
        self._input_shape = x.shape
        return y

    def backward(self, grad_output):
        self._saved("_input_shape")
        g = np.asarray(grad_output, dtype=self.dtype)
        self._check_grad(g)
        share = g / self._window_size()
        gxp = self._padded_zeros()
        for _, view in self._offsets(*g.shape[2:]):
            gxp[view] += share
        return self._crop(gxp)


def averaging_matrix(n_in: int, n_out: int, dtype) -> np.ndarray:
    """A (n_out, n_in) with A[a, i] = 1 / (end_a - start_a) for start_a <= i < end_a, else 0, where
    (torch's adaptive pooling rule) start_a = floor(a n_in / n_out), end_a = ceil((a + 1) n_in / n_out)."""
    a = np.arange(n_out)
    start, end = a * n_in // n_out, -(-(a + 1) * n_in // n_out)
    i = np.arange(n_in)
    inside = (i >= start[:, None]) & (i < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (Ho, Wo) whatever the image size, as
    ``torch.nn.AdaptiveAvgPool2d``; ``output_size=1`` is global average pooling.

    ``output_size`` is an int or a pair; None in a pair keeps that axis's input size. Output row a
    averages input rows start_a <= i < end_a with torch's start_a = floor(a H / Ho) and end_a =
    ceil((a + 1) H / Ho) (windows differ in size when Ho does not divide H), likewise for columns.
    A window's mean is a row mean of column means, so with the averaging matrices A_H (Ho, H) and
    A_W (Wo, W) of :func:`averaging_matrix`::

        y[n, c] = A_H x[n, c] A_W^T,        dLoss/dx[n, c] = A_H^T dLoss/dy[n, c] A_W
    """

    def __init__(self, output_size: int | tuple[int | None, int | None], dtype=None):
        super().__init__(dtype=dtype)
        is_pair = isinstance(output_size, (tuple, list))
        pair = tuple(output_size) if is_pair else (output_size, output_size)
        valid = all(v is None and is_pair or isinstance(v, Integral) and not isinstance(v, bool) and v >= 1
                    for v in pair)
        if len(pair) != 2 or not valid:
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be a positive integer or a pair of them "
                             f"(None keeps that axis), got {output_size!r}")
        self.output_size = output_size
        self._sizes = tuple(None if v is None else int(v) for v in pair)
        self._matrices = None

    def _output_size(self, height: int, width: int) -> tuple[int, int]:
        return tuple(n if want is None else want for n, want in zip((height, width), self._sizes))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        channels, height, width = _check_examples(self, input_shape)
        return (channels, *self._output_size(height, width))

    def forward(self, x):
        x = self._cast_input(x)
        _check_images(self, x)
        (height, width), (ho, wo) = x.shape[2:], self._output_size(*x.shape[2:])
        a_h, a_w = averaging_matrix(height, ho, self.dtype), averaging_matrix(width, wo, self.dtype)
        self._input_shape, self._matrices = x.shape, (a_h, a_w)
        return a_h @ (x @ a_w.T)

    def backward(self, grad_output):
        a_h, a_w = self._saved("_matrices")
        g = np.asarray(grad_output, dtype=self.dtype)
        expected = (*self._input_shape[:2], a_h.shape[0], a_w.shape[0])
        if g.shape != expected:
            raise ValueError(f"AdaptiveAvgPool2d.backward got a gradient of shape {g.shape}; expected the "
                             f"output's shape {expected}")
        return a_h.T @ (g @ a_w)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size!r}"
