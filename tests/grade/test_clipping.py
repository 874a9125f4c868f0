"""The grader on ``clip-grad-norm`` (clip_grad_norm_), a function assignment."""

import numpy as np
import pytest
import torch

from tests.grade.conftest import edit, failed
from tricklab import optim
from tricklab.grade.core import grade_object
from tricklab.nn import Parameter

CORRECT = '''
def clip_grad_norm_(params, max_norm):
    total = np.sqrt(sum(np.sum(p.grad ** 2) for p in params))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for p in params:
            p.grad *= scale
    return total
'''
PER_PARAMETER = '''
def clip_grad_norm_(params, max_norm):
    total = np.sqrt(sum(np.sum(p.grad ** 2) for p in params))
    for p in params:
        scale = max_norm / (np.sqrt(np.sum(p.grad ** 2)) + 1e-6)
        if scale < 1:
            p.grad *= scale
    return total
'''
RETURNS = "returns the total norm over all parameters, before clipping"
GLOBAL = "clips globally: every gradient scaled by max_norm / (total + 1e-6)"
EPSILON = "the scale's 1e-6: max_norm / (total + 1e-6), as torch's"
BELOW = "no change when the total norm is below max_norm"


def mistake(*pairs: str) -> str:
    return edit(CORRECT, *pairs)


def test_the_reference_scores_full_marks():
    result = grade_object(optim.clip_grad_norm_, "clip-grad-norm")
    assert result.passed and result.score == result.max_score == 7, result.report()


def test_a_correct_student_file_scores_full_marks(submit):
    result = submit(CORRECT, "clip-grad-norm")
    assert result.passed, result.report()


@pytest.mark.parametrize("source, lost, hint", [
    (PER_PARAMETER, {GLOBAL}, "norm clipped per parameter, not globally"),
    (mistake("    return total", "    return np.sqrt(sum(np.sum(p.grad ** 2) for p in params))"), {RETURNS},
     "yours is the norm after clipping"),
    (mistake("    return total", "    return min(total, max_norm)"), {RETURNS}, "yours is the norm after clipping"),
    (mistake("scale = max_norm / (total + 1e-6)", "scale = max_norm / total"), {EPSILON},
     "yours is max_norm / total"),
    (mistake("    if scale < 1:\n", "    if True:\n"), {BELOW}, "yours scales them up"),
    (mistake("    return total", "    return total ** 2"), {RETURNS}, "yours leaves out the square root"),
])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    result = submit(source, "clip-grad-norm")
    assert set(failed(result)) == lost, result.report()
    assert any(hint in output for output in failed(result).values()), result.report()


def test_the_sum_of_the_parameters_norms_is_recognized(submit):
    result = submit(mistake("total = np.sqrt(sum(np.sum(p.grad ** 2) for p in params))",
                            "total = sum(np.sqrt(np.sum(p.grad ** 2)) for p in params)"), "clip-grad-norm")
    assert {RETURNS, GLOBAL} <= set(failed(result)) and EPSILON not in failed(result)  # one parameter there
    assert "yours is the sum of the parameters' norms" in failed(result)[RETURNS]


def test_no_return_value_costs_only_the_returned_norm(submit):
    result = submit(mistake("    return total", "    pass"), "clip-grad-norm")
    assert set(failed(result)) == {RETURNS}
    assert "clip_grad_norm_ returned None" in failed(result)[RETURNS]


def test_a_list_of_norms_is_the_wrong_shape(submit):
    result = submit(mistake("    return total", "    return [np.sqrt(np.sum(p.grad ** 2)) for p in params]"),
                    "clip-grad-norm")
    assert set(failed(result)) == {RETURNS}
    assert "the returned total norm: shape (3,), expected ()" in failed(result)[RETURNS]


def test_an_exception_costs_every_check_and_names_the_students_line(submit):
    result = submit(mistake("p.grad *= scale", "p.grad *= scales"), "clip-grad-norm")
    assert set(failed(result)) == {RETURNS, GLOBAL, EPSILON}  # below max_norm the loop body never runs
    assert all("NameError" in out and "p.grad *= scales" in out for out in failed(result).values())


def test_the_epsilon_checks_scale_is_torchs():
    # the regime of the 1e-6 check: a total norm of about 0.02, clipped to a quarter of it
    grad = 0.005 * np.random.default_rng(0).standard_normal((3, 4))
    max_norm = 0.25 * float(np.linalg.norm(grad))
    param, tensor = Parameter(np.zeros((3, 4))), torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    param.grad[...], tensor.grad = grad, torch.tensor(grad)
    total = optim.clip_grad_norm_([param], max_norm)
    torch_total = float(torch.nn.utils.clip_grad_norm_([tensor], max_norm))
    assert total == pytest.approx(torch_total, rel=1e-14)  # a sum of 12 squares: rounding below 12 eps
    np.testing.assert_allclose(param.grad, tensor.grad.numpy(), rtol=1e-14, atol=0)
    assert not np.allclose(param.grad, grad * max_norm / total, rtol=1e-7, atol=1e-9)  # the 1e-6 shows
