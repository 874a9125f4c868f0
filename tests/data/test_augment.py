"""Augmentations: exact identities, inverses, per-example equivalence, seeding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import affine_transform

from tricklab.data import (Compose, DataLoader, ElasticDistortion, GaussianNoise, RandomRotation,
                           RandomStretch, RandomTranslation, rotate, stretch, translate)

AUGMENTATIONS = [RandomRotation(15), RandomStretch(0.15), RandomTranslation(2),
                 RandomTranslation(0.1, integer=False), ElasticDistortion(34, 4), GaussianNoise(0.1)]


@pytest.fixture
def batch():
    return np.random.default_rng(0).random((6, 28, 28)).astype(np.float32)


def smooth_images(n=3, size=28):
    """Off-centre anisotropic Gaussian blobs: smooth enough for bilinear resampling to be accurate."""
    r, c = np.indices((size, size))
    centres = np.linspace(11, 16, n)
    return np.stack([np.exp(-((r - r0) ** 2 / 50 + (c - 15) ** 2 / 32)) for r0 in centres]).astype(np.float32)


def per_example_params(aug, params, b):
    return params[:, b:b + 1] if isinstance(aug, ElasticDistortion) else params[b:b + 1]


@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=repr)
def test_shape_dtype_and_seed(aug, batch):
    out = aug(batch, np.random.default_rng(1))
    assert out.shape == batch.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, aug(batch, np.random.default_rng(1)))
    assert not np.array_equal(out, aug(batch, np.random.default_rng(2)))
    flat = aug(batch.reshape(6, 784), np.random.default_rng(1))
    assert flat.shape == (6, 784)
    np.testing.assert_array_equal(flat.reshape(batch.shape), out)


@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=repr)
def test_batch_equals_per_example(aug, batch):
    params = aug.params(batch.shape, np.random.default_rng(3))
    whole = aug.apply(batch, params)
    for b in range(len(batch)):
        single = aug.apply(batch[b:b + 1], per_example_params(aug, params, b))
        np.testing.assert_allclose(whole[b:b + 1], single, atol=1e-6)


def test_rotate_matches_scipy_affine_transform_per_image(batch):
    degrees = np.array([-15, -5, 0, 5, 10, 15.0])
    out = rotate(batch, degrees)
    c = np.array([13.5, 13.5])
    for img, d, got in zip(batch, np.deg2rad(degrees), out):
        A = np.array([[np.cos(d), np.sin(d)], [-np.sin(d), np.cos(d)]])
        ref = affine_transform(img.astype(np.float64), A, offset=c - A @ c, order=1, mode="constant")
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_rotate_90_is_rot90_and_rotation_inverts():
    odd = np.random.default_rng(0).random((2, 9, 9))
    np.testing.assert_allclose(rotate(odd, 90), np.rot90(odd, axes=(1, 2)), atol=1e-12)
    images = smooth_images()
    degrees = np.array([15.0, -12.0, 7.0])
    inner = (slice(None), slice(6, 22), slice(6, 22))
    back = rotate(rotate(images, degrees), -degrees)
    np.testing.assert_allclose(back[inner], images[inner], atol=0.03)
    twice = rotate(rotate(images, degrees), degrees)
    assert np.abs(twice[inner] - images[inner]).max() > 0.15


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [(28, 28), (9, 9), (6, 9)])
def test_quarter_turns_are_rot90_pixel_for_pixel(size, dtype):
    """Border pixels included: the sampling points of a quarter turn are whole pixels up to the
    rounding of cos and sin, and none may fall outside the grid (and get the fill value)."""
    images = np.random.default_rng(4).random((3, *size)).astype(dtype)
    turns = [(180, 2), (-180, 2), (540, 2), (-540, 2), (0, 0), (360, 0), (720, 0)]
    if size[0] == size[1]:
        turns += [(90, 1), (270, 3), (-90, 3), (450, 1), (-270, 1), (3690, 1)]
    for degrees, k in turns:
        out = rotate(images, degrees)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, np.rot90(images, k, axes=(1, 2)), err_msg=f"{degrees} degrees")
    if size[0] == size[1]:
        mixed = rotate(images, np.array([90.0, 180.0, 270.0]))
        for img, got, k in zip(images, mixed, (1, 2, 3)):
            np.testing.assert_array_equal(got, np.rot90(img, k))


def test_integer_translation_is_roll_on_interior(batch):
    out = translate(batch, np.array([[2, -3]] * 6))
    rolled = np.roll(batch, (2, -3), axis=(1, 2))
    np.testing.assert_array_equal(out[:, 2:, :-3], rolled[:, 2:, :-3])
    assert (out[:, :2] == 0).all() and (out[:, :, -3:] == 0).all()


def test_random_translation_draws_whole_pixels_within_range():
    shifts = RandomTranslation(2).params((1000, 28, 28), np.random.default_rng(0))
    assert set(np.unique(shifts)) == {-2, -1, 0, 1, 2}
    frac = RandomTranslation(0.1, integer=False).params((1000, 28, 20), np.random.default_rng(0))
    assert np.abs(frac[:, 0]).max() <= 2.8 and np.abs(frac[:, 1]).max() <= 2.0


def test_identities(batch):
    np.testing.assert_array_equal(stretch(batch, 1.0), batch)
    np.testing.assert_array_equal(rotate(batch, 0.0), batch)
    np.testing.assert_array_equal(RandomStretch(0.0)(batch, 0), batch)
    np.testing.assert_array_equal(ElasticDistortion(alpha=0.0)(batch, 0), batch)


def test_stretch_scales_each_axis():
    images = smooth_images(1)
    wide = stretch(images, [[1.0, 1.5]])[0]
    width = lambda im: (im.max(0) > 0.5).sum()
    height = lambda im: (im.max(1) > 0.5).sum()
    assert width(wide) > width(images[0]) and height(wide) == height(images[0])


def test_elastic_fields_are_smooth_and_scaled():
    aug = ElasticDistortion(alpha=34, sigma=4)
    fields = aug.params((4, 28, 28), np.random.default_rng(0))
    assert fields.shape == (2, 4, 28, 28)
    assert 0.2 < np.abs(fields).max() < 34
    assert np.abs(np.diff(fields, axis=-1)).max() < np.abs(fields).max() / 2


def test_noise_has_requested_std():
    out = GaussianNoise(0.1)(np.zeros((64, 28, 28), np.float32), np.random.default_rng(0))
    assert out.dtype == np.float32 and abs(out.std() - 0.1) < 0.002 and abs(out.mean()) < 0.002


@pytest.mark.parametrize("shape", [(5, 28, 28), (7, 40)], ids=["images", "sequences"])
def test_noise_draws_float32_like_the_configurations_noise(shape):
    """x + standard_normal(float32) * float32(std), bit for bit, from the same stream: what
    ``augment.noise`` in a configuration has drawn (experiment.py), alone and after a rotation."""
    x = np.random.default_rng(1).random(shape).astype(np.float32)
    expected = x + np.random.default_rng(3).standard_normal(shape, dtype=np.float32) * np.float32(0.3)
    out = GaussianNoise(0.3)(x, np.random.default_rng(3))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    if len(shape) == 3:
        rng, twin = np.random.default_rng(4), np.random.default_rng(4)
        rotated = RandomRotation(10)(x, twin)
        expected = rotated + twin.standard_normal(shape, dtype=np.float32) * np.float32(0.3)
        np.testing.assert_array_equal(Compose([RandomRotation(10), GaussianNoise(0.3)])(x, rng), expected)


def test_integer_input_becomes_float32():
    x = np.zeros((2, 28, 28), np.uint8)
    assert RandomRotation()(x, 0).dtype == np.float32 and GaussianNoise()(x, 0).dtype == np.float32


def test_bad_shape_names_it():
    with pytest.raises(ValueError, match=r"\(3, 100\)"):
        RandomRotation()(np.zeros((3, 100)), 0)


def test_compose_in_loader_keeps_labels():
    X, y = smooth_images(8).reshape(8, 784), np.arange(8)
    aug = Compose([RandomRotation(), RandomStretch(), RandomTranslation(), ElasticDistortion(), GaussianNoise()])
    loader = DataLoader(X, y, 4, rng=0, transform=aug)
    for xb, yb in loader:
        assert xb.shape == (4, 784) and xb.dtype == np.float32
        np.testing.assert_array_equal(X[yb].shape, xb.shape)
    assert sorted(np.concatenate([yb for _, yb in loader])) == list(range(8))
