import numpy as np
import pytest
import torch

from tricklab import nn
from tricklab.nn.activity import ActivityL1, activity_penalty


def _net(rng, lam=0.05, dtype=np.float64):
    return nn.Sequential(nn.Linear(4, 6, rng=rng, dtype=dtype), nn.Tanh(), ActivityL1(lam),
                         nn.Linear(6, 2, rng=rng, dtype=dtype))


def test_identity_forward_and_recorded_penalty(rng):
    layer = ActivityL1(0.1, dtype=np.float64)
    y = rng.standard_normal((5, 3, 2))
    np.testing.assert_array_equal(layer(y), y)
    assert layer.penalty == pytest.approx(0.1 * np.abs(y).sum() / 5, rel=1e-12)
    layer(y[0, 0])  # a 1-D input is one example
    assert layer.penalty == pytest.approx(0.1 * np.abs(y[0, 0]).sum(), rel=1e-12)


def test_gradient_of_loss_plus_penalty_by_finite_differences(rng):
    """The penalty is not an output, so gradcheck's probe cannot see it: check L = <R, y> + penalty."""
    net = _net(rng)
    x = rng.standard_normal((3, 4))
    R = rng.standard_normal((3, 2))

    def loss():
        return float((R * net(x)).sum()) + activity_penalty(net)

    net.zero_grad()
    net(x)
    analytic = {"x": net.backward(R)} | {name: p.grad.copy() for name, p in net.named_parameters()}
    targets = {"x": x} | {name: p.data for name, p in net.named_parameters()}
    eps = 1e-6
    for name, arr in targets.items():
        for idx in np.ndindex(arr.shape):
            orig = arr[idx]
            arr[idx] = orig + eps
            plus = loss()
            arr[idx] = orig - eps
            minus = loss()
            arr[idx] = orig
            numeric = (plus - minus) / (2 * eps)
            assert abs(analytic[name][idx] - numeric) <= 1e-7 + 1e-5 * abs(numeric), (name, idx)


def test_matches_torch_autograd_of_the_penalty(rng):
    lam = 0.05
    net = _net(rng, lam)
    x, R = rng.standard_normal((7, 4)), rng.standard_normal((7, 2))
    net.zero_grad()
    net(x)
    gx = net.backward(R)
    twin = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    state = net.state_dict()
    twin.load_state_dict({k.replace("3.", "2."): torch.from_numpy(v) for k, v in state.items()})
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    h = twin[1](twin[0](xt))
    total = (torch.from_numpy(R) * twin[2](h)).sum() + lam * h.abs().sum() / 7
    total.backward()
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert activity_penalty(net) == pytest.approx(float(lam * h.detach().abs().sum() / 7), rel=1e-12)
    torch_grads = dict(twin.named_parameters())
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, torch_grads[name.replace("3.", "2.")].grad.numpy(), rtol=1e-10, atol=1e-12)


def test_activity_penalty_sums_every_layer(rng):
    net = nn.Sequential(nn.Linear(3, 4, rng=rng), ActivityL1(0.1), nn.ReLU(), ActivityL1(0.2))
    x = rng.standard_normal((5, 3)).astype(np.float32)
    h = net[0](x)
    net(x)
    expected = 0.1 * np.abs(h).sum() / 5 + 0.2 * np.maximum(h, 0).sum() / 5
    assert activity_penalty(net) == pytest.approx(expected, rel=1e-5)
    assert activity_penalty(nn.Sequential(nn.Linear(3, 4, rng=0))) == 0.0


def test_penalty_makes_activations_sparser_in_training(rng):
    x = rng.standard_normal((64, 5))
    t = x @ rng.standard_normal((5, 1))

    def hidden_l1(lam):
        net = nn.Sequential(nn.Linear(5, 16, rng=1, dtype=np.float64), nn.ReLU(), ActivityL1(lam),
                            nn.Linear(16, 1, rng=2, dtype=np.float64))
        for _ in range(300):
            net.zero_grad()
            y = net(x)
            net.backward(2 * (y - t) / len(x))
            for p in net.parameters():
                p.data -= 0.05 * p.grad
        return np.abs(net[1](net[0](x))).sum() / len(x)

    assert hidden_l1(0.3) < 0.5 * hidden_l1(0.0)


@pytest.mark.parametrize("lam", [-1e-3, float("nan"), "0.1"])
def test_bad_lam_names_the_argument(lam):
    with pytest.raises(ValueError, match="ActivityL1: lam must be a number >= 0"):
        ActivityL1(lam)
