import numpy as np
import pytest
import torch

from tricklab import nn
from tricklab.check import gradcheck
from tricklab.nn.noise import GaussianNoise

MODES = ["additive", "multiplicative"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("train", [True, False])
def test_gradcheck_between_linear_layers(rng, mode, train):
    net = nn.Sequential(nn.Linear(4, 6, rng=rng), GaussianNoise(0.5, mode=mode, rng=1), nn.Linear(6, 2, rng=rng))
    assert gradcheck(net.train(train), rng.standard_normal((5, 4))).ok


@pytest.mark.parametrize("mode", MODES)
def test_noise_moments(mode):
    std, n = 0.3, 200_000
    layer = GaussianNoise(std, mode=mode, rng=2, dtype=np.float64)
    x = np.full(n, 2.0)
    y = layer(x)
    noise = y - x if mode == "additive" else y / x - 1
    assert abs(noise.mean()) < 5 * std / np.sqrt(n)
    assert abs(noise.var() - std**2) < 5 * std**2 * np.sqrt(2 / n)
    np.testing.assert_allclose(noise, std * layer.noise, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_identity_at_eval_and_fresh_noise_in_training(rng, mode):
    layer = GaussianNoise(0.5, mode=mode, rng=3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    assert not np.array_equal(layer(x), layer(x))
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_autograd_with_the_same_noise(rng, mode):
    layer = GaussianNoise(0.4, mode=mode, rng=4, dtype=np.float64)
    x, gy = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    y = layer(x)
    gx = layer.backward(gy)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    eps = torch.from_numpy(layer.noise)
    yt = xt + 0.4 * eps if mode == "additive" else xt * (1 + 0.4 * eps)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12)


def test_std_zero_is_the_identity(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for mode in MODES:
        np.testing.assert_array_equal(GaussianNoise(0.0, mode=mode, rng=0)(x), x)


def test_multiplicative_noise_matches_the_variance_of_inverted_dropout():
    p, n = 0.3, 200_000
    x = np.ones(n)
    dropped = nn.Dropout(p, rng=5, dtype=np.float64)(x)
    gaussian = GaussianNoise(np.sqrt(p / (1 - p)), mode="multiplicative", rng=6, dtype=np.float64)(x)
    assert abs(gaussian.mean() - dropped.mean()) < 5 * np.sqrt(2 * p / (1 - p) / n)
    assert abs(gaussian.var() / dropped.var() - 1) < 0.02


@pytest.mark.parametrize("std", [-0.1, float("nan"), None])
def test_bad_std_names_the_argument(std):
    with pytest.raises(ValueError, match="GaussianNoise: std must be a number >= 0"):
        GaussianNoise(std)


def test_bad_mode_is_an_error():
    with pytest.raises(ValueError, match="GaussianNoise: mode must be one of"):
        GaussianNoise(0.1, mode="both")
