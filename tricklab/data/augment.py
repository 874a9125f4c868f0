"""Data augmentation: new labelled examples made on the fly from each training minibatch.

Small distortions that leave the class unchanged (rotations, stretches, shifts, elastic
deformations, noise) give the network new examples for free and teach it the invariances.
Every geometric augmentation is a resampling ``out[b, p] = in[b, q_b(p)]`` of an image batch of
shape (B, H, W), where ``q_b`` maps output pixel ``p = (row, col)`` to a sampling point in the
input. The whole batch is resampled with ONE ``scipy.ndimage.map_coordinates`` call whose first
coordinate is the (integer) example index, with bilinear interpolation (order 1; a higher spline
order would prefilter across the batch axis and mix examples) and zero outside the image.

Each random augmentation ``aug`` is called as ``aug(xb, rng) -> xb'``: it draws its per-example
parameters with ``aug.params(shape, rng)`` and applies them with ``aug.apply(xb, params)``.
Batches are (B, H, W), or flattened (B, H*W) with ``image_shape=(H, W)``; the output has the
input's shape and floating dtype (integer images come back as float32); labels are untouched.

References:
    Simard, Steinkraus & Platt (2003), "Best practices for convolutional neural networks applied
    to visual document analysis", ICDAR (affine and elastic distortions of MNIST).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from .._rng import RngLike, as_generator


def _as_images(xb: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """View ``xb`` as a float (B, H, W) batch; (B, H*W) input is reshaped with ``image_shape``."""
    xb = np.asarray(xb)
    if not np.issubdtype(xb.dtype, np.floating):
        xb = xb.astype(np.float32)
    if xb.ndim == 3:
        return xb
    if xb.ndim == 2 and xb.shape[1] == image_shape[0] * image_shape[1]:
        return xb.reshape(len(xb), *image_shape)
    raise ValueError(f"expected an image batch of shape (B, H, W) or (B, {image_shape[0]}*"
                     f"{image_shape[1]}) for image_shape={tuple(image_shape)}, got {xb.shape}")


def _center(H: int, W: int) -> np.ndarray:
    return np.array([(H - 1) / 2, (W - 1) / 2])


def warp(batch: np.ndarray, coords: np.ndarray, cval: float = 0.0) -> np.ndarray:
    """Bilinear resampling ``out[b, i, j] = batch[b, coords[0, b, i, j], coords[1, b, i, j]]``.

    Args:
        batch: ndarray of shape (B, H, W).
        coords: ndarray of shape (2, B, H, W): (row, col) sampling points in the input.
        cval: value outside the image.
    """
    B, H, W = batch.shape
    if coords.shape != (2, B, H, W):
        raise ValueError(f"coords of shape {coords.shape}, expected (2, {B}, {H}, {W})")
    index = np.broadcast_to(np.arange(B, dtype=np.float64)[:, None, None], (B, H, W))
    points = np.stack([index, coords[0], coords[1]])
    return map_coordinates(batch, points, output=batch.dtype, order=1, mode="constant", cval=cval)


def affine(batch: np.ndarray, matrices: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """Per-example affine warp about the image centre ``c``: ``q_b(p) = A_b (p - c) + c + t_b``.

    Args:
        batch: ndarray of shape (B, H, W).
        matrices: ``A``, ndarray of shape (B, 2, 2) or (2, 2), mapping output to input offsets.
        offsets: ``t``, ndarray of shape (B, 2) or (2,) in (row, col) pixels; default 0.
    """
    B, H, W = batch.shape
    A = np.broadcast_to(np.asarray(matrices, dtype=np.float64), (B, 2, 2))
    t = np.broadcast_to(np.zeros(2) if offsets is None else np.asarray(offsets, np.float64), (B, 2))
    c = _center(H, W)
    rel = np.indices((H, W), dtype=np.float64) - c[:, None, None]
    coords = np.einsum("bij,jhw->ibhw", A, rel) + (c + t).T[:, :, None, None]
    return warp(batch, _snap_to_pixels(coords, max(H, W)))


def _snap_to_pixels(coords: np.ndarray, size: int) -> np.ndarray:
    """Move sampling points within rounding error of a whole pixel onto it.

    ``A (p - c) + c + t`` carries the rounding of ``A``'s entries (cos and sin) and of the sums, a
    few ulps of the coordinates' magnitude ``m``. Left alone, a corner of a 180 degree turn lands
    1e-15 outside the grid and gets the fill value, and other pixels mix in 1e-15 of a neighbour.
    The tolerance ``64 eps m`` bounds that rounding; no intended point is so close to a pixel.
    """
    magnitude = max(float(size), float(np.abs(coords).max(initial=0.0)))
    nearest = np.rint(coords)
    return np.where(np.abs(coords - nearest) <= 64 * np.finfo(np.float64).eps * magnitude, nearest, coords)


def rotate(batch: np.ndarray, degrees: np.ndarray | float) -> np.ndarray:
    """Rotate each image counter-clockwise (as displayed, rows downwards) by ``degrees[b]``.

    Output pixel ``p`` samples the input at ``R(-theta) (p - c) + c`` with, in (row, col)
    coordinates, ``R(-theta) = [[cos, sin], [-sin, cos]]``. A quarter turn equals ``np.rot90``
    pixel for pixel (90 degrees is ``np.rot90(x)``, 180 is ``np.rot90(x, 2)``): the angle is
    reduced modulo 360 first (exact), so its rounding stays that of an angle below 2 pi.
    """
    degrees = np.mod(np.broadcast_to(np.asarray(degrees, np.float64), (len(batch),)), 360.0)
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    return affine(batch, np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1))


def stretch(batch: np.ndarray, scales: np.ndarray | float) -> np.ndarray:
    """Scale each image about its centre by ``scales[b] = (s_row, s_col)``: ``q(p) = c + (p - c) / s``."""
    s = np.broadcast_to(np.asarray(scales, np.float64), (len(batch), 2))
    A = np.zeros((len(batch), 2, 2))
    A[:, 0, 0], A[:, 1, 1] = 1 / s[:, 0], 1 / s[:, 1]
    return affine(batch, A)


def translate(batch: np.ndarray, shifts: np.ndarray | float) -> np.ndarray:
    """Shift each image by ``shifts[b] = (d_row, d_col)`` pixels: ``out[p] = in[p - d]``, zero fill."""
    d = np.broadcast_to(np.asarray(shifts, np.float64), (len(batch), 2))
    return affine(batch, np.eye(2), -d)


def elastic(batch: np.ndarray, fields: np.ndarray) -> np.ndarray:
    """Displace each pixel by a field: ``out[b, p] = in[b, p + fields[:, b, p]]``.

    ``fields`` has shape (2, B, H, W): row and column displacements in pixels.
    """
    B, H, W = batch.shape
    return warp(batch, np.indices((H, W), dtype=np.float64)[:, None] + fields)


def elastic_fields(shape: tuple[int, int, int], alpha: float, sigma: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Simard et al.'s smooth random displacement fields for a batch of ``shape`` (B, H, W).

    ``d = alpha * (G_sigma * U)`` with ``U ~ Uniform(-1, 1)`` per pixel and direction, and
    ``G_sigma`` a Gaussian filter over the two image axes only (``sigma=(0, 0, s, s)``).
    Returns ndarray of shape (2, B, H, W).
    """
    u = rng.uniform(-1.0, 1.0, size=(2, *shape))
    return alpha * gaussian_filter(u, sigma=(0, 0, sigma, sigma), mode="constant")


