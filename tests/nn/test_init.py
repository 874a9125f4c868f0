import math

import numpy as np
import pytest

from tricklab import nn
from tricklab.nn import init

SHAPE = (400, 300)  # fan_out, fan_in
FAN_IN, FAN_OUT = 300, 400


def _ulps_of(bound):
    return 4 * np.finfo(np.float64).eps * bound


def _assert_var(w, expected):
    # the sample variance of n iid draws has relative standard error about sqrt(2/n)
    assert abs(w.var() / expected - 1) < 6 * math.sqrt(2 / w.size)


@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_xavier_variances(gain):
    expected = gain**2 * 2 / (FAN_IN + FAN_OUT)
    _assert_var(init.xavier_uniform(SHAPE, gain=gain, rng=0), expected)
    _assert_var(init.xavier_normal(SHAPE, gain=gain, rng=0), expected)


@pytest.mark.parametrize("mode,fan", [("fan_in", FAN_IN), ("fan_out", FAN_OUT)])
@pytest.mark.parametrize("nonlinearity,a,gain2", [("relu", 0, 2.0), ("leaky_relu", 0.2, 2 / 1.04), ("tanh", 0, 25 / 9)])
def test_kaiming_variances(mode, fan, nonlinearity, a, gain2):
    _assert_var(init.kaiming_uniform(SHAPE, a=a, mode=mode, nonlinearity=nonlinearity, rng=1), gain2 / fan)
    _assert_var(init.kaiming_normal(SHAPE, a=a, mode=mode, nonlinearity=nonlinearity, rng=1), gain2 / fan)


def test_gains_match_torch():
    import torch
    for name in ("linear", "sigmoid", "tanh", "relu"):
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 0.3) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.3))


def _torch_bound_and_std(shape, a, mode="fan_in"):
    """torch's kaiming bound and std, from torch's own gain and fan functions."""
    import torch
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    gain = torch.nn.init.calculate_gain("leaky_relu", a)  # kaiming_*_'s default nonlinearity
    fan = fan_in if mode == "fan_in" else fan_out
    return gain * math.sqrt(3.0 / fan), gain / math.sqrt(fan)


@pytest.mark.parametrize("a", [0.0, 0.2, math.sqrt(5)])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_defaults_match_torch_so_that_a_counts(a, mode):
    bound, std = _torch_bound_and_std(SHAPE, a, mode)
    # the same draws: bounds an ulp apart give U[-b, b] = -b + 2b U a few ulps of b apart
    np.testing.assert_allclose(init.kaiming_uniform(SHAPE, a=a, mode=mode, rng=5, dtype=np.float64),
                               np.random.default_rng(5).uniform(-bound, bound, SHAPE), rtol=0, atol=_ulps_of(bound))
    np.testing.assert_allclose(init.kaiming_normal(SHAPE, a=a, mode=mode, rng=5, dtype=np.float64),
                               std * np.random.default_rng(5).standard_normal(SHAPE), rtol=1e-14)


def test_kaiming_uniform_with_a_sqrt5_is_torchs_linear_default():
    import torch
    bound, _ = _torch_bound_and_std(SHAPE, math.sqrt(5))
    w = torch.nn.init.kaiming_uniform_(torch.empty(SHAPE, dtype=torch.float64), a=math.sqrt(5))
    assert 0.999 * bound < w.abs().max().item() <= bound  # the bound is torch's
    assert torch.nn.Linear(FAN_IN, FAN_OUT).weight.abs().max().item() <= 1 / math.sqrt(FAN_IN)
    np.testing.assert_allclose(init.kaiming_uniform(SHAPE, a=math.sqrt(5), rng=6, dtype=np.float64),
                               init.default_linear(SHAPE, rng=6, dtype=np.float64), rtol=0, atol=_ulps_of(bound))


