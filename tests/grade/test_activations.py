"""The grader on the activations: ``activations`` (ReLU), ``leaky-relu``, ``sigmoid`` and ``tanh``."""

import pytest

from tests.grade.conftest import edit, failed
from tricklab import nn
from tricklab.grade.core import grade_object

CORRECT = {
    "activations": '''
class ReLU(Module):
    def forward(self, x):
        self.mask = x > 0
        return np.where(self.mask, x, 0.0)

    def backward(self, g):
        return g * self.mask
''',
    "leaky-relu": '''
class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, dtype=None):
        super().__init__(dtype=dtype)
        self.negative_slope = negative_slope

    def forward(self, x):
        self.x = x
        return np.where(x > 0, x, self.negative_slope * x)

    def backward(self, g):
        return np.where(self.x > 0, g, self.negative_slope * g)
''',
    "sigmoid": '''
class Sigmoid(Module):
    def forward(self, x):
        e = np.exp(-np.abs(x))
        self.y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)
''',
    "tanh": '''
class Tanh(Module):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, g):
        return g * (1 - self.y ** 2)
''',
}
REFERENCES = {"activations": nn.ReLU, "leaky-relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def mistake(assignment: str, old: str, new: str) -> str:
    return edit(CORRECT[assignment], old, new)


@pytest.mark.parametrize("assignment", list(REFERENCES))
def test_the_reference_scores_full_marks(assignment):
    result = grade_object(REFERENCES[assignment], assignment)
    assert result.passed and result.score == result.max_score > 0, result.report()


@pytest.mark.parametrize("assignment", list(CORRECT))
def test_a_correct_student_file_scores_full_marks(submit, assignment):
    result = submit(CORRECT[assignment], assignment)
    assert result.passed, result.report()


RELU_BACKWARD = "backward: dLoss/dx = g * 1[x > 0]"
SIGMOID_BACKWARD = "backward: dLoss/dx = g * y (1 - y)"
SIGMOID_LARGE_FORWARD = "forward at x = -1000 and 1000: no overflow, no NaN"
SIGMOID_LARGE_BACKWARD = "backward at x = -1000 and 1000 uses the cached output: no overflow"
TANH_BACKWARD = "backward: dLoss/dx = g * (1 - y^2)"
TANH_LARGE = "forward and backward at x = -1000 and 1000: no overflow, no NaN"
UNCHANGED = "forward and backward leave their arguments unchanged"
STABLE_SIGMOID = "self.y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))"


@pytest.mark.parametrize("assignment, old, new, lost, hint", [
    ("activations", "return g * self.mask", "return g * np.where(self.mask, 1.0, self.x_)",
     {RELU_BACKWARD}, "derivative at x < 0 is 0, not x"),
    ("activations", "return g * self.mask", "return g * np.maximum(self.x_, 0)",
     {RELU_BACKWARD}, "not the output max(0, x)"),
    ("activations", "return g * self.mask", "return g", {RELU_BACKWARD}, "passes g through unchanged"),
    ("activations", "return np.where(self.mask, x, 0.0)", "return np.minimum(x, 0)",
     {"forward: y = max(0, x)"}, "yours is min(0, x)"),
    ("activations", "return np.where(self.mask, x, 0.0)", "x[~self.mask] = 0\n        return x",
     {UNCHANGED}, "forward changed its input x in place"),
    ("activations", "return g * self.mask", "g[~self.mask] = 0\n        return g",
     {UNCHANGED}, "backward changed grad_output in place"),
    ("leaky-relu", "return np.where(self.x > 0, g, self.negative_slope * g)", "return g * (self.x > 0)",
     {"backward: dLoss/dx = g if x > 0 else negative_slope * g"}, "at x < 0 is negative_slope, not 0"),
    ("leaky-relu", "negative_slope=0.01, dtype=None", "negative_slope=0.1, dtype=None",
     {"forward: y = x if x > 0 else negative_slope * x (default 0.01)",
      "backward: dLoss/dx = g if x > 0 else negative_slope * g"}, None),
    ("sigmoid", "return g * self.y * (1 - self.y)", "return g * self.y", {SIGMOID_BACKWARD, SIGMOID_LARGE_BACKWARD},
     "sigmoid'(x) = s(x)(1 - s(x)), yours is s(x)"),
    ("sigmoid", "return g * self.y * (1 - self.y)", "return self.y * (1 - self.y)",
     {SIGMOID_BACKWARD}, "forgets to multiply by grad_output"),  # s(1 - s) = 0 = g s(1 - s) at |x| = 1000
    ("sigmoid", STABLE_SIGMOID, "self.y = 1 / (1 + np.exp(-x))", {SIGMOID_LARGE_FORWARD}, "exp(-x) overflows"),
    ("sigmoid", STABLE_SIGMOID, "self.y = np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))",
     {SIGMOID_LARGE_FORWARD}, "np.where computes both of its branches"),
    ("sigmoid", "return g * self.y * (1 - self.y)",
     "s = 1 / (1 + np.exp(-self.x_))\n        return g * s * (1 - s)", {SIGMOID_LARGE_BACKWARD},
     "from the output s(x) that forward cached"),
    ("tanh", "return g * (1 - self.y ** 2)", "return g * (1 - self.y)", {TANH_BACKWARD, TANH_LARGE},
     "yours is 1 - tanh(x)"),
    ("tanh", "return g * (1 - self.y ** 2)", "return g * (1 - self.x_ ** 2)", {TANH_BACKWARD, TANH_LARGE},
     "yours is 1 - x^2 of the input"),
    ("tanh", "self.y = np.tanh(x)", "self.y = (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))", {TANH_LARGE},
     "use np.tanh"),
])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, assignment, old, new, lost, hint):
    source = mistake(assignment, old, new).replace("    def forward(self, x):\n",
                                                   "    def forward(self, x):\n        self.x_ = x.copy()\n")
    result = submit(source, assignment)
    assert set(failed(result)) == lost, result.report()
    if hint is not None:
        assert any(hint in output for output in failed(result).values()), result.report()


def test_an_overflow_names_the_students_line(submit):
    result = submit(mistake("sigmoid", STABLE_SIGMOID, "self.y = 1 / (1 + np.exp(-x))"), "sigmoid")
    output = failed(result)[SIGMOID_LARGE_FORWARD]
    assert "overflow encountered in exp" in output and "line" in output and "np.exp(-x)" in output


def test_a_backward_of_the_wrong_shape_fails_with_both_shapes(submit):
    result = submit(mistake("activations", "return g * self.mask", "return (g * self.mask).sum(axis=0)"), "activations")
    assert set(failed(result)) == {RELU_BACKWARD}
    assert "shape (4,), expected (1, 4)" in failed(result)[RELU_BACKWARD]


def test_an_exception_in_backward_costs_the_checks_that_call_it(submit):
    result = submit(mistake("sigmoid", "return g * self.y * (1 - self.y)", "return g * self.y * (1 - self.why)"),
                    "sigmoid")
    assert set(failed(result)) == {SIGMOID_BACKWARD, SIGMOID_LARGE_BACKWARD, UNCHANGED}
    assert all("AttributeError" in out and "self.why" in out for out in failed(result).values())
    assert result.score == 4  # both forward checks still count
