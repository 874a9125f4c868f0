import numpy as np
import pytest
import torch

from tests import rounding
from tests.twins import _torch_pass, compare_forward_backward, tol
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


# ----------------------------------------------------------------------------- BatchNorm2d
def _bn2d(rng, num_features, dtype=np.float64, **kwargs):
    """A BatchNorm2d with random gamma, beta (and running statistics), so copying them is tested."""
    bn = nn.BatchNorm2d(num_features, dtype=dtype, **kwargs)
    n = bn.weight.shape[0] if bn.affine else bn.running_mean.shape[0]
    if bn.affine:
        bn.weight.data[...] = rng.uniform(0.5, 2, n)
        bn.bias.data[...] = rng.standard_normal(n)
    bn.running_mean[...] = rng.standard_normal(n)
    bn.running_var[...] = rng.uniform(0.5, 2, n)
    return bn


def _random_images(rng, seed):
    """(N, C, H, W) with N H W >= 2 (training needs two values per channel), channels of unequal scale."""
    shape_rng = np.random.default_rng(seed)
    n, c, h, w = (int(v) for v in shape_rng.integers([1, 1, 1, 1], [5, 6, 7, 7]))
    n = max(n, 2) if h * w == 1 else n
    scale = rng.uniform(0.2, 5, (1, c, 1, 1))
    return rng.standard_normal((n, c, h, w)) * scale + rng.standard_normal((1, c, 1, 1)) * 3


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm2d_float64_matches_torch_on_random_shapes(rng, seed, mode):
    x = _random_images(rng, seed)
    bn = _bn2d(rng, x.shape[1], momentum=[0.1, None, 0.3][seed % 3], affine=seed % 4 != 3).train(mode == "train")
    compare_forward_backward(bn, x)  # output, input and parameter gradients, buffers to 1e-10


def _rows(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(-1, a.shape[1])


def _images(rows, shape):
    n, c, h, w = shape
    return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _bn2d_bounds(bn, x, gy):
    """The first-order rounding bounds of tests/rounding.py's batch-norm model, on the rows (n, h, w):
    the bounds of a BatchNorm1d with bn's state over the (N H W, C) matrix of pixels."""
    twin = nn.BatchNorm1d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine, dtype=np.float64)
    twin.load_state_dict(bn.state_dict())
    out, backward, buffers = rounding._batchnorm(twin, rounding.exact(_rows(x)))
    grads = {}
    gx = backward(rounding.exact(_rows(gy)), grads, "")
    bounds = {"output": (out, True), "input_grad": (gx, True), **{k: (v, False) for k, v in grads.items()},
              **{k: (v, False) for k, v in buffers.items()}}
    return {k: rounding.Bounded(_images(b.v, x.shape), _images(b.e, x.shape)) if images else b
            for k, (b, images) in bounds.items()}


@pytest.mark.parametrize("seed", range(8))
def test_batchnorm2d_float32_matches_torch_within_rounding_bound(rng, seed):
    """tricklab and torch in float32 within the rounding bound of each entry of torch's float64 result."""
    x = _random_images(rng, seed).astype(np.float32)
    bn = _bn2d(rng, x.shape[1], dtype=np.float32, momentum=[0.1, None][seed % 2])
    gy = rng.standard_normal(x.shape).astype(np.float32)
    bounds = _bn2d_bounds(bn, x, gy)  # before the forward pass moves the running statistics
    theirs, reference = _torch_pass(export.to_torch(bn), x, gy), _torch_pass(export.to_torch(bn).double(), x, gy)
    ours = {"output": bn(x), "input_grad": bn.backward(gy), "weight": bn.weight.grad, "bias": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}
    u32, u64 = rounding.UNIT[np.dtype(np.float32)], rounding.UNIT[np.dtype(np.float64)]
    assert sorted(bounds) == sorted(ours)
    for name, bound in bounds.items():
        rounding.assert_within_bound(bound.v, reference[name], bound, u64, f"bound model {name}")
        rounding.assert_within_bound(ours[name], reference[name], bound, u32, f"tricklab {name}")
        rounding.assert_within_bound(theirs[name], reference[name], bound, u32, f"torch {name}")


