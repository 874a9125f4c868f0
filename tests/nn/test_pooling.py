"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: torch parity on random geometries, gradcheck, ties, errors.

float64 results must equal torch's to 1e-10. float32 results are compared with torch in float64 on
the same (float32) values, allowing each entry SAFETY * u * n * m: u = 2^-24, n the roundings along
the entry's computation and m the magnitude of its terms, the same pooling applied to |x| (or its
backward to |g|), computed by torch in float64. torch's own float32 result must meet the same bound.
"""

import numpy as np
import pytest
import torch

from tests.rounding import SAFETY, UNIT
from tricklab import export, nn
from tricklab.check import gradcheck
from tricklab.nn.pooling import averaging_matrix

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


# ----------------------------------------------------------------------------- random geometries
def _window_layer(cls, rng):
    """A pooling layer with a random kernel, stride and padding and an input shape it accepts."""
    kernel = tuple(int(k) for k in rng.integers(1, 5, size=2))
    stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    hw = [int(rng.integers(max(1, k - 2 * p), k - 2 * p + 9)) for k, p in zip(kernel, padding)]
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), *hw)
    stride_arg = None if rng.random() < 0.25 else stride  # None: the kernel size
    return cls(kernel, stride_arg, padding), shape


def _adaptive_layer(rng):
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10)))
    size = [int(rng.integers(1, 2 * n + 1)) for n in shape[2:]]  # smaller, equal or larger than the input
    if rng.random() < 0.3:
        size[int(rng.integers(2))] = None
    return nn.AdaptiveAvgPool2d(tuple(size) if rng.random() < 0.8 else size[0] or 1), shape


def random_case(kind, seed):
    rng = np.random.default_rng(seed)
    layer, shape = _adaptive_layer(rng) if kind == "AdaptiveAvgPool2d" else _window_layer(getattr(nn, kind), rng)
    x = np.random.default_rng(seed + 1000).permutation(np.prod(shape)).reshape(shape) / 97.0 - 3.0
    return layer, x  # distinct values at least 1/97 apart: no ties, and finite differences never swap a maximum


KINDS = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
CASES = [(kind, seed) for kind in KINDS for seed in range(12)]


def _passes(layer, x, gy):
    """(output, input gradient) of tricklab and of its torch twin in torch's dtype of the layer."""
    y = layer(x)
    gx = layer.backward(gy)
    twin = export.to_torch(layer)
    xt = torch.tensor(x, requires_grad=True)
    yt = twin(xt)
    yt.backward(torch.tensor(gy))
    return (y, gx), (yt.detach().numpy(), xt.grad.numpy())


def _torch64(layer, x, gy):
    """torch's float64 output and input gradient for the float64 values of x and gy."""
    twin = export.to_torch(layer).double()
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    yt = twin(xt)
    yt.backward(torch.tensor(np.asarray(gy, np.float64)))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("kind,seed", CASES)
def test_float64_forward_and_input_gradient_match_torch(kind, seed):
    layer, x = random_case(kind, seed)
    layer.to(np.float64)
    gy = np.random.default_rng(seed).standard_normal(layer(x).shape)
    (y, gx), (yt, gxt) = _passes(layer, x, gy)
    assert y.shape == (x.shape[0], *layer.output_shape(x.shape[1:]))
    np.testing.assert_allclose(y, yt, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gx, gxt, rtol=1e-10, atol=1e-10)


