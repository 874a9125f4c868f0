import copy

import numpy as np
import pytest
import torch

from tricklab import export, nn


def _mlp(rng, dtype=np.float32):
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8, rng=rng, dtype=dtype), nn.BatchNorm1d(8, dtype=dtype),
                         nn.ReLU(), nn.Dropout(0.5, rng=rng), nn.Linear(8, 3, rng=rng, dtype=dtype))


def test_state_dict_names_and_shapes_match_torch(rng):
    net = _mlp(rng)
    net(rng.standard_normal((5, 3, 4)).astype(np.float32))
    twin_state = export.to_torch(net).state_dict()
    ours = net.state_dict()
    assert list(ours) == list(twin_state)
    for k in ours:
        assert ours[k].shape == tuple(twin_state[k].shape), k


def test_weights_travel_to_torch_and_back(rng):
    net = _mlp(rng)
    for _ in range(3):
        net(rng.standard_normal((6, 3, 4)).astype(np.float32))
    twin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    x = rng.standard_normal((4, 3, 4)).astype(np.float32)
    net.eval()
    twin.eval()
    np.testing.assert_allclose(net(x), twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    back = _mlp(np.random.default_rng(99))
    back.load_state_dict(twin.state_dict())  # torch tensors are accepted as they are
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)


def test_load_state_dict_casts_and_checks(rng):
    net = _mlp(rng)
    state = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in net.state_dict().items()}
    fresh = _mlp(np.random.default_rng(1))
    fresh.load_state_dict(state)
    assert all(p.data.dtype == np.float32 for p in fresh.parameters())
    bad = dict(state)
    bad["1.weight"] = np.zeros((8, 11))
    with pytest.raises(ValueError, match=r"'1.weight' has shape \(8, 11\), expected \(8, 12\)"):
        fresh.load_state_dict(bad)
    missing = dict(state)
    del missing["2.running_var"]
    with pytest.raises(KeyError, match="missing keys \\['2.running_var'\\]"):
        fresh.load_state_dict(missing)


def test_state_dict_round_trip_of_a_bias_free_layer(rng):
    """A parameter set to None is in neither state_dict nor the keys load_state_dict expects (as torch)."""
    net = nn.Sequential(nn.Linear(4, 3, bias=False, rng=rng), nn.BatchNorm1d(3))
    state = net.state_dict()
    assert list(state) == list(export.to_torch(net).state_dict())
    fresh = nn.Sequential(nn.Linear(4, 3, bias=False, rng=np.random.default_rng(1)), nn.BatchNorm1d(3))
    fresh.load_state_dict(state)
    for k, v in state.items():
        np.testing.assert_array_equal(fresh.state_dict()[k], v, err_msg=k)
    with pytest.raises(KeyError, match=r"unexpected keys \['0.bias'\]"):
        fresh.load_state_dict({**state, "0.bias": np.zeros(3, np.float32)})


def test_to_converts_parameters_buffers_and_children_in_place(rng):
    net = _mlp(rng)
    assert net.to(np.float64) is net
    assert all(m.dtype == np.float64 for m in net.modules())
    assert all(p.data.dtype == p.grad.dtype == np.float64 for p in net.parameters())
    assert net[2].running_mean.dtype == np.float64
    assert net[2].num_batches_tracked.dtype == np.int64
    y = net(rng.standard_normal((4, 12)).astype(np.float32))  # inputs are cast to the module's dtype
    assert y.dtype == np.float64
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        net.to(np.float16)


def test_sequential_refuses_mixed_dtypes():
    with pytest.raises(TypeError, match="layers of different dtypes"):
        nn.Sequential(nn.Linear(2, 2, dtype=np.float32), nn.Linear(2, 2, dtype=np.float64))


def test_train_eval_and_parameters(rng):
    net = _mlp(rng)
    assert net.training and all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    names = [n for n, _ in net.named_parameters()]
    assert names == ["1.weight", "1.bias", "2.weight", "2.bias", "5.weight", "5.bias"]
    assert len(list(net.parameters())) == 6


def test_deepcopy_is_independent(rng):
    net = _mlp(rng)
    twin = copy.deepcopy(net)
    twin[1].weight.data += 1
    assert not np.array_equal(twin[1].weight.data, net[1].weight.data)


def test_gradient_for_previous_layer_uses_weights_of_the_forward_pass(rng):
    """The lecture's correction: grad_for_next is computed BEFORE any weight is updated.

    backward of the whole network runs first, then the optimizer steps, so the gradient that the
    first layer receives is the one the chain rule gives for the weights used in the forward pass.
    """
    from tricklab import optim

    net = nn.Sequential(nn.Linear(4, 5, rng=rng), nn.Tanh(), nn.Linear(5, 2, rng=rng)).to(np.float64)
    x = rng.standard_normal((3, 4))
    w2_forward = net[2].weight.data.copy()
    gy = rng.standard_normal((3, 2))
    net(x)
    opt = optim.SGD(net.parameters(), lr=10.0)
    net.backward(gy)
    expected_g_h = gy @ w2_forward  # dLoss/d(hidden) with the forward-pass weights
    h = np.tanh(x @ net[0].weight.data.T + net[0].bias.data)
    np.testing.assert_allclose(net[0].weight.grad, ((1 - h**2) * expected_g_h).T @ x)
    opt.step()
    assert not np.allclose(net[2].weight.data, w2_forward)  # weights moved only after backward
