"""fold_batchnorm: the folded model equals the unfolded one in eval mode (float64 to 1e-12, float32
within the rounding bound of the folded computation), and the original is left alone."""

import copy

import numpy as np
import pytest

from tests import rounding
from tricklab import nn


def _randomize_statistics(model: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Running statistics and affine parameters far from their initial 0/1, as after training."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.running_mean.shape[0]
            m.running_mean[...] = rng.normal(0.0, 2.0, n)
            m.running_var[...] = rng.uniform(0.05, 5.0, n)
            if m.affine:
                m.weight.data[...] = rng.normal(1.0, 0.5, n)
                m.bias.data[...] = rng.normal(0.0, 1.0, n)
    return model


def _count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


MLPS = {
    "linear-bn": lambda r, dt: nn.Sequential(nn.Linear(7, 9, rng=r, dtype=dt), nn.BatchNorm1d(9, dtype=dt), nn.ReLU(),
                                             nn.Linear(9, 4, rng=r, dtype=dt), nn.BatchNorm1d(4, dtype=dt)),
    "no-bias": lambda r, dt: nn.Sequential(nn.Linear(7, 5, bias=False, rng=r, dtype=dt), nn.BatchNorm1d(5, dtype=dt)),
    "no-affine": lambda r, dt: nn.Sequential(nn.Linear(7, 5, rng=r, dtype=dt),
                                             nn.BatchNorm1d(5, affine=False, dtype=dt), nn.Tanh()),
    "units": lambda r, dt: nn.Sequential(nn.Linear(7, 6, rng=r, dtype=dt), nn.BatchNorm1d(6, units=[0, 2, 5], dtype=dt)),
    "nested": lambda r, dt: nn.Sequential(nn.Sequential(nn.Linear(7, 5, rng=r, dtype=dt), nn.BatchNorm1d(5, dtype=dt)),
                                          nn.Sigmoid(), nn.Linear(5, 3, rng=r, dtype=dt)),
    "bn-twice": lambda r, dt: nn.Sequential(nn.Linear(7, 5, rng=r, dtype=dt), nn.BatchNorm1d(5, dtype=dt),
                                            nn.BatchNorm1d(5, dtype=dt)),
}


@pytest.mark.parametrize("name", sorted(MLPS))
def test_folded_mlp_equals_the_unfolded_one_in_float64(name, rng):
    model = _randomize_statistics(MLPS[name](rng, np.float64), rng)
    x = rng.standard_normal((11, 7))
    folded = nn.fold_batchnorm(model)
    assert _count(folded, nn.BatchNorm1d) == 0
    assert not folded.training
    np.testing.assert_allclose(folded(x), model.eval()(x), rtol=1e-12, atol=1e-12)


def test_fold_gives_a_bias_free_layer_a_bias_and_keeps_the_weights_of_unnormalized_units(rng):
    model = _randomize_statistics(nn.Sequential(nn.Linear(7, 6, bias=False, rng=rng, dtype=np.float64),
                                                nn.BatchNorm1d(6, units=[1, 4], dtype=np.float64)), rng)
    folded = nn.fold_batchnorm(model)[0]
    bn = model[1]
    s = bn.weight.data / np.sqrt(bn.running_var + bn.eps)
    expected_weight = model[0].weight.data.copy()
    expected_weight[[1, 4]] *= s[:, None]
    expected_bias = np.zeros(6)
    expected_bias[[1, 4]] = bn.bias.data - s * bn.running_mean
    np.testing.assert_allclose(folded.weight.data, expected_weight, rtol=1e-15)
    np.testing.assert_allclose(folded.bias.data, expected_bias, rtol=1e-15, atol=1e-15)
    assert [k for k, _ in folded.named_parameters()] == ["weight", "bias"]


def test_folded_float32_mlp_is_within_the_rounding_bound_of_the_folded_layers(rng):
    """Reference: the unfolded model in float64 from the same float32 values. Bound: the folded
    Linear layers with W' and b' rounded once to float32 (they are computed in float64), x W'^T + b'
    in float32, through the ReLU."""
    model = _randomize_statistics(MLPS["linear-bn"](rng, np.float32), rng)
    x = rng.standard_normal((64, 7)).astype(np.float32)
    folded = nn.fold_batchnorm(model)
    reference = copy.deepcopy(model).double().eval()(x.astype(np.float64))
    h = rounding.exact(x)
    for i, pair in enumerate([(model[0], model[1]), (model[3], model[4])]):
        w, b = exact_fold(*pair)
        h = h @ rounding.rounded(w).T + rounding.rounded(b)
        if i == 0:
            h, _, _ = rounding.relu(h, rounding.UNIT[np.dtype(np.float32)])
    rounding.assert_within_bound(folded(x), reference, h, rounding.UNIT[np.dtype(np.float32)], "folded output")


def exact_fold(linear: nn.Linear, bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """W' = s W and b' = s (b - mu) + beta in float64, s = gamma / sqrt(var + eps) (eps as the layer holds it)."""
    s = bn.weight.data.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + float(np.float32(bn.eps)))
    w = s[:, None] * linear.weight.data.astype(np.float64)
    b = s * (linear.bias.data.astype(np.float64) - bn.running_mean) + bn.bias.data
    return w, b


def test_batch_norm_after_anything_but_a_linear_layer_stays(rng):
    model = _randomize_statistics(nn.Sequential(
        nn.BatchNorm1d(7, dtype=np.float64), nn.Linear(7, 5, rng=rng, dtype=np.float64), nn.ReLU(),
        nn.BatchNorm1d(5, dtype=np.float64), nn.Dropout(0.5), nn.Linear(5, 5, rng=rng, dtype=np.float64),
        nn.Dropout(0.3), nn.BatchNorm1d(5, dtype=np.float64)), rng)
    folded = nn.fold_batchnorm(model)
    assert [type(m).__name__ for m in folded] == [type(m).__name__ for m in model]
    x = rng.standard_normal((6, 7))
    np.testing.assert_allclose(folded(x), model.eval()(x), rtol=1e-12, atol=1e-12)


def test_after_folding_the_dropout_scaling_the_batch_norm_folds_too(rng):
    model = _randomize_statistics(nn.Sequential(
        nn.Linear(7, 5, rng=rng, dtype=np.float64), nn.ReLU(), nn.Dropout(0.4, scaling="test"),
        nn.Linear(5, 5, rng=rng, dtype=np.float64), nn.BatchNorm1d(5, dtype=np.float64)), rng)
    folded = nn.fold_batchnorm(nn.fold_dropout_scaling(model))
    assert [type(m).__name__ for m in folded] == ["Linear", "ReLU", "Linear"]
    x = rng.standard_normal((6, 7))
    np.testing.assert_allclose(folded(x), model.eval()(x), rtol=1e-12, atol=1e-12)


def test_the_original_model_is_unchanged(rng):
    model = _randomize_statistics(MLPS["no-bias"](rng, np.float32), rng)
    model.train()
    x = rng.standard_normal((5, 7)).astype(np.float32)
    model(x)
    model.backward(np.ones((5, 5), dtype=np.float32))
    grads = [p.grad.copy() for p in model.parameters()]
    state = model.state_dict()
    folded = nn.fold_batchnorm(model)
    assert model.training and model[0].bias is None and _count(model, nn.BatchNorm1d) == 1
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)
    assert all(not p.grad.any() for p in folded.parameters())
    assert not np.shares_memory(folded[0].weight.data, model[0].weight.data)


