import numpy as np
import pytest
import torch

from tests.twins import compare_forward_backward, tol
from tricklab import export, nn
from tricklab.check import gradcheck


def _net(rng, dtype, momentum=0.1, units=None):
    return nn.Sequential(nn.Linear(5, 6, rng=rng, dtype=dtype),
                         nn.BatchNorm1d(6, momentum=momentum, units=units, dtype=dtype), nn.Tanh())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [2, 3, 32])
def test_batchnorm_training_matches_torch(rng, dtype, batch):
    net = _net(rng, dtype)
    net[1].weight.data[...] = rng.uniform(0.5, 2, 6)
    net[1].bias.data[...] = rng.standard_normal(6)
    compare_forward_backward(net, rng.standard_normal((batch, 5)) * 3 + 1)


@pytest.mark.parametrize("batch", [1, 4])
def test_batchnorm_eval_matches_torch(rng, batch):
    net = _net(rng, np.float64)
    net(rng.standard_normal((8, 5)))  # move the running statistics
    net.eval()
    compare_forward_backward(net, rng.standard_normal((batch, 5)))


def test_batchnorm_gradcheck_with_linear_before(rng):
    net = _net(rng, np.float64)
    net[1].weight.data[...] = rng.uniform(0.5, 2, 6)
    assert gradcheck(net, rng.standard_normal((7, 5))).ok
    assert gradcheck(net.eval(), rng.standard_normal((3, 5))).ok


def test_batchnorm_without_affine_gradcheck_and_torch(rng):
    net = nn.Sequential(nn.Linear(4, 3, rng=rng), nn.BatchNorm1d(3, affine=False)).to(np.float64)
    assert dict(net.named_parameters()).keys() == {"0.weight", "0.bias"}
    assert gradcheck(net, rng.standard_normal((5, 4))).ok
    compare_forward_backward(net, rng.standard_normal((5, 4)))


def test_backward_is_the_lectures_closed_form(rng):
    bn = nn.BatchNorm1d(3, dtype=np.float64)
    z = rng.standard_normal((6, 3))
    bn(z)
    gu = rng.standard_normal((6, 3))  # gamma = 1, so dLoss/du = dLoss/dzhat
    B, mu, var, eps = 6, z.mean(0), z.var(0), bn.eps
    s = np.sqrt(var + eps)
    lecture = gu / s - gu.sum(0) / (B * s) - (z - mu) / (B * (var + eps) ** 1.5) * (gu * (z - mu)).sum(0)
    np.testing.assert_allclose(bn.backward(gu), lecture, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_match_torch_over_steps(rng, momentum):
    net = _net(rng, np.float64, momentum=momentum)
    twin = export.to_torch(net)
    for step in range(6):
        x = rng.standard_normal((10 + step, 5)) * 2 + step
        net(x)
        twin(torch.from_numpy(x))
    state = twin.state_dict()
    for key in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        np.testing.assert_allclose(net.state_dict()[key], state[key].numpy(), rtol=1e-12, err_msg=key)


def test_reset_running_stats_and_parameters_match_torch(rng):
    net = _net(rng, np.float64, momentum=None)
    twin = export.to_torch(net)
    for step in range(3):
        x = rng.standard_normal((8, 5)) * 2 + step
        net(x)
        twin(torch.from_numpy(x))
    bn, twin_bn = net[1], twin[1]
    bn.weight.data[...], bn.bias.data[...] = 3.0, -2.0
    bn.reset_running_stats()
    twin_bn.reset_running_stats()
    np.testing.assert_array_equal(bn.weight.data, 3.0)  # the statistics only
    for key, value in twin_bn.state_dict().items():
        if key.startswith("running") or key == "num_batches_tracked":
            np.testing.assert_array_equal(bn.state_dict()[key], value.numpy(), err_msg=key)
    net(rng.standard_normal((8, 5)))
    bn.reset_parameters()
    twin_bn.reset_parameters()
    for key, value in twin_bn.state_dict().items():
        np.testing.assert_array_equal(bn.state_dict()[key], value.numpy(), err_msg=key)
    assert bn.running_mean.dtype == np.float64 and bn.num_batches_tracked.dtype == np.int64
    momentum_none = bn.state_dict()
    net(x)  # the cumulative average starts over: its first batch gives the batch statistics
    twin(torch.from_numpy(x))
    np.testing.assert_allclose(bn.running_mean, twin_bn.running_mean.numpy(), rtol=1e-12)
    assert int(momentum_none["num_batches_tracked"]) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_training_input_is_an_error_and_leaves_the_statistics(rng, bad):
    bn = nn.BatchNorm1d(6)
    bn(rng.standard_normal((8, 6)).astype(np.float32))
    before = bn.state_dict()
    x = rng.standard_normal((8, 6)).astype(np.float32)
    x[3, 4] = bad
    with pytest.raises(FloatingPointError, match=r"BatchNorm1d\(6\) got NaN or inf in feature \[4\] of its "
                                                 r"training input of shape \(8, 6\)"):
        bn(x)
    for key, value in before.items():
        np.testing.assert_array_equal(bn.state_dict()[key], value, err_msg=key)
    bn.eval()(x)  # at inference a NaN is the caller's to see, as in every other layer


def test_batch_of_one_in_training_is_an_error():
    with pytest.raises(ValueError, match=r"more than 1 value per feature when training, got input of shape \(1, 4\)"):
        nn.BatchNorm1d(4)(np.zeros((1, 4), dtype=np.float32))
    nn.BatchNorm1d(4).eval()(np.zeros((1, 4), dtype=np.float32))  # fine at inference


def test_wrong_feature_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"BatchNorm1d\(100\) got input of shape \(32, 64\); expected \(batch, 100\)"):
        nn.BatchNorm1d(100)(np.zeros((32, 64), dtype=np.float32))


