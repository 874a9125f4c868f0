"""Dropout (Srivastava et al. 2014) in the lecture's two forms, and folding the test-time scale.

References:
    Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I. and Salakhutdinov, R. "Dropout: A
    Simple Way to Prevent Neural Networks from Overfitting." JMLR 15, 2014.
"""

from __future__ import annotations

import copy

import numpy as np

from .._rng import RngLike, as_generator
from . import _kernels as K
from ._checks import check_probability
from .inference import is_inference_mode, output_buffer
from .linear import Linear
from .module import Module, Sequential

SCALINGS = ("inverted", "test")


def bernoulli_mask(rng: np.random.Generator, shape, keep: float, dtype, scale: float = 1,
                   out: np.ndarray | None = None) -> np.ndarray:
    """A mask of ``shape``, ``scale`` with probability ``keep`` (the lecture's alpha) and 0 otherwise,
    into ``out`` if given, else a fresh array: the one Bernoulli draw of Dropout, DropConnect and Shakeout.

    Drawn by :func:`keep_rule` from ``rng``'s raw bits (:func:`random_chunks`): the same draws as a
    :class:`Dropout` layer's mask for the same generator state and shape.
    """
    mask = np.empty(shape, dtype=dtype) if out is None else out
    threshold, chunks = random_chunks(rng, mask.size, keep)
    fast = K.compiled()
    (fast.bernoulli_ if fast else bernoulli_)(chunks, threshold, scale, mask)
    return mask


def bernoulli_(chunks: np.ndarray, threshold: int, scale, mask: np.ndarray) -> None:
    """mask_i = scale if r_i < threshold else 0, in place, for the random integers r = ``chunks``
    (one per entry of ``mask``, :func:`random_chunks`)."""
    flat = mask.reshape(-1)
    np.less(chunks, threshold, out=flat, casting="unsafe")
    if scale != 1:
        flat *= scale


def dropout(x: np.ndarray, chunks: np.ndarray, threshold: int, scale, mask: np.ndarray) -> np.ndarray:
    """y = x * mask with mask_i = scale if r_i < threshold else 0 written into ``mask`` (as
    :func:`bernoulli_`); ``mask`` has x's shape."""
    bernoulli_(chunks, threshold, scale, mask)
    return x * mask


def keep_rule(keep: float) -> tuple[int, int]:
    """How raw random bits decide "keep": ``(bits, threshold)``.

    Each unit reads its own ``bits``-bit chunk r of uniformly random bits (an integer in
    [0, 2^bits)) and is kept when r < threshold = keep * 2^bits, so P(keep) = threshold / 2^bits.
    That is exact with 1 bit for keep = 0.5, with 8 or 16 bits when keep is a multiple of 2^-8 or
    2^-16; otherwise 32 bits, with threshold = round(keep * 2^32), within 2^-33 of keep. Comparing
    integers from the generator's raw output is about 20x faster than ``rng.random(shape) < keep``.
    """
    for bits in (1, 8, 16):
        threshold = keep * 2**bits
        if threshold == int(threshold):
            return bits, int(threshold)
    return 32, int(round(keep * 2**32))