def _roundings(layer, x_shape):
    """(n forward, n backward): roundings per output and per input-gradient entry, an upper bound for
    tricklab's order of operations and torch's (a sum of k terms rounds k - 1 times, each product or
    division once, each of the constants 1/k once)."""
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        _, ho, wo = layer.output_shape(x_shape[1:])
        a_h, a_w = averaging_matrix(x_shape[2], ho, np.float64) > 0, averaging_matrix(x_shape[3], wo, np.float64) > 0
        lh, lw = a_h.sum(axis=1).max(), a_w.sum(axis=1).max()  # the largest window
        ch, cw = a_h.sum(axis=0).max(), a_w.sum(axis=0).max()  # the most windows holding one input row, column
        # tricklab: two products of averaging matrices; torch: the window's sum divided by its size
        return lh + lw + 2 + lh * lw, ch + cw + 2 + ch * cw
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    overlap = -(-kh // sh) * -(-kw // sw)  # windows holding one input entry
    if isinstance(layer, nn.MaxPool2d):
        return 0, overlap - 1  # a maximum is exact; each input gradient sums its windows' gradients
    return kh * kw, overlap  # the mean of kh kw terms; the sum of the shares g / (kh kw)


@pytest.mark.parametrize("kind,seed", CASES)
def test_float32_matches_torch_within_rounding_bound(kind, seed):
    layer, x = random_case(kind, seed)
    layer.to(np.float32)
    x = x.astype(np.float32)
    gy = np.random.default_rng(seed).standard_normal(layer(x).shape).astype(np.float32)
    ours, theirs = _passes(layer, x, gy)
    reference = _torch64(layer, x, gy)
    magnitude_y = _torch64(layer, np.abs(x), gy)[0]  # the forward of |x|, the backward of |g| (same arg-max)
    magnitude_x = _torch64(layer, x, np.abs(gy))[1]
    n_forward, n_backward = _roundings(layer, x.shape)
    for what, i, n, m in (("output", 0, n_forward, magnitude_y), ("input gradient", 1, n_backward, magnitude_x)):
        allowed = SAFETY * UNIT[F32] * n * m
        for who, result in (("tricklab", ours), ("torch", theirs)):
            excess = np.abs(result[i] - reference[i]) - allowed
            assert excess.max() <= 0, f"{who} {what}: {excess.max():.3g} over the rounding bound"


@pytest.mark.parametrize("kind,seed", [(kind, seed) for kind in KINDS for seed in range(3)])
def test_gradcheck(kind, seed):
    layer, x = random_case(kind, seed)
    assert gradcheck(layer, x).ok


# ----------------------------------------------------------------------------- max pooling: ties, -inf, NaN
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 1))])
def test_max_pool_ties_go_where_torch_sends_them(kernel, stride, padding):
    layer = nn.MaxPool2d(kernel, stride, padding, dtype=np.float64)
    rng = np.random.default_rng(3)
    x = rng.integers(-1, 2, size=(2, 3, 7, 6)).astype(np.float64)  # three values: ties in every window
    gy = rng.standard_normal(layer(x).shape)
    (y, gx), (yt, gxt) = _passes(layer, x, gy)
    np.testing.assert_array_equal(y, yt)
    np.testing.assert_allclose(gx, gxt, rtol=1e-12, atol=1e-12)
    # the first maximum in row-major order: a constant image sends each window's gradient to its corner
    layer = nn.MaxPool2d(2, dtype=np.float64)
    layer(np.zeros((1, 1, 4, 4)))
    expected = np.zeros((1, 1, 4, 4))
    expected[..., ::2, ::2] = 1
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 2, 2))), expected)


def test_max_pool_window_of_minus_inf_keeps_its_gradient_in_the_image():
    """torch starts each window's maximum at its first unpadded entry, so padding never takes the gradient."""
    layer = nn.MaxPool2d(3, 2, 1, dtype=np.float64)
    x = np.full((1, 2, 5, 5), -np.inf)
    x[0, 1, 3, 3] = 1.0
    gy = np.arange(1.0, 19.0).reshape(1, 2, 3, 3)
    (y, gx), (yt, gxt) = _passes(layer, x, gy)
    np.testing.assert_array_equal(y, yt)
    np.testing.assert_array_equal(gx, gxt)
    assert gx.sum() == gy.sum()  # every window's gradient reached an input entry


def test_max_pool_propagates_nan_as_torch():
    layer = nn.MaxPool2d(2, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan  # two NaN in one window: torch takes the last one
    x[0, 0, 3, 3] = np.nan  # the window's last entry: a maximum found before it must give way
    gy = np.ones((1, 1, 2, 2))
    (y, gx), (yt, gxt) = _passes(layer, x, gy)
    np.testing.assert_array_equal(np.isnan(y), [[[[True, False], [False, True]]]])
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yt))
    np.testing.assert_array_equal(gx, gxt)


def test_max_pool_inf_gradient_stays_at_the_arg_max():
    layer = nn.MaxPool2d(2, dtype=np.float64)
    layer(np.arange(16.0).reshape(1, 1, 4, 4))
    gx = layer.backward(np.full((1, 1, 2, 2), np.inf))
    assert np.isinf(gx).sum() == 4 and not np.isnan(gx).any()


