import numpy as np
import pytest
import torch

from tricklab import nn
from tricklab.nn.constraints import MaxNorm, max_norm_
from tricklab.nn.parameter import Parameter


def _row_norms(w, dim=0):
    axes = tuple(a for a in range(w.ndim) if a != dim)
    return np.sqrt((w.astype(np.float64) ** 2).sum(axis=axes))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, dim", [((8, 5), 0), ((8, 5), 1), ((6, 3, 2, 2), 0)])
def test_matches_torch_renorm(rng, dtype, shape, dim):
    w = (rng.standard_normal(shape) * 1.5).astype(dtype)
    p = Parameter(w)
    expected = torch.renorm(torch.from_numpy(w.copy()), p=2, dim=dim, maxnorm=2.0).numpy()
    max_norm_([p], max_norm=2.0, dim=dim)
    # torch.renorm divides by (norm + 1e-7): a relative difference of about 1e-7 / norm
    np.testing.assert_allclose(p.data, expected, rtol=1e-6 if dtype == np.float32 else 1e-7, atol=1e-7)


def test_norms_capped_and_short_rows_untouched_bit_for_bit(rng):
    layer = nn.Linear(10, 6, rng=rng, dtype=np.float64)
    layer.weight.data[:3] *= 20  # these rows are far outside the ball
    before = layer.weight.data.copy()
    inside = _row_norms(before) <= 3.0
    assert inside.any() and not inside.all()
    assert max_norm_(layer, max_norm=3.0) == int((~inside).sum())
    after = _row_norms(layer.weight.data)
    assert np.all(after <= 3.0 * (1 + 1e-12))
    np.testing.assert_allclose(after[~inside], 3.0, rtol=1e-12)
    np.testing.assert_array_equal(layer.weight.data[inside], before[inside])
    # rescaling keeps each row's direction
    np.testing.assert_allclose(layer.weight.data[~inside] / after[~inside, None],
                               before[~inside] / _row_norms(before)[~inside, None], rtol=1e-12)


def test_module_form_constrains_weights_only(rng):
    net = nn.Sequential(nn.Linear(4, 5, rng=rng), nn.ReLU(), nn.Sequential(nn.Linear(5, 3, rng=rng)))
    for p in net.parameters():
        p.data *= 100
    biases = [net[0].bias.data.copy(), net[2][0].bias.data.copy()]
    max_norm_(net, max_norm=2.0)
    for w in (net[0].weight.data, net[2][0].weight.data):
        assert np.all(_row_norms(w) <= 2.0 * (1 + 1e-6))
    np.testing.assert_array_equal(net[0].bias.data, biases[0])
    np.testing.assert_array_equal(net[2][0].bias.data, biases[1])
    max_norm_(list(net.parameters()), max_norm=1.0)  # a parameter list skips the 1-D biases too
    np.testing.assert_array_equal(net[0].bias.data, biases[0])


def test_max_norm_after_each_sgd_step(rng):
    from tricklab.optim import SGD

    net = nn.Sequential(nn.Linear(5, 8, rng=1, dtype=np.float64), nn.Tanh(), nn.Linear(8, 1, rng=2, dtype=np.float64))
    constraint = MaxNorm(2.0)
    opt = SGD(net.parameters(), lr=0.5)
    x = rng.standard_normal((32, 5))
    t = 10 * x[:, :1]  # large targets push the weights to grow
    grew = False
    for _ in range(50):
        opt.zero_grad()
        y = net(x)
        net.backward(2 * (y - t) / len(x))
        opt.step()
        grew |= any(_row_norms(layer.weight.data).max() > 2.0 for layer in (net[0], net[2]))
        constraint(net)
        for layer in (net[0], net[2]):
            assert _row_norms(layer.weight.data).max() <= 2.0 * (1 + 1e-12)
    assert grew  # the constraint had work to do


def test_zero_rows_stay_zero():
    p = Parameter(np.zeros((3, 4)))
    assert max_norm_(p, 1.0) == 0
    np.testing.assert_array_equal(p.data, 0)


@pytest.mark.parametrize("c", [-1.0, float("nan"), "3"])
def test_bad_max_norm_names_the_argument(c):
    with pytest.raises(ValueError, match="max_norm must be a number >= 0"):
        max_norm_(nn.Linear(2, 2, rng=0), max_norm=c)
    with pytest.raises(ValueError, match="MaxNorm: max_norm must be a number >= 0"):
        MaxNorm(c)


def test_bad_dim_and_targets_are_errors():
    with pytest.raises(ValueError, match=r"dim 2 is out of range for a weight of shape \(2, 3\)"):
        max_norm_(nn.Linear(3, 2, rng=0), dim=2)
    with pytest.raises(TypeError, match="max_norm_ expects a Module, a Parameter or Parameters"):
        max_norm_([np.zeros((2, 2))])


def test_repr():
    assert repr(MaxNorm(3)) == "MaxNorm(max_norm=3.0, dim=0)"
