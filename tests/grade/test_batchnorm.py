"""The batchnorm and batchnorm-units assignments: the reference and a student's correct file score full
marks; each mistake a student makes loses exactly its checks, with its hint."""

from pathlib import Path

import pytest

from tests.grade.conftest import edit, failed
from tricklab import nn
from tricklab.grade.core import grade_object

STUDENT = Path(__file__).resolve().parents[2] / "examples" / "grading" / "batchnorm_student.py"
# the README's example student's class with its two mistakes corrected: the running variance's
# B / (B - 1), and dLoss/dz's path through mu_B
CORRECT = edit(STUDENT.read_text().split("from tricklab.nn import Module, Parameter\n")[1],
               "m * var\n", "m * var * B / (B - 1)\n",
               "(gu - self.u *", "(gu - gu.mean(axis=0) - self.u *")

FORWARD = "training forward: gamma (z - mu_B) / sqrt(var_B + eps) + beta"
DX = "backward: the lecture's closed-form dLoss/dz (through mu_B and var_B)"
PARAM_GRADS = "backward: dLoss/dgamma = sum g u, dLoss/dbeta = sum g"
ACCUMULATE = "backward adds into .grad (gradients accumulate)"
RUNNING = "running statistics: (1 - momentum) r + momentum s, unbiased variance"
CUMULATIVE = "momentum=None: the cumulative average (the lecture's population statistics)"
EVAL = "eval mode uses (and keeps) the running statistics, any batch size"
BATCH_OF_ONE = "a training batch of 1 is refused (ValueError)"
UNITS_FORWARD = "training forward: the selected units normalized, the others unchanged"
UNITS_BACKWARD = "backward: dLoss/dz through the selected units, the others' gradient unchanged; dgamma, dbeta"
UNITS_RUNNING = "running statistics of the selected units, and eval mode uses them"
UNITS_PARAMS = "weight, bias and the running statistics have one entry per selected unit"


def mistake(*pairs: str) -> str:
    return edit(CORRECT, *pairs)


@pytest.mark.parametrize("assignment", ["batchnorm", "batchnorm-units"])
def test_the_reference_scores_full_marks(assignment):
    result = grade_object(nn.BatchNorm1d, assignment)
    assert result.passed and result.score == result.max_score > 0, result.report()


@pytest.mark.parametrize("assignment", ["batchnorm", "batchnorm-units"])
def test_a_correct_student_file_scores_full_marks(submit, assignment):
    result = submit(CORRECT, assignment)
    assert result.passed, result.report()


NO_REFUSAL = ("            if B < 2:\n                raise ValueError(\"BatchNorm1d needs more than 1 example per batch "
              "in training\")\n", "")


