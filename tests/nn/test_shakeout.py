import numpy as np
import pytest
import torch

from tests.twins import tol
from tricklab import nn
from tricklab.check import gradcheck
from tricklab.nn.shakeout import Shakeout


def _torch(a):
    return torch.from_numpy(np.array(a)).requires_grad_(True)


@pytest.mark.parametrize("tau, c", [(0.5, 0.1), (0.2, 1.0), (0.8, 0.05), (0.0, 0.3)])
def test_shaken_weight_has_expectation_w_exactly(tau, c):
    layer = Shakeout(9, 7, tau=tau, c=c, rng=0, dtype=np.float64)
    W1, W2 = layer.shaken_weights()
    np.testing.assert_allclose((1 - tau) * W1 + tau * W2, layer.weight.data, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(W2, -c * np.sign(layer.weight.data))


def test_training_output_has_expectation_of_the_eval_output(rng):
    layer = Shakeout(6, 3, tau=0.4, c=0.5, rng=1, dtype=np.float64)
    x = rng.standard_normal(6)
    n = 20000
    y = layer(np.tile(x, (n, 1)))
    expected = layer.eval()(x[None])[0]
    assert np.all(np.abs(y.mean(axis=0) - expected) < 5 * y.std(axis=0) / np.sqrt(n))


def test_c_zero_is_inverted_dropout_on_the_inputs_of_a_linear(rng):
    shake = Shakeout(6, 4, tau=0.3, c=0.0, rng=2, dtype=np.float64)
    shake.rng = np.random.default_rng(77)
    net = nn.Sequential(nn.Dropout(0.3, rng=77), nn.Linear(6, 4, rng=2, dtype=np.float64))
    x, gy = rng.standard_normal((5, 6)), rng.standard_normal((5, 4))
    np.testing.assert_allclose(shake(x), net(x), rtol=1e-12)
    np.testing.assert_allclose(shake.backward(gy), net.backward(gy), rtol=1e-12)
    np.testing.assert_allclose(shake.weight.grad, net[1].weight.grad, rtol=1e-12)
    np.testing.assert_allclose(shake.bias.grad, net[1].bias.grad, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch_autograd_with_the_same_switches(rng, dtype):
    tau, c = 0.4, 0.2
    layer = Shakeout(5, 3, tau=tau, c=c, rng=rng, dtype=dtype)
    x = rng.standard_normal((7, 5)).astype(dtype)
    y = layer(x)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(gy)
    r = torch.from_numpy(layer.mask)
    xt, Wt, bt = _torch(x), _torch(layer.weight.data), _torch(layer.bias.data)
    s = torch.sign(Wt)  # torch.sign has zero gradient, the convention Shakeout documents
    w_tilde = torch.where(r[:, None, :] == 1, (Wt + c * tau * s) / (1 - tau), -c * s)  # (batch, out, in)
    yt = torch.einsum("boi,bi->bo", w_tilde, xt) + bt
    yt.backward(torch.from_numpy(gy))
    t = tol(dtype)
    np.testing.assert_allclose(y, yt.detach().numpy(), **t)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **t)
    np.testing.assert_allclose(layer.weight.grad, Wt.grad.numpy(), **t)
    np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), **t)


@pytest.mark.parametrize("train", [True, False])
def test_gradcheck_with_linear_before(rng, train):
    net = nn.Sequential(nn.Linear(4, 6, rng=rng), Shakeout(6, 3, tau=0.5, c=0.3, rng=3))
    assert gradcheck(net.train(train), rng.standard_normal((5, 4))).ok


def test_switches_are_per_example_and_reused_in_backward(rng):
    layer = Shakeout(8, 3, tau=0.5, c=0.2, rng=4, dtype=np.float64)
    x = rng.standard_normal((1, 8)) + 5  # no zero inputs
    layer(x)
    r = layer.mask[0]
    assert 0 < r.sum() < r.size
    gy = rng.standard_normal((1, 3))
    gx = layer.backward(gy)
    W1, W2 = layer.shaken_weights()
    # a switched-off input unit passes no gradient to its weights, and sees the -c sgn(w) weights
    np.testing.assert_array_equal(layer.weight.grad[:, r == 0], 0)
    assert (layer.weight.grad[:, r == 1] != 0).all()
    np.testing.assert_allclose(gx[0, r == 0], (gy @ W2)[0, r == 0], rtol=1e-12)
    np.testing.assert_allclose(gx[0, r == 1], (gy @ W1)[0, r == 1], rtol=1e-12)
    masks = Shakeout(8, 3, tau=0.5, rng=5)
    masks(np.ones((2, 8), dtype=np.float32))
    assert not np.array_equal(masks.mask[0], masks.mask[1])


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_fraction_switched_off_within_binomial_bound(tau):
    layer = Shakeout(400, 2, tau=tau, rng=6)
    layer(np.ones((100, 400), dtype=np.float32))
    n = layer.mask.size
    assert abs((layer.mask == 0).sum() - tau * n) < 5 * np.sqrt(n * tau * (1 - tau))


def test_train_is_random_and_eval_is_linear(rng):
    layer = Shakeout(6, 3, tau=0.5, c=0.1, rng=7, dtype=np.float64)
    lin = nn.Linear(6, 3, rng=7, dtype=np.float64)
    x = rng.standard_normal((4, 6))
    assert not np.array_equal(layer(x), layer(x))
    np.testing.assert_allclose(layer.eval()(x), lin(x), rtol=1e-12)


@pytest.mark.parametrize("tau", [-0.1, 1.0, 2])
def test_bad_tau_names_the_argument(tau):
    with pytest.raises(ValueError, match=r"Shakeout: tau must be in \[0, 1\)"):
        Shakeout(3, 2, tau=tau)


@pytest.mark.parametrize("c", [-0.5, float("nan"), "1"])
def test_bad_c_names_the_argument(c):
    with pytest.raises(ValueError, match="Shakeout: c must be a number >= 0"):
        Shakeout(3, 2, c=c)
