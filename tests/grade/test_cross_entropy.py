"""The grader on ``softmax-cross-entropy`` (CrossEntropyLoss)."""

import pytest

from tests.grade.conftest import edit, failed
from tricklab import nn
from tricklab.grade.core import grade_object
from tricklab.grade.starter import starter_source

CORRECT = '''
class CrossEntropyLoss(Module):
    def forward(self, logits, target):
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self.p, self.target = np.exp(logp), target
        return -logp[np.arange(len(target)), target].mean()

    def backward(self):
        g = self.p.copy()
        g[np.arange(len(self.target)), self.target] -= 1
        return g / len(self.target)
'''
LOSS = "forward: the mean over the batch of -log softmax(z)[d], a float"
GRADIENT = "backward: dLoss/dz = (softmax(z) - onehot(d)) / B"
LARGE = "logits near 1000 and -1000: softmax of z - max(z), no overflow, no NaN"
UNDERFLOW = "a target probability that underflows: log softmax computed directly, finite loss"
LOG_SOFTMAX = "logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))"


def mistake(*pairs: str) -> str:
    return edit(CORRECT, *pairs)


def test_the_reference_scores_full_marks():
    result = grade_object(nn.CrossEntropyLoss, "softmax-cross-entropy")
    assert result.passed and result.score == result.max_score == 7, result.report()


def test_a_correct_student_file_scores_full_marks(submit):
    result = submit(CORRECT, "softmax-cross-entropy")
    assert result.passed, result.report()


@pytest.mark.parametrize("old, new, lost, hint", [
    ("].mean()", "].sum()", {LOSS}, "the loss is the mean over the batch, yours is the sum"),
    ("return -logp[", "return logp[", {LOSS, LARGE, UNDERFLOW}, "yours has the opposite sign"),
    ("return g / len(self.target)", "return g", {GRADIENT}, "the gradient is divided by the batch size B"),
    ("g[np.arange(len(self.target)), self.target] -= 1", "pass", {GRADIENT, LARGE, UNDERFLOW},
     "yours leaves out the one-hot target"),
    ("shifted = logits - logits.max(axis=1, keepdims=True)", "shifted = logits", {LARGE},
     "softmax of logits shifted by their max"),
    (LOG_SOFTMAX, "logp = np.log(np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True))", {UNDERFLOW},
     "the log of a softmax that underflowed to 0 is -inf"),
])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, old, new, lost, hint):
    result = submit(mistake(old, new), "softmax-cross-entropy")
    assert set(failed(result)) == lost, result.report()
    assert any(hint in output for output in failed(result).values()), result.report()


def test_an_overflow_names_the_students_line(submit):
    result = submit(mistake("shifted = logits - logits.max(axis=1, keepdims=True)", "shifted = logits"),
                    "softmax-cross-entropy")
    output = failed(result)[LARGE]
    assert "overflow encountered in exp" in output and f"in forward: {LOG_SOFTMAX}" in output


def test_one_loss_per_example_is_the_wrong_shape_with_its_hint(submit):
    result = submit(mistake("].mean()", "]"), "softmax-cross-entropy")
    assert set(failed(result)) == {LOSS, LARGE, UNDERFLOW}, result.report()  # (1,) is not a float either
    assert "forward's loss: shape (1,), expected ()" in failed(result)[LOSS]
    assert "yours returns one loss per example" in failed(result)[LOSS]


def test_an_exception_in_backward_costs_the_checks_that_call_it(submit):
    result = submit(mistake("return g / len(self.target)", "return g / len(self.targets)"), "softmax-cross-entropy")
    assert set(failed(result)) == {GRADIENT, LARGE, UNDERFLOW}
    assert all("AttributeError" in out and "self.targets" in out for out in failed(result).values())
    assert result.score == 2


def test_the_starter_has_the_losss_forward_and_backward_signatures():
    source = starter_source("softmax-cross-entropy")
    assert "def forward(self, pred, target):" in source and "def backward(self, grad=1.0):" in source