class Augmentation:
    """Base class: ``aug(xb, rng)`` draws ``params(images.shape, rng)`` and calls ``apply``."""

    def __init__(self, image_shape: tuple[int, int] = (28, 28)):
        self.image_shape = tuple(image_shape)

    def params(self, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _apply(self, images: np.ndarray, params: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply(self, xb: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Apply the augmentation with given per-example ``params``; same shape as ``xb``."""
        shape = np.shape(xb)
        return self._apply(_as_images(xb, self.image_shape), params).reshape(shape)

    def __call__(self, xb: np.ndarray, rng: RngLike = None) -> np.ndarray:
        images = _as_images(xb, self.image_shape)
        return self.apply(xb, self.params(images.shape, as_generator(rng)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class RandomRotation(Augmentation):
    """Rotate each image by an angle ``theta ~ U(-max_degrees, max_degrees)`` (see :func:`rotate`)."""

    def __init__(self, max_degrees: float = 15.0, image_shape: tuple[int, int] = (28, 28)):
        super().__init__(image_shape)
        self.max_degrees = max_degrees

    def params(self, shape, rng):
        return rng.uniform(-self.max_degrees, self.max_degrees, size=shape[0])

    def _apply(self, images, params):
        return rotate(images, params)


class RandomStretch(Augmentation):
    """Scale rows and columns independently by ``s ~ U(1 - max_scale, 1 + max_scale)`` each."""

    def __init__(self, max_scale: float = 0.15, image_shape: tuple[int, int] = (28, 28)):
        super().__init__(image_shape)
        if not 0 <= max_scale < 1:
            raise ValueError(f"max_scale must be in [0, 1), got {max_scale}")
        self.max_scale = max_scale

    def params(self, shape, rng):
        return rng.uniform(1 - self.max_scale, 1 + self.max_scale, size=(shape[0], 2))

    def _apply(self, images, params):
        return stretch(images, params)


class RandomTranslation(Augmentation):
    """Shift each image by ``(d_row, d_col)``, each uniform in ``[-m, m]``.

    ``max_shift`` is in pixels if at least 1, else a fraction of the image height and width
    (``m = max_shift * H`` for rows). With ``integer=True`` (default) the shifts are whole pixels,
    drawn from ``{-floor(m), ..., floor(m)}``, so no interpolation blurs the image.
    """

    def __init__(self, max_shift: float = 2, integer: bool = True,
                 image_shape: tuple[int, int] = (28, 28)):
        super().__init__(image_shape)
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift, self.integer = max_shift, integer

    def _limits(self, H: int, W: int) -> np.ndarray:
        m = np.full(2, float(self.max_shift))
        return m * np.array([H, W]) if self.max_shift < 1 else m

    def params(self, shape, rng):
        m = self._limits(shape[1], shape[2])
        if self.integer:
            m = np.floor(m).astype(np.int64)
            return rng.integers(-m, m + 1, size=(shape[0], 2)).astype(np.float64)
        return rng.uniform(-m, m, size=(shape[0], 2))

    def _apply(self, images, params):
        return translate(images, params)


class ElasticDistortion(Augmentation):
    """Elastic distortion (Simard et al. 2003): ``out[p] = in[p + d(p)]``, ``d = alpha * G_sigma * U(-1, 1)``.

    The paper's MNIST values are ``alpha=34``, ``sigma=4`` (pixels); see :func:`elastic_fields`.
    ``params`` are the fields, of shape (2, B, H, W): example ``b``'s are ``params[:, b:b+1]``.
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, image_shape: tuple[int, int] = (28, 28)):
        super().__init__(image_shape)
        self.alpha, self.sigma = alpha, sigma

    def params(self, shape, rng):
        return elastic_fields(shape, self.alpha, self.sigma, rng)

    def _apply(self, images, params):
        return elastic(images, params)


class GaussianNoise(Augmentation):
    """Additive noise ``x' = x + std * n``, ``n ~ N(0, I)``, for a batch of any shape (images or
    MNIST-1D sequences).

    ``params(shape, rng)`` is the noise ``std * n`` itself, of the batch's shape, drawn in float32
    (``rng.standard_normal(shape, dtype=np.float32) * np.float32(std)``): the draw the configuration's
    ``augment.noise`` has always made, so its runs keep their numbers bit for bit.
    """

    def __init__(self, std: float = 0.1, image_shape: tuple[int, int] = (28, 28)):
        super().__init__(image_shape)
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.std = float(std)

    def params(self, shape, rng):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(self.std)

    def apply(self, xb, params):
        xb = np.asarray(xb)
        dtype = xb.dtype if np.issubdtype(xb.dtype, np.floating) else np.float32
        return (xb + params).astype(dtype, copy=False)

    def __call__(self, xb, rng=None):
        return self.apply(xb, self.params(np.shape(xb), as_generator(rng)))


class Compose:
    """Apply augmentations in order, all drawing from the same ``rng``: ``aug_k(...aug_1(xb))``."""

    def __init__(self, augmentations: Sequence):
        self.augmentations = list(augmentations)

    def __call__(self, xb: np.ndarray, rng: RngLike = None) -> np.ndarray:
        rng = as_generator(rng)
        for aug in self.augmentations:
            xb = aug(xb, rng)
        return xb

    def __repr__(self) -> str:
        return f"Compose({self.augmentations!r})"