def random_chunks(rng: np.random.Generator, count: int, keep: float) -> tuple[int, np.ndarray]:
    """``(threshold, r)``: ``count`` random integers r_i, unit i kept iff r_i < threshold.

    The chunks are cut from 64-bit words of ``rng`` (little-endian order): single bits unpacked
    for keep = 0.5, else 8-, 16- or 32-bit integers viewing the same words (:func:`keep_rule`).
    """
    bits, threshold = keep_rule(keep)
    words = rng.integers(0, 2**64 - 1, size=-(-count * bits // 64), dtype=np.uint64, endpoint=True)
    if bits == 1:
        return threshold, np.unpackbits(words.view(np.uint8), count=count, bitorder="little")
    return threshold, words.view(f"<u{bits // 8}")[:count]


class Dropout(Module):
    """Turn off each unit with probability p, independently for every element and every call.

    ``p`` is PyTorch's *drop* probability; the lecture's keep probability is alpha = 1 - p. With a
    Bernoulli(alpha) mask m, drawn afresh on every forward pass in training::

        scaling="inverted"  train: y = m * x / alpha      eval: y = x
        scaling="test"      train: y = m * x              eval: y = alpha * x   (the lecture's classic form)

    Both make the eval output the expectation of the training output, E[y] (the ensemble-average
    approximation network(E[y])). Backward passes gradient only through kept units:
    dLoss/dx = m * dLoss/dy (/ alpha when inverted); in eval, dLoss/dx = dLoss/dy (* alpha for "test").
    A model trained with ``scaling="test"`` can have the alpha folded into the next layer's weights
    (W_test = alpha W_trained) with :func:`fold_dropout_scaling`. In eval under
    :func:`~tricklab.nn.inference.inference_mode` nothing is kept for backward and the classic
    form writes alpha x into an array the layer reuses on its next call there.
    """

    def __init__(self, p: float = 0.5, scaling: str = "inverted", rng: RngLike = None, dtype=None):
        super().__init__(dtype=dtype)
        name = type(self).__name__
        p = check_probability(name, "p (drop probability)", p)
        if scaling not in SCALINGS:
            raise ValueError(f"{name}: scaling must be one of {SCALINGS}, got {scaling!r}")
        self.p, self.scaling, self.rng = p, scaling, as_generator(rng)
        self._scale = None

    @property
    def keep(self) -> float:
        """The lecture's alpha = 1 - p."""
        return 1.0 - self.p

    def forward(self, x):
        x = self._cast_input(x)
        shape = self._mask_shape(x.shape)
        alpha = self.dtype.type(self.keep)
        if not self.training:
            scale = alpha if self.scaling == "test" else self.dtype.type(1)
            if is_inference_mode():
                self._scale = None
                return np.multiply(x, scale, out=output_buffer(self, x.shape)) if self.scaling == "test" else x
            self._scale = scale
            return x * scale if self.scaling == "test" else x
        # m ~ Bernoulli(alpha) from raw random bits; the mask stored is m / alpha (inverted) or m
        scale = self.dtype.type(1) / alpha if self.scaling == "inverted" else self.dtype.type(1)
        mask = self._scratch("_mask", shape)
        self._scale = mask
        if shape != x.shape:
            return x * bernoulli_mask(self.rng, shape, self.keep, self.dtype, scale, out=mask)
        threshold, chunks = random_chunks(self.rng, mask.size, self.keep)
        fast = K.compiled()
        return (fast.dropout if fast else dropout)(x, chunks, threshold, scale, mask)  # mask and product in one pass

    def _mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one mask draw, broadcast over the input: one entry per element."""
        return shape

    def backward(self, grad_output):
        return np.asarray(grad_output, dtype=self.dtype) * self._saved("_scale")

    def extra_repr(self) -> str:
        return f"p={self.p}, scaling={self.scaling!r}"


class Dropout2d(Dropout):
    """Spatial dropout (Tompson et al. 2015): whole channels of (N, C, H, W) images turned off, as
    ``torch.nn.Dropout2d``.

    Neighbouring pixels of a feature map are strongly correlated, so dropping pixels one by one
    hardly regularizes a convolutional network; spatial dropout drops feature maps instead. One
    Bernoulli(alpha) draw m[n, c] per example and channel (alpha = 1 - p), shared by all H x W
    pixels, with :class:`Dropout`'s two scalings::

        scaling="inverted"  train: y[n, c] = m[n, c] x[n, c] / alpha      eval: y = x
        scaling="test"      train: y[n, c] = m[n, c] x[n, c]              eval: y = alpha x

    Backward: dLoss/dx[n, c] = m[n, c] dLoss/dy[n, c] (/ alpha when inverted). Only 4-D input is
    taken (torch also takes unbatched (C, H, W) input, with a warning about its ambiguity).

    Reference: Tompson, J., Goroshin, R., Jain, A., LeCun, Y. and Bregler, C. "Efficient Object
    Localization Using Convolutional Networks." CVPR 2015.
    """

    def _mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, C, 1, 1): one draw per example and channel, shared by its pixels."""
        if len(shape) != 4:
            raise ValueError(f"Dropout2d got input of shape {shape}; expected (N, C, H, W)")
        return (shape[0], shape[1], 1, 1)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(f"Dropout2d expects examples of shape (C, H, W), got {tuple(input_shape)}")
        return tuple(input_shape)


def fold_dropout_scaling(model: Sequential) -> Sequential:
    """Return an inference copy of a classic-dropout model with the alpha folded into the weights.

    At eval a ``scaling="test"`` dropout layer outputs alpha * y; the next Linear layer computes
    W (alpha y) + b = (alpha W) y + b, so the dropout layer is removed and that layer's weights are
    multiplied by alpha (the lecture's W_test = alpha W_trained). Inverted-dropout layers are simply
    removed (they are the identity at eval). The copy is in eval mode; ``model`` is untouched.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"fold_dropout_scaling expects a Sequential, got {type(model).__name__}")
    layers = [copy.deepcopy(layer) for layer in model]
    kept: list[Module] = []
    pending = 1.0
    for i, layer in enumerate(layers):
        if isinstance(layer, Sequential):
            layer = fold_dropout_scaling(layer)
        if isinstance(layer, Dropout):
            if layer.scaling == "test":
                pending *= layer.keep
            continue
        if pending != 1.0:
            if not isinstance(layer, Linear):
                raise ValueError(
                    f"fold_dropout_scaling: layer {i} ({type(layer).__name__}) follows a classic dropout layer; "
                    "only a Linear layer can absorb the scale alpha"
                )
            layer.weight.data *= layer.dtype.type(pending)
            pending = 1.0
        kept.append(layer)
    if pending != 1.0:
        raise ValueError("fold_dropout_scaling: a classic dropout layer is last; no Linear layer follows to absorb alpha")
    return Sequential(*kept).eval()