@pytest.mark.parametrize("source, lost, hint", [
    pytest.param(mistake("m * var * B / (B - 1)", "m * var"), {RUNNING, CUMULATIVE, UNITS_RUNNING},
                 "your running variance is the biased one: the lecture's rule multiplies by B/(B-1)", id="biased-running-var"),
    pytest.param(mistake("(1 - m) * self.running_mean + m * mu", "m * self.running_mean + (1 - m) * mu",
                         "(1 - m) * self.running_var + m * var", "m * self.running_var + (1 - m) * var"),
                 {RUNNING, CUMULATIVE, UNITS_RUNNING},
                 "momentum: running = (1 - momentum) running + momentum batch (torch's convention), yours swaps them",
                 id="momentum-swapped"),
    pytest.param(mistake("gu - gu.mean(axis=0) - self.u", "gu - self.u"), {DX, UNITS_BACKWARD},
                 "dx misses the term through the batch mean", id="dx-without-mean-term"),
    pytest.param(mistake("gu - gu.mean(axis=0) - self.u * (gu * self.u).mean(axis=0)", "gu - gu.mean(axis=0)"),
                 {DX, UNITS_BACKWARD}, "dx misses the term through the batch variance", id="dx-without-variance-term"),
    pytest.param(mistake("gu - gu.mean(axis=0) - self.u * (gu * self.u).mean(axis=0)", "gu"), {DX, UNITS_BACKWARD},
                 "dx misses the terms through the batch mean and the batch variance", id="dx-statistics-constant"),
    pytest.param(mistake("gu = gz * self.weight.data", "gu = gz"), {DX, UNITS_BACKWARD}, "yours leaves out gamma",
                 id="dx-without-gamma"),
    pytest.param(mistake("if self.training:", "if True:"), {EVAL, UNITS_RUNNING},
                 "eval mode must use the running statistics, not the batch's", id="eval-uses-batch-statistics"),
    pytest.param(mistake("m = 1 / self.count if self.momentum is None else self.momentum",
                         "m = 0.1 if self.momentum is None else self.momentum"), {CUMULATIVE}, "not a fixed 0.1",
                 id="momentum-none-fixed"),
    pytest.param(mistake("mu, var = z.mean(axis=0), z.var(axis=0)", "mu, var = z.mean(axis=0), z.var(axis=0, ddof=1)"),
                 {FORWARD, DX, PARAM_GRADS, ACCUMULATE, RUNNING, CUMULATIVE, UNITS_FORWARD, UNITS_BACKWARD, UNITS_RUNNING},
                 "yours uses the unbiased one", id="forward-unbiased-variance"),
    pytest.param(mistake("self.weight.grad += (gz * self.u).sum(axis=0)", "self.weight.grad = (gz * self.u).sum(axis=0)"),
                 {ACCUMULATE}, "not overwrite it", id="grad-overwritten"),
    pytest.param(mistake("self.bias.grad += gz.sum(axis=0)", "self.bias.grad += gz.mean(axis=0)"),
                 {PARAM_GRADS, UNITS_BACKWARD}, "dLoss/dbeta sums g over the batch; yours is the mean", id="dbeta-mean"),
    pytest.param(mistake(*NO_REFUSAL), {BATCH_OF_ONE}, "must raise ValueError", id="batch-of-one-accepted"),
    pytest.param(mistake("y = x.copy()", "y = np.zeros_like(x)"), {UNITS_FORWARD, UNITS_RUNNING}, "yours are zero",
                 id="units-others-zeroed"),
    pytest.param(mistake("dx = g.copy()", "dx = np.zeros_like(g)"), {UNITS_BACKWARD},
                 "dLoss/dx = dLoss/dy there); yours is zero", id="units-others-gradient-zeroed"),
])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    assignments = ("batchnorm", "batchnorm-units")
    results = [submit(source, a) for a in assignments]
    outputs = {name: out for r in results for name, out in failed(r).items()}
    assert set(outputs) == lost, "\n".join(r.report() for r in results)
    assert any(hint in out for out in outputs.values()), "\n".join(r.report() for r in results)


def test_the_biased_variance_hint_names_the_running_variance(submit):
    result = submit(mistake("m * var * B / (B - 1)", "m * var"), "batchnorm")
    output = failed(result)[RUNNING]
    assert "running_var after training batch 1 (momentum=0.1)" in output
    assert "inputs: batches of sizes (2,), 3 features" in output


def test_a_refusal_after_updating_the_statistics_is_caught(submit):
    source = mistake(*NO_REFUSAL, "        else:\n            mu, var = self.running_mean",
                     "            if B < 2:\n                raise ValueError('batch of 1')\n"
                     "        else:\n            mu, var = self.running_mean")
    result = submit(source, "batchnorm")
    assert set(failed(result)) == {BATCH_OF_ONE}, result.report()
    assert "changed the running statistics" in failed(result)[BATCH_OF_ONE]


def test_wrong_shapes_are_reported(submit):
    result = submit(mistake("            return dz\n", "            return dz[:1]\n"), "batchnorm")
    assert set(failed(result)) == {DX}, result.report()
    assert "backward's dLoss/dx: shape (1, 3), expected (2, 3)" in failed(result)[DX]
    result = submit(mistake("self.running_mean = np.zeros(n)", "self.running_mean = np.zeros(num_features)"),
                    "batchnorm-units")
    assert UNITS_PARAMS in failed(result) and "running_mean has shape (4,), expected (2,)" in failed(result)[UNITS_PARAMS]


def test_an_exception_in_backward_costs_the_backward_checks(submit):
    result = submit(mistake("gu = gz * self.weight.data", "gu = gz * self.weight"), "batchnorm")
    outputs = failed(result)
    assert set(outputs) == {DX, PARAM_GRADS, ACCUMULATE}, result.report()
    assert "TypeError" in outputs[DX] and "gu = gz * self.weight" in outputs[DX]