@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"channels": [0, 2]}])
def test_batchnorm2d_gradcheck_in_training_and_eval(rng, kwargs):
    bn = _bn2d(rng, 4, **kwargs)
    x = rng.standard_normal((3, 4, 3, 2)) * 2 + 1
    assert gradcheck(bn, x).ok
    assert gradcheck(bn.eval(), x).ok


def test_batchnorm2d_backward_is_the_lectures_closed_form_over_the_pixels(rng):
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    z = rng.standard_normal((4, 3, 5, 2)) * 2 + 1
    bn(z)
    gu = rng.standard_normal(z.shape)  # gamma = 1, so dLoss/du = dLoss/dzhat
    axes, B = (0, 2, 3), 4 * 5 * 2
    mu, var = z.mean(axes, keepdims=True), z.var(axes, keepdims=True)
    s = np.sqrt(var + bn.eps)
    lecture = (gu / s - gu.sum(axes, keepdims=True) / (B * s)
               - (z - mu) / (B * (var + bn.eps) ** 1.5) * (gu * (z - mu)).sum(axes, keepdims=True))
    np.testing.assert_allclose(bn.backward(gu), lecture, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_running_statistics_match_torch_and_use_the_pixel_count(rng, momentum):
    bn = nn.BatchNorm2d(3, momentum=momentum, dtype=np.float64)
    twin = export.to_torch(bn)
    expected_mean, expected_var = np.zeros(3), np.ones(3)
    for step, (n, h, w) in enumerate([(4, 3, 3), (2, 5, 1), (3, 2, 4), (1, 2, 2), (5, 1, 1)]):
        x = rng.standard_normal((n, 3, h, w)) * (step + 1) + step
        bn(x)
        twin(torch.from_numpy(x))
        f = 1 / (step + 1) if momentum is None else momentum
        count = n * h * w  # the unbiased variance divides by N H W - 1
        expected_mean = (1 - f) * expected_mean + f * x.mean((0, 2, 3))
        expected_var = (1 - f) * expected_var + f * x.var((0, 2, 3)) * count / (count - 1)
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(bn.state_dict()[key], value.numpy(), rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(bn.running_mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, expected_var, rtol=1e-12)
    assert int(bn.num_batches_tracked) == 5


def test_batchnorm2d_reset_running_stats_and_parameters_match_torch(rng):
    bn = _bn2d(rng, 3, momentum=None)
    twin = export.to_torch(bn)
    x = rng.standard_normal((2, 3, 4, 4)) * 2 + 1
    bn(x)
    twin(torch.from_numpy(x))
    bn.reset_running_stats()
    twin.reset_running_stats()
    assert not np.all(bn.weight.data == 1)  # the statistics only
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(bn.state_dict()[key], value.numpy(), err_msg=key)
    bn.reset_parameters()
    twin.reset_parameters()
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(bn.state_dict()[key], value.numpy(), err_msg=key)


def test_recompute_batchnorm2d_statistics_is_the_lectures_formula_with_the_pixel_count(rng):
    net = nn.Sequential(nn.Dropout2d(0.5, rng=0), nn.BatchNorm2d(3), nn.Tanh()).to(np.float64)
    batches = [rng.standard_normal((4, 3, 5, 3)) * (i + 1) + i for i in range(5)]
    net.train()
    net[2].eval()
    n = nn.recompute_batchnorm_statistics(net, [(x, None) for x in batches])
    assert n == 5 and [m.training for m in net.modules()] == [True, True, True, False]  # modes restored
    B = 4 * 5 * 3  # the dropout layer is off while collecting: batch norm sees the batches as they are
    mu = np.mean([x.mean((0, 2, 3)) for x in batches], axis=0)
    var = B / (B - 1) * np.mean([x.var((0, 2, 3)) for x in batches], axis=0)
    np.testing.assert_allclose(net[1].running_mean, mu, rtol=1e-12)
    np.testing.assert_allclose(net[1].running_var, var, rtol=1e-12)
    assert int(net[1].num_batches_tracked) == 5


def test_recompute_batchnorm2d_statistics_equals_torch_cumulative_average(rng):
    bn = _bn2d(rng, 3)
    batches = [rng.standard_normal((b, 3, 4, 2)) * 3 for b in (6, 6, 2)]
    twin = export.to_torch(bn)
    twin.momentum = None
    twin.reset_running_stats()
    with torch.no_grad():
        for x in batches:
            twin(torch.from_numpy(x))
    nn.recompute_batchnorm_statistics(bn, batches)
    np.testing.assert_allclose(bn.running_mean, twin.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, twin.running_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_batchnorm2d_non_finite_training_input_names_the_channel(rng, bad):
    bn = nn.BatchNorm2d(4)
    before = bn.state_dict()
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    x[1, 2, 0, 2] = bad
    with pytest.raises(FloatingPointError, match=r"^BatchNorm2d\(4\) got NaN or inf in channel \[2\] of its "
                                                 r"training input of shape \(2, 4, 3, 3\)$"):
        bn(x)
    x[0, 3, 1, 1] = bad
    with pytest.raises(FloatingPointError, match=r"in 2 channels \[2, 3\]"):
        bn(x)
    for key, value in before.items():
        np.testing.assert_array_equal(bn.state_dict()[key], value, err_msg=key)


def test_batchnorm2d_channels_subset_normalizes_only_those_channels(rng):
    channels = [1, 3]
    bn = _bn2d(rng, 4, channels=channels)
    assert bn.weight.shape == (2,) and bn.running_mean.shape == (2,) and "channels=2 selected" in repr(bn)
    bn.weight.data[...], bn.bias.data[...] = 1, 0
    x = rng.standard_normal((3, 4, 2, 5)) * 4 + 2
    y = bn(x)
    others = [0, 2]
    np.testing.assert_array_equal(y[:, others], x[:, others])
    np.testing.assert_allclose(y[:, channels].mean((0, 2, 3)), 0, atol=1e-12)
    var = x[:, channels].var((0, 2, 3))
    np.testing.assert_allclose(y[:, channels].var((0, 2, 3)), var / (var + bn.eps))
    gy = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(bn.backward(gy)[:, others], gy[:, others])
    with pytest.raises(ValueError, match=r"^BatchNorm2d: channels must be a non-empty subset of range\(4\)"):
        nn.BatchNorm2d(4, channels=[4])


def test_batchnorm2d_errors_name_the_layer_and_the_expected_shape():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"^BatchNorm2d\(3\) got input of shape \(2, 4, 5, 5\); "
                                         r"expected \(N, 3, H, W\)$"):
        bn(np.zeros((2, 4, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"^BatchNorm2d\(3\) got input of shape \(2, 3\); expected \(N, 3, H, W\)$"):
        bn(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"^BatchNorm2d\(3\) expects examples of shape \(3, H, W\), got \(12,\)$"):
        bn.output_shape((12,))
    assert bn.output_shape((3, 7, 5)) == (3, 7, 5)
    with pytest.raises(ValueError, match=r"BatchNorm2d expected more than 1 value per channel when training, "
                                         r"got input of shape \(1, 3, 1, 1\)"):
        bn(np.zeros((1, 3, 1, 1), dtype=np.float32))
    bn(np.zeros((1, 3, 1, 2), dtype=np.float32))  # two pixels are two values
    bn.eval()(np.zeros((1, 3, 1, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d.backward got a gradient of shape \(1, 3, 1, 2\); expected "
                                         r"the output's shape \(1, 3, 1, 1\)"):
        bn.backward(np.zeros((1, 3, 1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="^BatchNorm2d: num_features must be a positive integer, got 0"):
        nn.BatchNorm2d(0)
