"""2-D convolution (PyTorch's Conv2d: a cross-correlation) with its backward written out."""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .._rng import RngLike, as_generator
from . import _kernels as K
from . import init as init_
from .inference import is_inference_mode, output_buffer
from .module import Module
from .parameter import Parameter

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_PAD = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}  # the same index rules as torch's


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (tuple or TOML list), each at least ``minimum``, as (height, width)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(_is_int(v) and v >= minimum for v in pair):
        kind = "positive" if minimum > 0 else "non-negative"
        raise ValueError(f"Conv2d: {name} must be a {kind} integer or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _pads(padding, kernel_size, stride, dilation) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zeros added around the input, by torch's rules.

    "valid" adds none; "same" adds d (k - 1) in all per axis, half before and the odd one after
    (torch's asymmetric padding), and needs stride 1, as in torch.
    """
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"Conv2d: padding must be an integer, a pair of them, 'same' or 'valid', got {padding!r}")
        if padding == "valid":
            return (0, 0), (0, 0)
        if stride != (1, 1):
            raise ValueError(f"Conv2d: padding='same' needs stride 1 (as in torch), got stride={stride}")
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    ph, pw = _pair(padding, "padding", 0)
    return (ph, ph), (pw, pw)


def col2im_add_(gxp: np.ndarray, d_cols: np.ndarray, stride: tuple[int, int], dilation: tuple[int, int]) -> None:
    """col2im: gxp[n, c, s_h i + d_h u, s_w j + d_w v] += d_cols[c, u, v, n, i, j] for every index, in place.

    gxp is dLoss/dxp (N, C, H_p, W_p), d_cols the input gradient's columns (C, kh, kw, N, H', W');
    one strided slice add over all n, c, i, j per kernel offset (u, v)."""
    _, kh, kw, _, ho, wo = d_cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    for u in range(kh):
        for v in range(kw):
            rows = slice(dh * u, dh * u + sh * (ho - 1) + 1, sh)
            cols = slice(dw * v, dw * v + sw * (wo - 1) + 1, sw)
            gxp[:, :, rows, cols] += d_cols[:, u, v].transpose(1, 0, 2, 3)


class Conv2d(Module):
    """2-D convolution over (N, C, H, W) inputs, as ``torch.nn.Conv2d`` (a cross-correlation).

    Shapes: x (N, C, H, W) with C = ``in_channels``, weight w (O, C/G, kh, kw) with O =
    ``out_channels`` and G = ``groups``, bias b (O,), y (N, O, H', W'), where per axis (s the
    stride, d the dilation, p_0 + p_1 the padding before and after)::

        H' = floor((H + p_0 + p_1 - d (kh - 1) - 1) / s) + 1

    Forward, on the padded input xp (zeros, or the reflected, replicated or circular border of
    ``padding_mode``), with output channel o in group g(o) = o // (O/G) seeing the input channels
    c' = g(o) C/G + c, c < C/G::

        y[n, o, i, j] = b[o] + sum_{c, u < kh, v < kw} w[o, c, u, v] xp[n, c', s i + d u, s j + d v]

    Backward, with gy = dLoss/dy::

        dLoss/db[o]          = sum_{n, i, j} gy[n, o, i, j]
        dLoss/dw[o, c, u, v] = sum_{n, i, j} gy[n, o, i, j] xp[n, c', s i + d u, s j + d v]
                               (the correlation of the input with the output gradient)
        dLoss/dxp[n, c', a, e] = sum_{o in g(c'), u, v; s i + d u = a, s j + d v = e} gy[n, o, i, j] w[o, c, u, v]
                               (the transposed convolution: gy spread out by the stride,
                                correlated with the flipped kernel)

    and dLoss/dx is dLoss/dxp with the padding cropped off; for the other padding modes each
    border entry's gradient is also added to the input pixel it copies.

    Layout as matrix products (im2col): the columns X[g, (c, u, v), (n, i, j)] = xp[n, c',
    s i + d u, s j + d v], of shape (G, C/G kh kw, N H' W'), are copied once from a strided
    view of xp (``sliding_window_view``, no loop); with W[g] the (O/G, C/G kh kw) rows of the
    weight and Gy[g] the (O/G, N H' W') gradient of group g, each pass is one batched matmul::

        Y[g] = W[g] X[g]          dW[g] = Gy[g] X[g]^T          dX[g] = W[g]^T Gy[g]

    and col2im adds dX back into dLoss/dxp by a loop over the kh kw kernel offsets (u, v), each
    one a strided slice add over every n, c', i, j at once. The columns hold C kh kw / s^2
    copies of the input, so the batch is taken in chunks of examples whose columns (and
    grouped outputs) fit in ``column_bytes`` (4 MiB; a class attribute, settable per layer): the
    columns of a chunk are the (n, i, j) of its examples, a contiguous block of X's last axis,
    and every product above splits along it (dW sums the chunks' products); each chunk is
    padded on its own. When the whole batch is one chunk the columns are kept from forward to
    backward; otherwise forward keeps only x and backward rebuilds each chunk's columns (one
    more im2col copy per chunk). dX is written over the columns once dW has used them (kept ones
    too: a second backward rebuilds them from x). Nothing is kept in
    :func:`~tricklab.nn.inference.inference_mode`, where the output also goes into an array
    reused by the next call. ``backward_parameters`` skips dX and col2im.

    ``kernel_size``, ``stride``, ``dilation`` and ``padding`` are an int or a pair (height,
    width); ``padding`` may also be "valid" (none) or "same" (the output keeps H and W, stride
    1 only, the odd padding after, as torch). ``padding_mode`` is "zeros", "reflect",
    "replicate" or "circular" (torch's, with torch's limits: a reflected padding smaller than
    the input, a circular one at most its size). ``groups`` G splits the channels into G
    independent convolutions; G = ``in_channels`` is a depthwise convolution.

    ``init`` names a scheme from :mod:`tricklab.nn.init` (fans of the kernel as torch computes
    them: fan_in = C/G kh kw, fan_out = O kh kw) or is a callable ``f(shape, rng=..., dtype=...)``;
    "default" is torch's kaiming_uniform(a=sqrt(5)), U[-1/sqrt(fan_in), 1/sqrt(fan_in)], and the
    bias is drawn from the same interval, as in torch. Unlike torch, an unbatched (C, H, W)
    input is refused: add the batch axis.
    """

    column_bytes = 4 * 2**20  # the most memory one chunk's im2col columns (or grouped output) may take

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", init="default", rng: RngLike = None, dtype=None):
        super().__init__(dtype=dtype)
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not (_is_int(value) and value > 0):
                raise ValueError(f"Conv2d: {arg} must be a positive integer, got {value!r}")
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value % groups:
                raise ValueError(f"Conv2d: {arg} ({value}) must be divisible by groups ({groups})")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {list(PADDING_MODES)}, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = _pair(dilation, "dilation", 1)
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding", 0)
        self.padding_mode = padding_mode
        self._pad = _pads(padding, self.kernel_size, self.stride, self.dilation)
        self._conv_parameters(bias, init, as_generator(rng))
        self._x = self._cols = None

    def _conv_parameters(self, bias: bool, init, rng: np.random.Generator) -> None:
        """weight (O, C/G, kh, kw) from ``init``, then bias (O,) ~ U[-1/sqrt(fan_in), 1/sqrt(fan_in)], as torch."""
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = Parameter(init_.get_initializer(init)(shape, rng=rng, dtype=self.dtype))
        if bias:
            bound = 1.0 / math.sqrt(init_.fan_in_and_fan_out(shape)[0])
            self.bias = Parameter(rng.uniform(-bound, bound, size=self.out_channels).astype(self.dtype))
        else:
            self.register_parameter("bias", None)

    # ----------------------------------------------------------------- shapes
    def _name(self) -> str:
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"

    def _output_hw(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') for an input of H x W, or an error when the kernel does not fit or the padding is too wide."""
        out = []
        for size, (before, after), k, s, d, axis in zip((height, width), self._pad, self.kernel_size, self.stride,
                                                         self.dilation, ("height", "width")):
            widest = max(before, after)
            if self.padding_mode == "reflect" and widest >= size:
                raise ValueError(f"{self._name()}: padding_mode='reflect' needs the padding ({widest}) smaller than "
                                 f"the input {axis} ({size})")
            if self.padding_mode == "circular" and widest > size:
                raise ValueError(f"{self._name()}: padding_mode='circular' needs the padding ({widest}) at most "
                                 f"the input {axis} ({size})")
            span = d * (k - 1) + 1
            if size + before + after < span:
                raise ValueError(f"{self._name()}: the padded input {axis} ({size + before + after}) is smaller than "
                                 f"the dilated kernel ({span})")
            out.append((size + before + after - span) // s + 1)
        return out[0], out[1]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C, H, W) -> (O, H', W')."""
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(f"{self._name()} expects examples of shape (C, H, W) = ({self.in_channels}, H, W), "
                             f"got {shape}")
        return (self.out_channels, *self._output_hw(shape[1], shape[2]))

    # ----------------------------------------------------------------- padding
    def _padded(self, x: np.ndarray) -> np.ndarray:
        """xp: x with the padding of ``padding_mode`` around H and W."""
        (top, bottom), (left, right) = self._pad
        if not (top or bottom or left or right):
            return x
        if self.padding_mode == "zeros":
            return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        rows, cols = (self._source_index(n, p) for n, p in zip(x.shape[2:], self._pad))
        return x[:, :, rows[:, None], cols[None, :]]

    def _source_index(self, size: int, pad: tuple[int, int]) -> np.ndarray:
        """For each padded position along one axis, the input position it copies."""
        return np.pad(np.arange(size), pad, mode=_NUMPY_PAD[self.padding_mode])

    def _unpadded(self, gxp: np.ndarray, height: int, width: int) -> np.ndarray:
        """dLoss/dx from dLoss/dxp: the crop for zeros; else gx = P_h^T gxp P_w, with P[a, index[a]] = 1."""
        (top, bottom), (left, right) = self._pad
        if not (top or bottom or left or right):
            return gxp
        if self.padding_mode == "zeros":
            return gxp[:, :, top:top + height, left:left + width].copy()
        p_h, p_w = (np.eye(n, dtype=self.dtype)[self._source_index(n, p)] for n, p in zip((height, width), self._pad))
        return p_h.T @ gxp @ p_w

    # ----------------------------------------------------------------- passes
    def _chunks(self, n: int, ho: int, wo: int) -> list[slice]:
        """The batch as slices of examples whose columns (C kh kw rows) and grouped output (O rows)
        each take at most ``column_bytes`` (one example at least)."""
        kh, kw = self.kernel_size
        per_example = max(self.in_channels * kh * kw, self.out_channels) * ho * wo * np.dtype(self.dtype).itemsize
        size = max(1, min(n, int(self.column_bytes // max(per_example, 1))))
        return [slice(start, min(start + size, n)) for start in range(0, n, size)]

    def forward(self, x):
        x = self._cast_input(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self._name()} got input of shape {x.shape}; expected (N, {self.in_channels}, H, W)")
        n = x.shape[0]
        ho, wo = self._output_hw(*x.shape[2:])
        inference = is_inference_mode()  # then nothing kept for backward, the output array reused
        shape = (n, self.out_channels, ho, wo)
        y = output_buffer(self, shape) if inference else np.empty(shape, dtype=self.dtype)
        chunks = self._chunks(n, ho, wo)
        for chunk in chunks:
            cols = self._columns(self._padded(x[chunk]), ho, wo)
            self._write_output(y[chunk], cols)
        self._x = None if inference else x
        self._cols = cols if len(chunks) == 1 and not inference else None
        return y

    def _write_output(self, y: np.ndarray, cols: np.ndarray) -> None:
        """y = W X + b for the examples of one chunk, y of shape (n, O, H', W')."""
        n, g, o_g = y.shape[0], self.groups, self.out_channels // self.groups
        hw = y.shape[2] * y.shape[3]
        y_groups = self._scratch_view("_by_group", (g, o_g, cols.shape[2]))
        np.matmul(self.weight.data.reshape(g, o_g, -1), cols, out=y_groups)  # Y[g] = W[g] X[g]
        y_by_group = y_groups.reshape(g, o_g, n, hw).transpose(2, 0, 1, 3)  # (N, G, O/G, H'W')
        if self.bias is not None:
            np.add(y_by_group, self.bias.data.reshape(1, g, o_g, 1), out=y.reshape(n, g, o_g, hw))
        else:
            np.copyto(y.reshape(n, g, o_g, hw), y_by_group)

    def _columns(self, xp: np.ndarray, ho: int, wo: int) -> np.ndarray:
        """im2col: X[g, (c, u, v), (n, i, j)] = xp[n, g C/G + c, s i + d u, s j + d v], shape (G, C/G kh kw, N H' W').

        A copy of a strided view of xp, into a buffer kept between calls."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        spans = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        windows = sliding_window_view(xp, spans, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, H', W', kh, kw)
        n, c = xp.shape[:2]
        cols = self._scratch_view("_cols_buffer", (c, kh, kw, n, ho, wo))
        np.copyto(cols, windows.transpose(1, 4, 5, 0, 2, 3))
        return cols.reshape(self.groups, (c // self.groups) * kh * kw, n * ho * wo)

    def _checked_grad(self, grad_output) -> np.ndarray:
        """dLoss/dy as an array of the layer's dtype, refused unless it has the shape of the last output."""
        g = np.asarray(grad_output, dtype=self.dtype)
        n, _, height, width = self._saved("_x").shape
        expected = (n, self.out_channels, *self._output_hw(height, width))
        if g.shape != expected:
            raise ValueError(f"{self._name()}.backward got a gradient of shape {g.shape}; expected the output's "
                             f"shape {expected} (N, {self.out_channels}, H', W')")
        return g

    def _grad_by_group(self, g: np.ndarray) -> np.ndarray:
        """Gy[g, o, (n, i, j)] = dLoss/dy[n, g O/G + o, i, j] of one chunk's examples, shape (G, O/G, N H' W')."""
        n, groups, o_g = g.shape[0], self.groups, self.out_channels // self.groups
        gy = self._scratch_view("_by_group", (groups, o_g, n, g.shape[2] * g.shape[3]))
        np.copyto(gy, g.reshape(n, groups, o_g, -1).transpose(1, 2, 0, 3))
        return gy.reshape(groups, o_g, -1)

    def backward(self, grad_output):
        return self._backward(grad_output, input_grad=True)

    def backward_parameters(self, grad_output):
        self._backward(grad_output, input_grad=False)

    def _backward(self, grad_output, input_grad: bool):
        """Chunk by chunk: the parameter gradients, then (``input_grad``) dLoss/dx."""
        g = self._checked_grad(grad_output)
        x = self._x
        n, c, height, width = x.shape
        ho, wo = g.shape[2:]
        chunks = self._chunks(n, ho, wo)
        kept = self._cols if len(chunks) == 1 else None
        (top, bottom), (left, right) = self._pad
        gxp = np.zeros((n, c, height + top + bottom, width + left + right), dtype=self.dtype) if input_grad else None
        if input_grad:  # dX goes over the columns once dW has used them
            self._cols = None
        for chunk in chunks:
            gy = self._grad_by_group(g[chunk])
            cols = kept if kept is not None else self._columns(self._padded(x[chunk]), ho, wo)
            self._accumulate_parameter_grads(gy, cols)
            if input_grad:
                self._add_input_grad(gxp[chunk], gy, ho, wo)
        return self._unpadded(gxp, height, width) if input_grad else None

    def _accumulate_parameter_grads(self, gy: np.ndarray, cols: np.ndarray) -> None:
        """dW[g] += Gy[g] X[g]^T; db += sum over (n, i, j) of Gy."""
        self.weight.grad += np.matmul(gy, cols.transpose(0, 2, 1)).reshape(self.weight.grad.shape)
        if self.bias is not None:
            self.bias.grad += gy.sum(axis=2).reshape(self.out_channels)

    def _add_input_grad(self, gxp: np.ndarray, gy: np.ndarray, ho: int, wo: int) -> None:
        """dX[g] = W[g]^T Gy[g] (in the columns' buffer), then col2im (:func:`col2im_add_`) into this
        chunk's dLoss/dxp (outputs of H' x W' = ``ho`` x ``wo``)."""
        n, c = gxp.shape[:2]
        kh, kw = self.kernel_size
        w = self.weight.data.reshape(self.groups, self.out_channels // self.groups, -1)
        d_cols = self._scratch_view("_cols_buffer", (self.groups, w.shape[2], gy.shape[2]))
        np.matmul(w.transpose(0, 2, 1), gy, out=d_cols)
        fast = K.compiled()
        (fast.col2im_add_ if fast else col2im_add_)(gxp, d_cols.reshape(c, kh, kw, n, ho, wo), self.stride,
                                                    self.dilation)

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"]
        if self.padding != (0, 0):
            parts.append(f"padding={self.padding!r}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        return ", ".join(parts)
