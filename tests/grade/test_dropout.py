"""The dropout and dropout-classic assignments: the student's generator is not tricklab's, so the checks
read the student's own mask from its output; the reference and a student's correct file score full
marks, and each mistake loses exactly its checks, with its hint."""

import pytest

from tests.grade.conftest import edit, failed
from tricklab import nn
from tricklab.grade.core import grade_object

CORRECT = '''
class Dropout(Module):
    def __init__(self, p=0.5, scaling="inverted", rng=None, dtype=None):
        super().__init__(dtype=dtype)
        self.p, self.scaling = p, scaling
        self.rng = np.random.default_rng(rng)

    def forward(self, x):
        alpha = 1 - self.p
        if not self.training:
            self.scale = alpha if self.scaling == "test" else 1.0
            return self.scale * x
        mask = self.rng.random(x.shape) < alpha
        self.scale = mask / alpha if self.scaling == "inverted" else mask * 1.0
        return x * self.scale

    def backward(self, g):
        return g * self.scale
'''

TRAINING = "training: each output is 0 or x / (1 - p) (inverted scaling)"
RATE = "training: the drop rate is p within 5 sigma over 100000 units"
FRESH = "training: a fresh mask for every example and every forward pass"
BACKWARD = "backward uses forward's mask: 0 where forward dropped, g / (1 - p) elsewhere"
EVAL = "eval mode is the identity (forward and backward)"
P_ZERO = "p = 0 is the identity"
C_TRAINING = "training: each output is 0 or x (no scaling)"
C_BACKWARD = "backward uses forward's mask: 0 where forward dropped, g elsewhere"
C_EVAL = "eval mode scales by alpha = 1 - p: y = alpha x, dLoss/dx = alpha g"
BOTH = ("dropout", "dropout-classic")


def mistake(*pairs: str) -> str:
    return edit(CORRECT, *pairs)


def grade_both(submit, source):
    results = [submit(source, a) for a in BOTH]
    return {name: out for r in results for name, out in failed(r).items()}, "\n".join(r.report() for r in results)


@pytest.mark.parametrize("assignment", BOTH)
def test_the_reference_scores_full_marks(assignment):
    result = grade_object(nn.Dropout, assignment)
    assert result.passed and result.score == result.max_score > 0, result.report()


@pytest.mark.parametrize("assignment", BOTH)
def test_a_correct_student_file_scores_full_marks(submit, assignment):
    result = submit(CORRECT, assignment)
    assert result.passed, result.report()


REDRAWN = """if not self.training:
            return g * self.scale
        mask = self.rng.random(g.shape) < 1 - self.p
        return g * mask / (1 - self.p) if self.scaling == "inverted" else g * mask"""


@pytest.mark.parametrize("source, lost, hint", [
    pytest.param(mistake("return g * self.scale", REDRAWN), {BACKWARD, C_BACKWARD},
                 "the mask in backward is not the mask of forward", id="mask-redrawn-in-backward"),
    pytest.param(mistake("self.scale = mask / alpha if self.scaling == \"inverted\" else mask * 1.0",
                         "self.scale = mask * 1.0"), {TRAINING, BACKWARD},
                 "no dropout scaling: inverted dropout divides by 1 - p in training", id="no-scaling"),
    pytest.param(mistake("if not self.training:", "if False:"), {EVAL, C_EVAL}, "eval mode must not drop",
                 id="eval-drops"),
    pytest.param(mistake("self.scale = mask / alpha if self.scaling == \"inverted\" else mask * 1.0",
                         "self.scale = mask / alpha", "self.scale = alpha if self.scaling == \"test\" else 1.0",
                         "self.scale = 1.0"), {C_TRAINING, C_BACKWARD, C_EVAL},
                 "classic dropout scales at test time by alpha = 1 - p, not in training", id="classic-as-inverted"),
    pytest.param(mistake("self.scale = alpha if self.scaling == \"test\" else 1.0", "self.scale = 1.0"), {C_EVAL},
                 "classic dropout scales at test time by alpha = 1 - p, not in training", id="classic-eval-unscaled"),
    pytest.param(mistake("self.scale = alpha if self.scaling", "self.scale = 1 / alpha if self.scaling"), {C_EVAL},
                 "yours divides by alpha", id="classic-eval-divides"),
    pytest.param(mistake("mask = self.rng.random(x.shape) < alpha", "mask = self.rng.random(x.shape) < self.p"),
                 {RATE, P_ZERO}, "yours drops with probability 1 - p", id="keep-and-drop-swapped"),
    pytest.param(mistake("mask = self.rng.random(x.shape) < alpha", "mask = np.random.default_rng(0).random(x.shape) < alpha"),
                 {FRESH}, "draw a new mask on every forward pass", id="same-mask-every-call"),
])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    outputs, report = grade_both(submit, source)
    assert set(outputs) == lost, report
    assert any(hint in out for out in outputs.values()), report


def test_one_mask_row_for_the_whole_batch_is_caught(submit):
    result = submit(mistake("self.rng.random(x.shape)", "self.rng.random(x.shape[-1:])"), "dropout")
    assert FRESH in failed(result), result.report()
    assert "each example gets its own mask" in failed(result)[FRESH]
    assert TRAINING not in failed(result) and BACKWARD not in failed(result)  # the broadcast mask is consistent


def test_the_rate_failure_states_the_fraction_and_the_bound(submit):
    result = submit(mistake("mask = self.rng.random(x.shape) < alpha",
                            "mask = self.rng.random(x.shape) < alpha - 0.05"), "dropout")
    assert set(failed(result)) == {RATE, P_ZERO}, result.report()
    assert "Dropout(p=0.2) dropped a fraction 0.24" in failed(result)[RATE] and "within 0.0063" in failed(result)[RATE]


def test_wrong_shapes_are_reported(submit):
    outputs, report = grade_both(submit, mistake("return x * self.scale", "return (x * self.scale).ravel()"))
    assert outputs[TRAINING].startswith("training forward output (p=0.2): shape (6,), expected the input's (1, 6)")
    assert set(outputs) == {TRAINING, RATE, FRESH, BACKWARD, P_ZERO, C_TRAINING, C_BACKWARD}, report


def test_an_exception_in_backward_costs_the_checks_that_call_it(submit):
    outputs, report = grade_both(submit, mistake("return g * self.scale", "return g * self.scales"))
    assert set(outputs) == {BACKWARD, EVAL, P_ZERO, C_BACKWARD, C_EVAL}, report
    assert "AttributeError" in outputs[BACKWARD] and "return g * self.scales" in outputs[BACKWARD]
