"""The grader on the linear assignment, and the machinery every assignment shares: isolation,
time limits, forbidden imports, the report, Gradescope's JSON and the starter file."""

import numpy as np
import pytest

from tests.grade.conftest import edit, failed, read_json, run_cli
from tricklab import nn
from tricklab.grade.core import SubmissionError, grade_object

CORRECT = '''
class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=None):
        super().__init__(dtype=dtype)
        rng = np.random.default_rng(rng)
        bound = 1 / np.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)), dtype=self.dtype)
        self.bias = Parameter(rng.uniform(-bound, bound, out_features), dtype=self.dtype)

    def forward(self, x):
        self.x = x
        return x @ self.weight.data.T + self.bias.data

    def backward(self, g):
        self.weight.grad += g.T @ self.x
        self.bias.grad += g.sum(axis=0)
        return g @ self.weight.data
'''


def mistake(*pairs: str) -> str:
    return edit(CORRECT, *pairs)


def test_the_reference_scores_full_marks():
    result = grade_object(nn.Linear, "linear")
    assert result.passed and result.score == result.max_score > 0


def test_a_correct_student_file_scores_full_marks(submit):
    result = submit(CORRECT, "linear")
    assert result.passed, result.report()


@pytest.mark.parametrize("source, lost, hint", [
    (mistake("x @ self.weight.data.T + self.bias.data", "x @ self.weight.data.T"),
     {"forward: y = x W^T + b"}, "the bias is missing"),
    (mistake("self.bias.grad += g.sum(axis=0)", "self.bias.grad += g.mean(axis=0)"),
     {"backward: dLoss/dW = g^T x, dLoss/db = sum of g over the batch"}, "yours is the mean"),
    (mistake("self.weight.grad += g.T @ self.x", "self.weight.grad = g.T @ self.x"),
     {"backward adds into .grad (gradients accumulate)"}, "not overwrite it"),
    (mistake("self.weight.grad += g.T @ self.x", "self.weight.grad += g.T @ self.x / len(g)"),
     {"backward: dLoss/dW = g^T x, dLoss/db = sum of g over the batch", "backward adds into .grad (gradients accumulate)"},
     "divides by the batch size"),
])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    result = submit(source, "linear")
    assert set(failed(result)) == lost, result.report()
    assert any(hint in output for output in failed(result).values()), result.report()


def test_a_failure_names_shapes_errors_and_the_first_mismatch(submit):
    result = submit(mistake("return g @ self.weight.data", "return 2 * g @ self.weight.data"), "linear")
    (output,) = failed(result).values()
    assert "inputs: x (1, 3), grad (1, 2)" in output and "largest absolute error" in output
    assert "first mismatch at index [0, 0]" in output and "yours" in output and "expected" in output


def test_an_exception_costs_its_check_and_names_the_students_line(submit):
    result = submit(mistake("return g @ self.weight.data", "return g @ self.weight.data[None]  + undefined_name"),
                    "linear")
    outputs = failed(result)
    assert set(outputs) == {"backward: dLoss/dx = g W", "backward adds into .grad (gradients accumulate)",
                            "backward: dLoss/dW = g^T x, dLoss/db = sum of g over the batch"}  # each calls backward
    assert result.checks[0].passed and result.checks[1].passed
    assert "NameError" in outputs["backward: dLoss/dx = g W"]
    assert "line" in outputs["backward: dLoss/dx = g W"] and "undefined_name" in outputs["backward: dLoss/dx = g W"]


def test_an_infinite_loop_costs_its_check_not_the_grader(submit):
    result = submit(mistake("self.bias.grad += g.sum(axis=0)", "while True:\n            pass"), "linear", timeout=2)
    assert not result.passed
    assert all("did not finish within 2 s" in out for out in failed(result).values())
    assert result.checks[0].passed and result.checks[1].passed  # the forward checks still count


