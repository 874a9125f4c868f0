import numpy as np
import pytest

from tricklab import nn
from tricklab.check import GradcheckError, gradcheck


class WrongTanh(nn.Tanh):
    def backward(self, grad_output):
        return grad_output * (1 - self._y)  # should be 1 - y^2


def test_gradcheck_catches_a_wrong_backward(rng):
    with pytest.raises(GradcheckError, match="worst at input0"):
        gradcheck(WrongTanh(), rng.standard_normal((3, 4)))
    res = gradcheck(WrongTanh(), rng.standard_normal((3, 4)), raise_exception=False)
    assert not res.ok and res.abs_error > 1e-3


def test_gradcheck_catches_a_wrong_parameter_gradient(rng):
    class HalfBias(nn.Linear):
        def backward(self, g):
            out = super().backward(g)
            self.bias.grad *= 0.5
            return out

    with pytest.raises(GradcheckError, match="bias"):
        gradcheck(HalfBias(3, 2, rng=0), rng.standard_normal((4, 3)))


def test_gradcheck_works_on_a_float64_copy_of_a_float32_module(rng):
    layer = nn.Linear(3, 2, rng=0)
    res = gradcheck(layer, rng.standard_normal((4, 3)), atol=1e-8, rtol=1e-7)
    assert res.ok
    assert layer.dtype == np.float32 and not layer.weight.grad.any()


def test_gradcheck_on_a_function_with_tuple_outputs(rng):
    def fn(x):
        return (x**2, (np.sin(x),)), lambda g1, g2: 2 * x * g1 + np.cos(x) * g2[0]

    assert gradcheck(fn, rng.standard_normal((3, 3))).ok


ACCEPTS = r"gradcheck accepts a tricklab\.nn\.Module or a callable f\(\*inputs\) -> \(outputs, backward\)"


@pytest.mark.parametrize("fn", [np.tanh, lambda x: x.sum(), lambda x: (x, x), lambda x: [x, 2 * x]],
                         ids=["array", "scalar", "two-arrays", "list"])
def test_gradcheck_on_a_plain_callable_says_what_it_accepts(rng, fn):
    with pytest.raises(TypeError, match=ACCEPTS + r".*returned (ndarray|float64|tuple|list)"):
        gradcheck(fn, rng.standard_normal((2, 3)))


@pytest.mark.parametrize("thing", ["tanh", 3.0, None])
def test_gradcheck_on_a_non_callable_says_what_it_accepts(rng, thing):
    with pytest.raises(TypeError, match=ACCEPTS + ".*got " + type(thing).__name__):
        gradcheck(thing, rng.standard_normal((2, 3)))