def test_folded_model_keeps_input_grad_and_dtype(rng):
    model = nn.Sequential(nn.Linear(3, 2, rng=rng), nn.BatchNorm1d(2), input_grad=False)
    folded = nn.fold_batchnorm(model)
    assert folded.input_grad is False and folded.dtype == np.float32
    assert folded[0].weight.data.dtype == folded[0].bias.data.dtype == np.float32


CONVS = {
    "conv-bn": lambda r, dt: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=r, dtype=dt), nn.BatchNorm2d(4, dtype=dt),
                                           nn.ReLU(), nn.MaxPool2d(2),
                                           nn.Conv2d(4, 6, 2, stride=2, rng=r, dtype=dt), nn.BatchNorm2d(6, dtype=dt)),
    "grouped-no-bias": lambda r, dt: nn.Sequential(
        nn.Conv2d(4, 6, (3, 2), groups=2, dilation=(1, 2), bias=False, padding_mode="reflect", padding=1, rng=r,
                  dtype=dt), nn.BatchNorm2d(6, dtype=dt)),
    "depthwise-no-affine": lambda r, dt: nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, rng=r, dtype=dt),
                                                       nn.BatchNorm2d(4, affine=False, dtype=dt)),
    "channels": lambda r, dt: nn.Sequential(nn.Conv2d(3, 5, 3, rng=r, dtype=dt),
                                            nn.BatchNorm2d(5, channels=[0, 3], dtype=dt)),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_folded_conv_net_equals_the_unfolded_one_in_float64(name, rng):
    model = _randomize_statistics(CONVS[name](rng, np.float64), rng)
    x = rng.standard_normal((3, model[0].in_channels, 8, 9))
    folded = nn.fold_batchnorm(model)
    assert _count(folded, nn.BatchNorm2d) == 0
    np.testing.assert_allclose(folded(x), model.eval()(x), rtol=1e-12, atol=1e-12)


def test_folded_float32_conv_is_within_the_rounding_bound_of_the_folded_layer(rng):
    """One Conv2d-BatchNorm2d pair. Bound, by the rules of tests/rounding.py: each output is a sum of
    n = C/G kh kw products of exact inputs and a weight W' rounded once, plus b' rounded once, so
    e = (n + 1) |x| * |W'| + |b'| + |z| (|x| * |W'| the correlation of the absolute values)."""
    model = _randomize_statistics(CONVS["grouped-no-bias"](rng, np.float32), rng)
    x = rng.standard_normal((2, 4, 7, 8)).astype(np.float32)
    folded = nn.fold_batchnorm(model)
    exact = copy.deepcopy(model).double().eval()
    reference = exact(x.astype(np.float64))
    conv, bn = exact[0], exact[1]
    s = bn.weight.data / np.sqrt(bn.running_var + float(np.float32(bn.eps)))
    w = s[:, None, None, None] * conv.weight.data
    b = bn.bias.data - s * bn.running_mean
    terms = copy.deepcopy(conv)
    terms.weight.data[...] = np.abs(w)
    magnitude = terms(np.abs(x.astype(np.float64)))
    n = conv.weight.data[0].size
    e = (n + 1) * magnitude + np.abs(b)[None, :, None, None] + np.abs(reference)
    rounding.assert_within_bound(folded(x), reference, rounding.Bounded(reference, e),
                                 rounding.UNIT[np.dtype(np.float32)], "folded conv output")


def test_fold_refuses_a_model_it_cannot_read():
    with pytest.raises(TypeError, match="fold_batchnorm expects a Sequential, got Linear"):
        nn.fold_batchnorm(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm1d\(5\)\) follows Linear with 4 outputs"):
        nn.fold_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(5)))
