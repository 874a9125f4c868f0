import re

import numpy as np
import pytest

from tests.twins import compare_forward_backward
from tricklab import nn
from tricklab.check import gradcheck


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch,n_in,n_out,bias", [(1, 3, 2, True), (7, 5, 4, True), (16, 9, 1, False)])
def test_linear_matches_torch(rng, dtype, batch, n_in, n_out, bias):
    layer = nn.Linear(n_in, n_out, bias=bias, rng=rng, dtype=dtype)
    compare_forward_backward(layer, rng.standard_normal((batch, n_in)))


def test_linear_gradcheck_inputs_and_parameters(rng):
    res = gradcheck(nn.Linear(6, 4, rng=rng), rng.standard_normal((5, 6)))
    assert res.ok and res.checked == 5 * 6 + 4 * 6 + 4


def test_linear_weight_shape_is_out_by_in():
    layer = nn.Linear(3, 8, rng=0)
    assert layer.weight.shape == (8, 3) and layer.bias.shape == (8,)
    assert layer.weight.dtype == np.float32 and layer.weight.grad.dtype == np.float32


def test_linear_backward_accumulates(rng):
    layer = nn.Linear(4, 3, rng=rng, dtype=np.float64)
    x, gy = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer(x)
    layer.backward(gy)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(gy)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert not layer.weight.grad.any()


def test_linear_rejects_wrong_feature_count():
    with pytest.raises(ValueError, match=r"Linear\(4, 3\) got input of shape \(2, 5\); expected \(batch, 4\)"):
        nn.Linear(4, 3, rng=0)(np.zeros((2, 5), dtype=np.float32))


def test_linear_rejects_integer_input():
    with pytest.raises(TypeError, match="floating-point input, got dtype int64"):
        nn.Linear(4, 3, rng=0)(np.zeros((2, 4), dtype=np.int64))


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_linear_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        nn.Linear(bad, 3)


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        nn.Linear(2, 2, rng=0).backward(np.zeros((1, 2)))


def test_flatten_and_identity_match_torch(rng):
    model = nn.Sequential(nn.Flatten(), nn.Identity(), nn.Linear(12, 3, rng=rng)).to(np.float64)
    compare_forward_backward(model, rng.standard_normal((4, 3, 4)))


@pytest.mark.parametrize("bad", [(5, 2), (4, 3), (3,), (5, 3, 1)])
def test_linear_backward_names_both_shapes_of_a_wrong_gradient(bad):
    layer = nn.Linear(4, 3, rng=0)
    layer(np.zeros((5, 4), dtype=np.float32))
    message = rf"Linear\(4, 3\)\.backward got a gradient of shape {re.escape(str(bad))}; expected the output's shape \(5, 3\)"
    for backward in (layer.backward, layer.backward_parameters):
        with pytest.raises(ValueError, match=message):
            backward(np.zeros(bad, dtype=np.float32))
    assert not layer.weight.grad.any()  # nothing was accumulated


def test_linear_backward_accepts_the_shape_of_a_batched_output(rng):
    layer = nn.Linear(4, 3, rng=0, dtype=np.float64)
    layer(rng.standard_normal((2, 5, 4)))
    assert layer.backward(rng.standard_normal((2, 5, 3))).shape == (2, 5, 4)


def test_flatten_backward_names_both_shapes_of_a_wrong_gradient():
    flatten = nn.Flatten()
    flatten(np.zeros((4, 3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Flatten\.backward got a gradient of shape \(4, 5\); expected the output's shape \(4, 6\)"):
        flatten.backward(np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got a gradient of shape \(3, 8\)"):
        flatten.backward(np.zeros((3, 8), dtype=np.float32))  # same size, other batch