def test_a_submission_importing_the_reference_is_refused(submit):
    with pytest.raises(SubmissionError, match="'from tricklab.nn import Linear' imports tricklab's reference"):
        submit("from tricklab.nn import Linear\n", "linear")
    with pytest.raises(SubmissionError, match="'import tricklab.nn.linear'"):
        submit("import tricklab.nn.linear\n", "linear")


def test_unloadable_submissions_exit_2_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("class Linear(:\n")
    rc, _, err = run_cli(["grade", str(bad), "--assignment", "linear"], capsys)
    assert rc == 2 and err.startswith("tricklab: error:") and "syntax error" in err and len(err.splitlines()) == 1
    other = tmp_path / "other.py"
    other.write_text("class Dense:\n    pass\n")
    rc, _, err = run_cli(["grade", str(other), "--assignment", "linear"], capsys)
    assert rc == 2 and "defines no class 'Linear' (it defines Dense)" in err
    rc, _, err = run_cli(["grade", str(other), "--assignment", "linaer"], capsys)
    assert rc == 2 and "did you mean 'linear'?" in err


def test_class_option_and_gradescope_json(tmp_path, capsys):
    path = tmp_path / "dense.py"
    path.write_text("import numpy as np\nfrom tricklab.nn import Module, Parameter\n" + CORRECT.replace("class Linear", "class Dense"))
    rc, out, _ = run_cli(["grade", str(path), "--assignment", "linear", "--class", "Dense", "--json",
                          str(tmp_path / "results.json")], capsys)
    assert rc == 0 and "score: 9/9" in out
    results = read_json(tmp_path / "results.json")
    assert results["score"] == results["max_score"] == 9
    assert {"name", "score", "max_score", "output"} <= set(results["tests"][0])


def test_a_failing_submission_exits_1(tmp_path, capsys):
    path = tmp_path / "linear.py"
    path.write_text("import numpy as np\nfrom tricklab.nn import Module, Parameter\n"
                    + mistake("self.bias.grad += g.sum(axis=0)", "pass"))
    rc, out, _ = run_cli(["grade", str(path), "--assignment", "linear"], capsys)
    assert rc == 1 and "FAIL" in out and "--seed 0" in out


def test_the_same_seed_gives_the_same_inputs(submit):
    source = mistake("return g @ self.weight.data", "return 2 * g @ self.weight.data")
    assert failed(submit(source, "linear", seed=3)) == failed(submit(source, "linear", seed=3))
    assert failed(submit(source, "linear", seed=3)) != failed(submit(source, "linear", seed=4))


def test_list_shows_assignments_and_checks(capsys):
    rc, out, _ = run_cli(["grade", "--list"], capsys)
    assert rc == 0 and "linear:" in out and "forward: y = x W^T + b" in out


def test_the_starter_loads_and_scores_zero(tmp_path, capsys):
    rc, out, _ = run_cli(["assignment", "new", "linear", str(tmp_path / "hw")], capsys)
    assert rc == 0 and (tmp_path / "hw" / "linear.py").exists() and (tmp_path / "hw" / "README.md").exists()
    assert "y = x W^T + b" in (tmp_path / "hw" / "linear.py").read_text() or "x W" in (tmp_path / "hw" / "linear.py").read_text()
    rc, out, _ = run_cli(["grade", str(tmp_path / "hw" / "linear.py"), "--assignment", "linear"], capsys)
    assert rc == 1 and "score: 0/9" in out
    rc, _, err = run_cli(["assignment", "new", "linear", str(tmp_path / "hw")], capsys)
    assert rc == 2 and "exists" in err


def test_every_assignment_has_a_starter_that_scores_zero(tmp_path):
    from tricklab.grade.assignments import ASSIGNMENTS
    from tricklab.grade.core import grade
    from tricklab.grade.starter import write_starter

    for name in ASSIGNMENTS:
        path, _ = write_starter(name, tmp_path / name)
        result = grade(path, name, timeout=10)
        assert result.score == 0 and result.max_score > 0, result.report()
