import numpy as np
import pytest
import torch
from scipy import stats

from tests.twins import tol
from tricklab import nn
from tricklab.check import gradcheck
from tricklab.nn.dropconnect import DropConnect


def _torch(a):
    return torch.from_numpy(np.array(a)).requires_grad_(True)


def test_same_seed_gives_the_weights_of_linear():
    dc, lin = DropConnect(7, 4, rng=3), nn.Linear(7, 4, rng=3)
    np.testing.assert_array_equal(dc.weight.data, lin.weight.data)
    np.testing.assert_array_equal(dc.bias.data, lin.bias.data)
    assert DropConnect(7, 4, bias=False, rng=0).bias is None


@pytest.mark.parametrize("mask", ["example", "batch"])
@pytest.mark.parametrize("activation", [None, "tanh", "sigmoid"])
def test_gradcheck_training_with_linear_before(rng, mask, activation):
    net = nn.Sequential(nn.Linear(4, 6, rng=rng), DropConnect(6, 3, p=0.4, mask=mask, activation=activation, rng=1))
    assert gradcheck(net, rng.standard_normal((5, 4))).ok


@pytest.mark.parametrize("inference", ["mean", "gaussian"])
def test_gradcheck_eval_with_linear_before(rng, inference):
    net = nn.Sequential(nn.Linear(4, 6, rng=rng),
                        DropConnect(6, 3, p=0.3, inference=inference, n_samples=16, activation="tanh", rng=2))
    assert gradcheck(net.eval(), rng.standard_normal((5, 4))).ok


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mask", ["example", "batch"])
def test_matches_torch_autograd_with_the_same_mask(rng, dtype, mask):
    layer = DropConnect(5, 4, p=0.5, mask=mask, activation="tanh", rng=rng, dtype=dtype)
    x = rng.standard_normal((6, 5)).astype(dtype)
    y = layer(x)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(gy)
    M = torch.from_numpy(layer.weight_mask)
    xt, Wt, bt = _torch(x), _torch(layer.weight.data), _torch(layer.bias.data)
    ut = torch.einsum("boi,bi->bo", M * Wt, xt) if mask == "example" else xt @ (M * Wt).T
    yt = torch.tanh(ut + bt)
    yt.backward(torch.from_numpy(gy))
    t = tol(dtype)
    np.testing.assert_allclose(y, yt.detach().numpy(), **t)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **t)
    np.testing.assert_allclose(layer.weight.grad, Wt.grad.numpy(), **t)
    np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), **t)


@pytest.mark.parametrize("mask", ["example", "batch"])
def test_p_zero_is_torch_linear(rng, mask):
    layer = DropConnect(5, 3, p=0.0, mask=mask, rng=rng, dtype=np.float64)
    twin = torch.nn.Linear(5, 3).double()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = rng.standard_normal((4, 5))
    gy = rng.standard_normal((4, 3))
    y, gx = layer(x), layer.backward(gy)
    xt = _torch(x)
    yt = twin(xt)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, twin.weight.grad.numpy(), rtol=1e-12)


def test_batch_mask_weight_gradient_is_zero_exactly_where_dropped(rng):
    layer = DropConnect(30, 20, p=0.5, mask="batch", rng=4, dtype=np.float64)
    x = rng.standard_normal((8, 30))
    layer(x)
    layer.backward(rng.standard_normal((8, 20)))
    M = layer.weight_mask
    assert M.shape == (20, 30) and 0 < M.sum() < M.size
    np.testing.assert_array_equal(layer.weight.grad == 0, M == 0)


def test_example_masks_are_drawn_per_example_and_reused_in_backward(rng):
    layer = DropConnect(6, 5, p=0.5, rng=5, dtype=np.float64)
    x = np.ones((3, 6))
    y = layer(x)
    M = layer.weight_mask
    assert M.shape == (3, 5, 6) and not np.array_equal(M[0], M[1])
    np.testing.assert_allclose(y, (M * layer.weight.data).sum(axis=2) + layer.bias.data)
    gy = rng.standard_normal((3, 5))
    gx = layer.backward(gy)
    np.testing.assert_allclose(layer.weight.grad, np.einsum("bo,boi->oi", gy, M))
    np.testing.assert_allclose(gx, np.einsum("bo,boi->bi", gy, M * layer.weight.data))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.7])
def test_fraction_of_dropped_connections_within_binomial_bound(p):
    layer = DropConnect(50, 40, p=p, rng=6)
    layer(np.ones((20, 50), dtype=np.float32))
    n = layer.weight_mask.size
    assert abs((layer.weight_mask == 0).sum() - p * n) < 5 * np.sqrt(n * p * (1 - p))