def test_named_kaiming_inits_keep_the_relu_gain():
    """Configs' init="kaiming_uniform" meant He's ReLU gain sqrt(2): a = 0 gives it bit for bit."""
    for name in ("kaiming_uniform", "kaiming_normal"):
        layer = nn.Linear(300, 400, init=name, rng=8)
        np.testing.assert_array_equal(layer.weight.data, init.INITIALIZERS[name](SHAPE, nonlinearity="relu", rng=8))


@pytest.mark.parametrize("param", [True, False, [0.1], {"slope": 0.1}, "0.1"])
def test_leaky_relu_gain_refuses_what_torch_refuses(param):
    import torch
    with pytest.raises(ValueError):
        torch.nn.init.calculate_gain("leaky_relu", param)
    with pytest.raises(ValueError, match="negative slope"):
        init.calculate_gain("leaky_relu", param)


def test_leaky_relu_gain_accepts_numbers():
    import torch
    for param in (None, 0, 1, 0.3, np.float32(0.25), np.int64(2)):
        expected = torch.nn.init.calculate_gain("leaky_relu", None if param is None else float(param))
        assert init.calculate_gain("leaky_relu", param) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("shape", [(5, 9), (9, 5), (6, 6)])
def test_orthogonal_is_orthogonal(shape):
    w = init.orthogonal(shape, gain=2.0, rng=3, dtype=np.float64)
    small = min(shape)
    gram = w @ w.T if shape[0] <= shape[1] else w.T @ w
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)


def test_default_linear_and_normal():
    w = init.default_linear(SHAPE, rng=2)
    assert np.abs(w).max() <= 1 / math.sqrt(FAN_IN)
    _assert_var(w, 1 / (3 * FAN_IN))
    n = init.normal(SHAPE, mean=1.0, std=0.5, rng=2)
    assert abs(n.mean() - 1.0) < 6 * 0.5 / math.sqrt(n.size)
    _assert_var(n, 0.25)
    assert not init.zeros((3, 2)).any()


def test_rng_accepts_seed_or_generator_and_is_reproducible():
    a = init.xavier_uniform((3, 4), rng=7)
    b = init.xavier_uniform((3, 4), rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        init.xavier_uniform((3, 4), rng="seven")


def test_every_initializer_is_usable_from_linear():
    for name in init.INITIALIZERS:
        layer = nn.Linear(5, 4, init=name, rng=0)
        assert layer.weight.shape == (4, 5) and layer.weight.dtype == np.float32
    assert not nn.Linear(5, 4, init=init.zeros, rng=0).weight.data.any()


def test_linear_uses_named_init():
    layer = nn.Linear(300, 400, init="orthogonal", rng=0, dtype=np.float64)
    np.testing.assert_allclose(layer.weight.data.T @ layer.weight.data, np.eye(300), atol=1e-10)
    with pytest.raises(ValueError, match="init must be a callable or one of"):
        nn.Linear(3, 4, init="glorot")


def test_identical_initialization_never_diverges(rng):
    """The lecture's key point: identically initialized units with identical connections stay identical."""
    from tricklab import optim

    net = nn.Sequential(nn.Linear(4, 6, init=lambda s, rng, dtype: init.constant(s, 0.3, dtype=dtype), rng=0),
                        nn.Tanh(), nn.Linear(6, 3, init=lambda s, rng, dtype: init.constant(s, -0.2, dtype=dtype), rng=0))
    net[0].bias.data[...] = 0.1
    net[2].bias.data[...] = 0.0
    opt = optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    x, y = rng.standard_normal((64, 4)).astype(np.float32), rng.integers(0, 3, 64)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        losses.append(crit(net(x), y))
        net.backward(crit.backward())
        opt.step()
    assert losses[-1] < losses[0]  # it did learn something...
    w1 = net[0].weight.data
    np.testing.assert_array_equal(w1, np.broadcast_to(w1[0], w1.shape))  # ...but every hidden unit is the same
    w2 = net[2].weight.data
    np.testing.assert_array_equal(w2, np.broadcast_to(w2[:, :1], w2.shape))
