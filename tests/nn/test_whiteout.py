import numpy as np
import pytest
import torch

from tests.twins import tol
from tricklab import nn
from tricklab.check import gradcheck
from tricklab.nn.whiteout import Whiteout

MODES = ["additive", "multiplicative"]


def _torch(a):
    return torch.from_numpy(np.array(a)).requires_grad_(True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gamma, lam", [(1.0, 0.0), (0.5, 0.1), (1.5, 0.05), (0.0, 0.2)])
def test_gradcheck_training_with_linear_before(rng, mode, gamma, lam):
    net = nn.Sequential(nn.Linear(4, 6, rng=rng), Whiteout(6, 3, sigma=0.3, gamma=gamma, lam=lam, mode=mode, rng=1))
    assert gradcheck(net, rng.standard_normal((5, 4))).ok


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_eval_with_linear_before(rng, mode):
    net = nn.Sequential(nn.Linear(4, 6, rng=rng), Whiteout(6, 3, sigma=0.3, mode=mode, rng=2))
    assert gradcheck(net.eval(), rng.standard_normal((5, 4))).ok


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("through_std", [True, False])
def test_matches_torch_autograd_with_the_same_noise(rng, dtype, mode, through_std):
    sigma, gamma, lam, eps = 0.2, 0.7, 0.05, 1e-8
    layer = Whiteout(5, 4, sigma=sigma, gamma=gamma, lam=lam, mode=mode, grad_through_std=through_std,
                     eps=eps, rng=rng, dtype=dtype)
    x = rng.standard_normal((6, 5)).astype(dtype)
    y = layer(x)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(gy)
    z = torch.from_numpy(layer.noise)
    xt, Wt, bt = _torch(x), _torch(layer.weight.data), _torch(layer.bias.data)
    s = torch.sqrt(sigma**2 * (Wt.abs() + eps) ** (-gamma) + lam)
    if not through_std:
        s = s.detach()
    e = s * z  # (batch, out, in): one draw per connection and example
    x_tilde = xt[:, None, :] + e if mode == "additive" else xt[:, None, :] * (1 + e)
    yt = (Wt * x_tilde).sum(dim=2) + bt
    yt.backward(torch.from_numpy(gy))
    t = tol(dtype) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, yt.detach().numpy(), **t)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **t)
    np.testing.assert_allclose(layer.weight.grad, Wt.grad.numpy(), **t)
    np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), **t)


@pytest.mark.parametrize("mode", MODES)
def test_output_mean_and_variance_match_the_formula(rng, mode):
    layer = Whiteout(5, 3, sigma=0.3, gamma=1.0, lam=0.1, mode=mode, rng=3, dtype=np.float64)
    x = rng.standard_normal((1, 5))
    n = 20000
    y = layer(np.repeat(x, n, axis=0))
    var = layer.output_variance(x)[0]
    W, s = layer.weight.data, layer.noise_std()
    expected_var = (W**2 * s**2 * (1 if mode == "additive" else x**2)).sum(axis=1)
    np.testing.assert_allclose(var, expected_var, rtol=1e-12)
    np.testing.assert_allclose(s**2, 0.09 / (np.abs(W) + 1e-8) + 0.1, rtol=1e-12)
    mean = layer.eval()(x)[0]
    assert np.all(np.abs(y.mean(axis=0) - mean) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(y.var(axis=0) - var) < 6 * var * np.sqrt(2 / n))


@pytest.mark.parametrize("through_std", [True, False])
def test_expected_weight_gradient_is_that_of_the_penalized_loss(rng, through_std):
    """Linear unit, squared loss: E[loss] = clean loss + 1/2 sum_j w_j^2 var_j(w).

    Differentiating through the std gives the gradient of that penalty, (2 - gamma) sigma^2
    |w|^(1 - gamma) sgn(w) / 2 + lam w; holding the noise fixed gives sigma^2 |w|^(1 - gamma) sgn(w)
    + lam w (the variance treated as a constant).
    """
    sigma, gamma, lam = 0.3, 1.0, 0.05
    layer = Whiteout(4, 1, sigma=sigma, gamma=gamma, lam=lam, grad_through_std=through_std, rng=4, dtype=np.float64)
    x, t = rng.standard_normal((1, 4)), np.array([[0.7]])
    W = layer.weight.data[0]
    clean = (x @ W + layer.bias.data - t[0]) * x[0]
    a = np.abs(W) + 1e-8
    variance_fixed = sigma**2 * W * a**-gamma + lam * W
    through = variance_fixed - 0.5 * gamma * sigma**2 * W**2 * a ** (-gamma - 1) * np.sign(W)
    penalty, other = (through, variance_fixed) if through_std else (variance_fixed, through)
    n, rounds = 2000, 30
    grads = []
    for _ in range(rounds):
        layer.zero_grad()
        y = layer(np.repeat(x, n, axis=0))
        layer.backward((y - t) / n)  # d/dy of mean_b (y_b - t)^2 / 2
        grads.append(layer.weight.grad[0].copy())
    grads = np.array(grads)
    se = grads.std(axis=0, ddof=1) / np.sqrt(rounds)
    assert np.all(np.abs(grads.mean(axis=0) - (clean + penalty)) < 5 * se)
    assert np.any(np.abs(grads.mean(axis=0) - (clean + other)) > 10 * se)  # the test can tell them apart


def test_no_noise_is_linear_and_eval_is_linear(rng):
    x = rng.standard_normal((4, 6))
    lin = nn.Linear(6, 3, rng=5, dtype=np.float64)
    quiet = Whiteout(6, 3, sigma=0.0, gamma=1.0, lam=0.0, rng=5, dtype=np.float64)
    np.testing.assert_allclose(quiet(x), lin(x), rtol=1e-12)
    noisy = Whiteout(6, 3, sigma=0.5, rng=5, dtype=np.float64)
    assert not np.allclose(noisy(x), lin(x))
    np.testing.assert_allclose(noisy.eval()(x), lin(x), rtol=1e-12)


def test_noise_is_per_example_and_larger_on_small_weights(rng):
    layer = Whiteout(3, 2, sigma=0.2, rng=6, dtype=np.float64)
    y = layer(np.ones((2, 3)))
    assert layer.noise.shape == (2, 2, 3) and not np.allclose(y[0], y[1])
    layer.weight.data[...] = [[0.01, 0.1, 1.0], [-1.0, -0.1, -0.01]]
    s = layer.noise_std()
    assert s[0, 0] > s[0, 1] > s[0, 2] and s[1, 2] > s[1, 1] > s[1, 0]


def test_zero_weight_gets_finite_noise(rng):
    layer = Whiteout(3, 2, sigma=0.2, gamma=1.5, rng=7, dtype=np.float64)
    layer.weight.data[0, 0] = 0.0
    y = layer(rng.standard_normal((4, 3)))
    layer.backward(np.ones_like(y))
    assert np.isfinite(y).all() and np.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("name", ["sigma", "gamma", "lam"])
def test_negative_hyperparameters_name_the_argument(name):
    with pytest.raises(ValueError, match=f"Whiteout: {name} must be a number >= 0"):
        Whiteout(3, 2, **{name: -0.1})


def test_bad_mode_and_eps_are_errors():
    with pytest.raises(ValueError, match="Whiteout: mode must be one of"):
        Whiteout(3, 2, mode="both")
    with pytest.raises(ValueError, match="Whiteout: eps must be > 0 when gamma > 0"):
        Whiteout(3, 2, eps=0.0)