def test_training_moments_are_those_of_the_gaussian_rule(rng):
    """E[u] = keep W v + b and Var[u] = keep (1 - keep) (W ⊙ W)(v ⊙ v), from per-example masks."""
    layer = DropConnect(8, 3, p=0.3, rng=7, dtype=np.float64)
    v = rng.standard_normal(8)
    n = 20000
    u = layer(np.tile(v, (n, 1)))
    W, keep = layer.weight.data, 0.7
    mean = keep * W @ v + layer.bias.data
    var = keep * (1 - keep) * (W * W) @ (v * v)
    assert np.all(np.abs(u.mean(axis=0) - mean) < 5 * np.sqrt(var / n))
    # sample variance of n draws: standard error about var * sqrt(2 / n) (near-Gaussian sums)
    assert np.all(np.abs(u.var(axis=0) - var) < 6 * var * np.sqrt(2 / n))


def test_gaussian_inference_with_relu_is_the_gaussian_expectation(rng):
    layer = DropConnect(10, 4, p=0.5, inference="gaussian", n_samples=4000, activation="relu", rng=8,
                        dtype=np.float64).eval()
    x = rng.standard_normal((3, 10))
    r = layer(x)
    W, keep = layer.weight.data, 0.5
    mu = keep * x @ W.T + layer.bias.data
    sd = np.sqrt(keep * (1 - keep) * (x * x) @ (W * W).T)
    exact = mu * stats.norm.cdf(mu / sd) + sd * stats.norm.pdf(mu / sd)  # E[relu(N(mu, sd^2))]
    assert np.all(np.abs(r - exact) < 5 * sd / np.sqrt(4000))


def test_gaussian_inference_is_closer_to_the_ensemble_than_the_mean_rule(rng):
    """Through a ReLU, a(E[u]) underestimates E[a(u)]; moment matching recovers most of the gap."""
    kw = dict(p=0.5, activation="relu", rng=9, dtype=np.float64)
    layer = DropConnect(200, 6, **kw)
    x = np.abs(rng.standard_normal((1, 200)))
    ensemble = layer(np.repeat(x, 4000, axis=0)).mean(axis=0)
    by_mean = layer.eval()(x)[0]
    layer.inference, layer.n_samples = "gaussian", 4000
    by_gaussian = layer(x)[0]
    assert np.abs(by_gaussian - ensemble).max() < 0.2 * np.abs(by_mean - ensemble).max()


def test_train_is_random_and_eval_is_the_deterministic_mean(rng):
    layer = DropConnect(6, 3, p=0.5, activation="tanh", rng=10, dtype=np.float64)
    x = rng.standard_normal((4, 6))
    assert not np.array_equal(layer(x), layer(x))
    layer.eval()
    np.testing.assert_array_equal(layer(x), layer(x))
    np.testing.assert_allclose(layer(x), np.tanh(0.5 * x @ layer.weight.data.T + layer.bias.data), rtol=1e-12)


def test_gaussian_inference_without_activation_is_the_mean(rng):
    x = rng.standard_normal((4, 6))
    mean = DropConnect(6, 3, rng=11).eval()(x)
    gauss = DropConnect(6, 3, inference="gaussian", rng=11).eval()(x)
    np.testing.assert_array_equal(mean, gauss)


def test_activation_module_is_accepted_and_converted(rng):
    layer = DropConnect(4, 2, activation=nn.ReLU(), rng=0, dtype=np.float64)
    assert isinstance(layer.activation, nn.ReLU) and layer.activation.dtype == np.float64
    assert (layer(rng.standard_normal((3, 4))) >= 0).all()


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_p_names_the_argument(p):
    with pytest.raises(ValueError, match=r"p \(drop probability\) must be in \[0, 1\)"):
        DropConnect(3, 2, p=p)


@pytest.mark.parametrize("kwargs, name", [(dict(mask="unit"), "mask"), (dict(inference="sample"), "inference"),
                                          (dict(n_samples=0), "n_samples"), (dict(activation="gelu"), "activation")])
def test_bad_options_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"DropConnect: {name} must be"):
        DropConnect(3, 2, **kwargs)


def test_bad_sizes_and_inputs_are_errors():
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        DropConnect(0, 2)
    with pytest.raises(ValueError, match=r"DropConnect\(3, 2\) got input of shape \(4, 5\); expected \(batch, 3\)"):
        DropConnect(3, 2, rng=0)(np.zeros((4, 5), dtype=np.float32))
