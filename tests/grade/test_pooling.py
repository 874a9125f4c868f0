"""The maxpool2d assignment: the reference and a student's correct file score full marks; each
mistake a student makes loses exactly its checks, with its hint."""

import pytest

from tests.grade.conftest import edit, failed, run_cli
from tricklab import nn
from tricklab.grade.core import grade_object

CORRECT = '''
class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dtype=None):
        super().__init__(dtype=dtype)
        self.k, self.s, self.p = kernel_size, stride or kernel_size, padding

    def forward(self, x):
        k, s, p = self.k, self.s, self.p
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
        ho, wo = (xp.shape[2] - k) // s + 1, (xp.shape[3] - k) // s + 1
        y = np.full((*x.shape[:2], ho, wo), -np.inf)
        best = np.zeros(y.shape, dtype=int)
        for u in range(k):
            for v in range(k):
                patch = xp[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s]
                better = patch > y
                y = np.where(better, patch, y)
                best = np.where(better, u * k + v, best)
        self.best, self.padded_shape, self.x_shape = best, xp.shape, x.shape
        return y

    def backward(self, g):
        k, s, p = self.k, self.s, self.p
        ho, wo = g.shape[2:]
        gxp = np.zeros(self.padded_shape)
        for u in range(k):
            for v in range(k):
                gxp[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s] += g * (self.best == u * k + v)
        h, w = self.x_shape[2:]
        return gxp[:, :, p:p + h, p:p + w]
'''

FORWARD = "forward: the maximum of each window (stride defaults to kernel_size)"
OVERLAP_FORWARD = "forward with overlapping windows and -inf padding: H' = floor((H + 2p - k) / s) + 1"
BACKWARD = "backward: each window's gradient to its arg-max"
OVERLAP_BACKWARD = "backward with overlapping windows: gradients at a shared arg-max add up"
TIES = "ties: the first maximum in the window (row-major) takes the gradient, as torch"

WINDOW = "[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s]"
SCATTER = f"gxp{WINDOW} += g * (self.best == u * k + v)"


def mistake(*pairs: str) -> str:
    return edit(CORRECT, *pairs)


def test_the_reference_scores_full_marks():
    result = grade_object(nn.MaxPool2d, "maxpool2d")
    assert result.passed and result.score == result.max_score > 0, result.report()


def test_a_correct_student_file_scores_full_marks(submit):
    result = submit(CORRECT, "maxpool2d")
    assert result.passed, result.report()


@pytest.mark.parametrize("source, lost, hint", [
    pytest.param(mistake("        return y\n", f"        return sum(xp{WINDOW} for u in range(k) for v in range(k)) / k**2\n"),
                 {FORWARD, OVERLAP_FORWARD, TIES}, "yours averages the window", id="forward-average"),
    pytest.param(mistake("constant_values=-np.inf", "constant_values=0"), {OVERLAP_FORWARD, OVERLAP_BACKWARD, TIES},
                 "yours pads with zeros", id="zero-padding"),
    pytest.param(mistake("stride or kernel_size", "stride or 1"), {FORWARD, BACKWARD, TIES},
                 "the stride defaults to kernel_size", id="stride-default-1"),
    pytest.param(mistake(SCATTER, f"gxp{WINDOW} += g / (k * k)"), {BACKWARD, OVERLAP_BACKWARD, TIES},
                 "yours spreads it over the whole window like average pooling", id="backward-average"),
    pytest.param(mistake(SCATTER, f"np.copyto(gxp{WINDOW}, g, where=self.best == u * k + v)"), {OVERLAP_BACKWARD, TIES},
                 "yours overwrites them (the last kernel offset's stays)", id="overlap-overwritten"),
    pytest.param(mistake("self.best, self.padded_shape", "self.xp, self.y, self.best, self.padded_shape",
                         "best, xp.shape, x.shape", "xp, y, best, xp.shape, x.shape",
                         SCATTER, f"gxp{WINDOW} += g * (self.xp{WINDOW} == self.y)"), {TIES},
                 "yours gives it to every maximum", id="ties-to-every-maximum"),
])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    result = submit(source, "maxpool2d")
    assert set(failed(result)) == lost, result.report()
    assert any(hint in output for output in failed(result).values()), result.report()


def test_the_last_of_tied_maxima_fails_the_ties_check_only(submit):
    result = submit(mistake("better = patch > y", "better = patch >= y"), "maxpool2d")
    assert set(failed(result)) == {TIES}, result.report()


def test_list_and_starter(tmp_path, capsys):
    rc, out, _ = run_cli(["grade", "--list"], capsys)
    assert rc == 0 and "maxpool2d:" in out and BACKWARD in out
    rc, _, _ = run_cli(["assignment", "new", "maxpool2d", str(tmp_path / "hw")], capsys)
    starter = (tmp_path / "hw" / "maxpool2d.py").read_text()
    assert rc == 0 and "class MaxPool2d(Module):" in starter and "arg-max" in starter
    rc, out, _ = run_cli(["grade", str(tmp_path / "hw" / "maxpool2d.py"), "--assignment", "maxpool2d"], capsys)
    assert rc == 1 and "score: 0/10" in out
