import numpy as np
import pytest

from tests.twins import compare_forward_backward
from tricklab import nn
from tricklab.check import gradcheck

ACTIVATIONS = [nn.ReLU, nn.Sigmoid, nn.Tanh, lambda dtype: nn.LeakyReLU(0.2, dtype=dtype)]


@pytest.mark.parametrize("make", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [1, 9])
def test_activation_matches_torch_after_linear(rng, make, dtype, batch):
    model = nn.Sequential(nn.Linear(6, 5, rng=rng, dtype=dtype), make(dtype=dtype))
    compare_forward_backward(model, rng.standard_normal((batch, 6)))


@pytest.mark.parametrize("make", ACTIVATIONS)
def test_activation_gradcheck(rng, make):
    # keep inputs away from ReLU's kink at 0, where finite differences are not defined
    x = rng.standard_normal((4, 5))
    x += np.sign(x) * 0.1
    assert gradcheck(nn.Sequential(nn.Linear(5, 5, rng=rng), make(dtype=None)), x).ok


def test_sigmoid_is_stable_for_large_inputs():
    y = nn.Sigmoid(dtype=np.float64)(np.array([[-1000.0, 0.0, 1000.0]]))
    np.testing.assert_array_equal(y, [[0.0, 0.5, 1.0]])