# ----------------------------------------------------------------------------- average pooling
def test_avg_pool_counts_the_padding():
    layer = nn.AvgPool2d(3, 1, 1, dtype=np.float64)
    y = layer(np.ones((1, 1, 3, 3)))
    assert y[0, 0, 0, 0] == 4 / 9 and y[0, 0, 0, 1] == 6 / 9 and y[0, 0, 1, 1] == 1.0


def test_averaging_matrix_is_torchs_start_end_rule():
    # 5 rows to 3: start = floor(a 5/3) = 0, 1, 3; end = ceil((a+1) 5/3) = 2, 4, 5 (overlapping windows)
    np.testing.assert_allclose(averaging_matrix(5, 3, np.float64),
                               [[1 / 2, 1 / 2, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1 / 2, 1 / 2]])
    np.testing.assert_array_equal(averaging_matrix(2, 4, np.float64), [[1, 0], [1, 0], [0, 1], [0, 1]])


def test_global_average_pooling():
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 7))
    layer = nn.AdaptiveAvgPool2d(1, dtype=np.float64)
    np.testing.assert_allclose(layer(x), x.mean(axis=(2, 3), keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(layer.backward(np.ones((3, 4, 1, 1))), np.full(x.shape, 1 / 35), rtol=1e-13)
    assert layer.output_shape((4, 5, 7)) == (4, 1, 1)
    assert nn.AdaptiveAvgPool2d((None, 2)).output_shape((4, 5, 7)) == (4, 5, 2)


# ----------------------------------------------------------------------------- errors
LAYERS = [lambda: nn.MaxPool2d(2), lambda: nn.AvgPool2d(2), lambda: nn.AdaptiveAvgPool2d(1)]


@pytest.mark.parametrize("make", LAYERS)
def test_input_that_is_not_images_names_the_layer_and_the_expected_shape(make):
    layer = make()
    name = type(layer).__name__
    with pytest.raises(ValueError, match=rf"^{name}\(.*\) got input of shape \(3, 8, 8\); expected \(N, C, H, W\)$"):
        layer(np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"^{name}\(.*\) expects examples of shape \(C, H, W\), got \(64,\)$"):
        layer.output_shape((64,))
    with pytest.raises(RuntimeError, match=f"{name}.backward called before forward"):
        layer.backward(np.zeros((1, 1, 1, 1), dtype=np.float32))
    layer(np.zeros((2, 3, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"{name}.backward got a gradient of shape \(2, 3, 4, 4\); expected the "
                                         rf"output's shape \(2, 3, (2, 2|1, 1)\)"):
        layer.backward(np.zeros((2, 3, 4, 4), dtype=np.float32))


def test_image_smaller_than_the_kernel_is_an_error():
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=\(3, 3\).*images of 2x5 pixels are smaller than the "
                                         r"\(padded\) kernel; the output would be 0x1"):
        nn.MaxPool2d(3).output_shape((1, 2, 5))
    with pytest.raises(ValueError, match="images of 2x2 pixels are smaller"):
        nn.AvgPool2d(3)(np.zeros((1, 1, 2, 2), dtype=np.float32))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(kernel_size=0), "kernel_size must be a positive integer or a pair of them, got 0"),
    (dict(kernel_size=(2, 2, 2)), r"kernel_size must be a positive integer or a pair of them, got \(2, 2, 2\)"),
    (dict(kernel_size=True), "kernel_size must be a positive integer"),
    (dict(kernel_size=2, stride=0), "stride must be a positive integer"),
    (dict(kernel_size=2, padding=-1), "padding must be a non-negative integer"),
    (dict(kernel_size=3, padding=2), r"padding \(2, 2\) must be at most half of kernel_size \(3, 3\)"),
])
@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_bad_window_arguments_are_refused(cls, kwargs, needle):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: {needle}"):
        cls(**kwargs)


@pytest.mark.parametrize("size", [0, (2, 0), (None, -1), None, True, (1, 2, 3)])
def test_bad_output_size_is_refused(size):
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d: output_size must be a positive integer or a pair"):
        nn.AdaptiveAvgPool2d(size)


def test_toml_lists_are_pairs():
    layer = nn.MaxPool2d([2, 3], [1, 2], [1, 0])
    assert (layer.kernel_size, layer.stride, layer.padding) == ((2, 3), (1, 2), (1, 0))
    assert nn.AvgPool2d(3).stride == (3, 3)