def test_recompute_statistics_is_the_lectures_formula(rng):
    net = _net(rng, np.float64)
    batches = [rng.standard_normal((8, 5)) + i for i in range(5)]
    net.train()
    n = nn.recompute_batchnorm_statistics(net, [(x, None) for x in batches])
    assert n == 5 and net.training  # mode restored
    z = [net[0](x) for x in batches]  # the final Linear's outputs feed batch norm
    mu = np.mean([zb.mean(0) for zb in z], axis=0)
    var = 8 / 7 * np.mean([zb.var(0) for zb in z], axis=0)
    np.testing.assert_allclose(net[1].running_mean, mu, rtol=1e-12)
    np.testing.assert_allclose(net[1].running_var, var, rtol=1e-12)


def test_recompute_statistics_equals_torch_cumulative_average(rng):
    net = _net(rng, np.float64)
    batches = [rng.standard_normal((b, 5)) * 3 for b in (8, 8, 8, 5)]
    twin = export.to_torch(net)
    twin[1].momentum = None
    twin[1].reset_running_stats()
    twin.train()
    with torch.no_grad():
        for x in batches:
            twin(torch.from_numpy(x))
    nn.recompute_batchnorm_statistics(net, batches)
    np.testing.assert_allclose(net[1].running_mean, twin[1].running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(net[1].running_var, twin[1].running_var.numpy(), rtol=1e-12)


def test_recompute_statistics_rejects_empty(rng):
    with pytest.raises(ValueError, match="batches is empty"):
        nn.recompute_batchnorm_statistics(_net(rng, np.float64), [])


def test_units_subset_normalizes_only_those_units(rng):
    units = [0, 2, 5]
    net = _net(rng, np.float64, units=units)
    bn = net[1]
    assert bn.weight.shape == (3,) and bn.running_mean.shape == (3,)
    x = rng.standard_normal((9, 6)) * 4 + 2
    y = bn(x)
    others = [1, 3, 4]
    np.testing.assert_array_equal(y[:, others], x[:, others])
    np.testing.assert_allclose(y[:, units].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(y[:, units].var(0), x[:, units].var(0) / (x[:, units].var(0) + bn.eps))
    gy = rng.standard_normal((9, 6))
    gx = bn.backward(gy)
    np.testing.assert_array_equal(gx[:, others], gy[:, others])
    assert gradcheck(net, rng.standard_normal((7, 5))).ok


def test_units_must_be_valid():
    with pytest.raises(ValueError, match=r"units must be a non-empty subset of range\(4\)"):
        nn.BatchNorm1d(4, units=[1, 4])
