"""The gradient-order assignment: a Linear layer that takes its SGD step in backward must compute
dLoss/dx with the weights of the forward pass (the lecture's correction)."""

import numpy as np
import pytest

from tests.grade.conftest import edit, failed
from tests.grade.test_linear import CORRECT as LINEAR
from tricklab import nn
from tricklab.grade.assignments import order
from tricklab.grade.core import grade_object

# the linear assignment's correct Linear, given lr, whose backward takes its SGD step after dx
CORRECT = edit(LINEAR,
               "class Linear(Module):", "class LinearSGD(Module):",
               "out_features, bias=True, rng=None", "out_features, lr, rng=None",
               "self.in_features, self.out_features = in_features, out_features", "self.lr = lr",
               """        self.weight.grad += g.T @ self.x
        self.bias.grad += g.sum(axis=0)
        return g @ self.weight.data
""", """        grad_input = g @ self.weight.data
        self.weight.data -= self.lr * (g.T @ self.x)
        self.bias.data -= self.lr * g.sum(axis=0)
        return grad_input
""")

PARAMETERS = "weight and bias are Parameters of the right shapes"
FORWARD = "forward: y = x W^T + b"
DX = "backward returns dLoss/dx = g W with the weights of the forward pass"
UPDATE = "backward updates W <- W - lr g^T x and b <- b - lr sum of g"
TRAINING = "two layers trained for 3 steps: the first layer learns from the forward pass's weights"


def mistake(*pairs: str) -> str:
    return edit(CORRECT, *pairs)


def test_the_reference_scores_full_marks():
    result = grade_object(order.LinearSGD, "gradient-order")
    assert result.passed and result.score == result.max_score > 0, result.report()


def test_the_reference_is_linear_followed_by_an_sgd_step():
    rng = np.random.default_rng(0)
    layer, linear = order.LinearSGD(4, 3, 0.1, rng=1, dtype=np.float64), nn.Linear(4, 3, rng=1, dtype=np.float64)
    x, g = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    np.testing.assert_array_equal(layer(x), linear(x))
    dx = linear.backward(g)
    np.testing.assert_array_equal(layer.backward(g), dx)  # before the update: Linear's dx
    np.testing.assert_allclose(linear.weight.grad, g.T @ x, rtol=1e-12)
    np.testing.assert_array_equal(layer.weight.data, linear.weight.data - 0.1 * linear.weight.grad)
    np.testing.assert_array_equal(layer.bias.data, linear.bias.data - 0.1 * g.sum(axis=0))
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_a_correct_student_file_scores_full_marks(submit):
    result = submit(CORRECT, "gradient-order")
    assert result.passed, result.report()


ACCUMULATED = '''        self.weight.grad += g.T @ self.x
        self.bias.grad += g.sum(axis=0)
        self.weight.data -= self.lr * self.weight.grad
        self.bias.data -= self.lr * self.bias.grad
'''


@pytest.mark.parametrize("source, lost, hint", [
    (mistake("        grad_input = g @ self.weight.data\n", "")
     .replace("        return grad_input", "        return g @ self.weight.data"),
     {DX, TRAINING}, "the previous layer's gradient must use the weights of the forward pass"),
    (mistake("        self.weight.data -= self.lr * (g.T @ self.x)\n        self.bias.data -= self.lr * g.sum(axis=0)\n",
             ACCUMULATED),
     {TRAINING}, "each backward must update with this batch's gradient"),
    (mistake("        self.bias.data -= self.lr * g.sum(axis=0)\n", ""), {UPDATE, TRAINING}, "the bias is not updated"),
    (mistake("self.weight.data -= self.lr", "self.weight.data += self.lr"), {UPDATE, TRAINING},
     "the step goes against the gradient"),
    (mistake("self.lr * (g.T @ self.x)", "self.lr * (g.T @ self.x) / len(g)"), {UPDATE, TRAINING},
     "yours divides by the batch size"),
    (mistake("x @ self.weight.data.T + self.bias.data", "x @ self.weight.data.T"), {FORWARD, TRAINING},
     "the bias is missing"),
], ids=["dx-after-update", "accumulated-gradient", "bias-not-updated", "ascent", "mean-over-batch", "no-bias"])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    result = submit(source, "gradient-order")
    assert set(failed(result)) == lost, result.report()
    assert any(hint in output for output in failed(result).values()), result.report()


def test_the_wrong_order_is_caught_in_training_with_its_hint(submit):
    result = submit(mistake("        grad_input = g @ self.weight.data\n", "")
                    .replace("        return grad_input", "        return g @ self.weight.data"), "gradient-order")
    output = failed(result)[TRAINING]
    assert "first layer's weight after training step 1" in output
    assert "LinearSGD(4, 5, lr=0.1), tanh, LinearSGD(5, 3, lr=0.1)" in output
    assert "update the weights only after it" in output


def test_a_wrong_shape_is_named(submit):
    result = submit(mistake("        return grad_input", "        return grad_input.T"), "gradient-order")
    assert set(failed(result)) == {DX, TRAINING}, result.report()
    assert "backward's dLoss/dx: shape (3, 1), expected (1, 3)" in failed(result)[DX]


def test_an_exception_in_backward_costs_the_checks_that_call_it(submit):
    result = submit(mistake("        grad_input = g @ self.weight.data\n", "        grad_input = g @ self.weights.data\n"),
                    "gradient-order")
    outputs = failed(result)
    assert set(outputs) == {DX, UPDATE, TRAINING}, result.report()
    assert all("AttributeError" in out and "self.weights.data" in out for out in outputs.values())
