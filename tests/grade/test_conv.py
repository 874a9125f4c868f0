"""The conv2d assignment: the reference and a student's correct file score full marks; each mistake a
student makes loses exactly its checks, with its hint."""

import pytest

from tests.grade.conftest import edit, failed, run_cli
from tricklab import nn
from tricklab.grade.core import grade_object

CORRECT = '''
class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, rng=None, dtype=None):
        super().__init__(dtype=dtype)
        rng = np.random.default_rng(rng)
        self.k, self.s, self.p = kernel_size, stride, padding
        bound = 1 / np.sqrt(in_channels * kernel_size * kernel_size)
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = Parameter(rng.uniform(-bound, bound, shape), dtype=self.dtype)
        self.bias = Parameter(rng.uniform(-bound, bound, out_channels), dtype=self.dtype)

    def forward(self, x):
        k, s, p = self.k, self.s, self.p
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        n, c, h, w = xp.shape
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        self.x_shape, self.xp, self.out = x.shape, xp, (ho, wo)
        y = np.zeros((n, len(self.bias.data), ho, wo)) + self.bias.data[:, None, None]
        for u in range(k):
            for v in range(k):
                patch = xp[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s]
                y += np.einsum("oc,ncij->noij", self.weight.data[:, :, u, v], patch)
        return y

    def backward(self, g):
        k, s, p = self.k, self.s, self.p
        (ho, wo), xp = self.out, self.xp
        gxp = np.zeros_like(xp)
        for u in range(k):
            for v in range(k):
                rows, cols = slice(u, u + s * (ho - 1) + 1, s), slice(v, v + s * (wo - 1) + 1, s)
                self.weight.grad[:, :, u, v] += np.einsum("noij,ncij->oc", g, xp[:, :, rows, cols])
                gxp[:, :, rows, cols] += np.einsum("noij,oc->ncij", g, self.weight.data[:, :, u, v])
        self.bias.grad += g.sum(axis=(0, 2, 3))
        h, w = self.x_shape[2:]
        return gxp[:, :, p:p + h, p:p + w]
'''

PARAMETERS = "weight (O, C, kh, kw) and bias (O,) are Parameters"
FORWARD = "forward: y = b + sum w x, a cross-correlation (stride 1, no padding)"
STRIDED = "forward with stride and padding: H' = floor((H + 2p - k) / s) + 1"
DX = "backward: dLoss/dx, the transposed convolution"
PARAM_GRADS = "backward: dLoss/dw (input correlated with gy), dLoss/db = sum of gy over N, H', W'"
ACCUMULATE = "backward adds into .grad (gradients accumulate)"
FD = "backward agrees with finite differences of your own forward (float64)"

FLIP_FORWARD = ('y += np.einsum("oc,ncij->noij", self.weight.data[:, :, u, v], patch)',
                'y += np.einsum("oc,ncij->noij", self.weight.data[:, :, k - 1 - u, k - 1 - v], patch)')
FLIP_DX = ('np.einsum("noij,oc->ncij", g, self.weight.data[:, :, u, v])',
           'np.einsum("noij,oc->ncij", g, self.weight.data[:, :, k - 1 - u, k - 1 - v])')
FLIP_DW = ("self.weight.grad[:, :, u, v] +=", "self.weight.grad[:, :, k - 1 - u, k - 1 - v] +=")


def mistake(*pairs: str) -> str:
    return edit(CORRECT, *pairs)


def test_the_reference_scores_full_marks():
    result = grade_object(nn.Conv2d, "conv2d")
    assert result.passed and result.score == result.max_score > 0, result.report()


def test_a_correct_student_file_scores_full_marks(submit):
    result = submit(CORRECT, "conv2d")
    assert result.passed, result.report()


@pytest.mark.parametrize("source, lost, hint", [
    pytest.param(mistake(*FLIP_FORWARD), {FORWARD, STRIDED, FD}, "yours flips the kernel (a convolution",
                 id="forward-convolution"),
    pytest.param(mistake(*FLIP_FORWARD, *FLIP_DX, *FLIP_DW), {FORWARD, STRIDED, DX, PARAM_GRADS, ACCUMULATE},
                 "yours flips the kernel (a convolution", id="convolution-throughout"),
    pytest.param(mistake(*FLIP_DX), {DX, FD}, "dLoss/dx is the transposed convolution", id="dx-kernel-flipped"),
    pytest.param(mistake(*FLIP_DW), {PARAM_GRADS, ACCUMULATE, FD}, "yours is flipped", id="dw-flipped"),
    pytest.param(mistake(" + self.bias.data[:, None, None]", ""), {FORWARD, STRIDED, FD}, "the bias is missing",
                 id="forward-without-bias"),
    pytest.param(mistake("self.bias.grad += g.sum(axis=(0, 2, 3))", "self.bias.grad = g.sum(axis=0)"),
                 {PARAM_GRADS, ACCUMULATE, FD}, "dLoss/db[o] sums gy over N, H' and W'; yours sums over N only",
                 id="db-summed-over-n-only"),
    pytest.param(mistake("g.sum(axis=(0, 2, 3))", "g.mean(axis=(0, 2, 3))"), {PARAM_GRADS, ACCUMULATE, FD},
                 "dLoss/db[o] sums gy over N, H' and W'; yours is the mean", id="db-mean"),
    pytest.param(mistake("g.sum(axis=(0, 2, 3))", "g.sum(axis=(0, 2, 3)) / (g.shape[2] * g.shape[3])"),
                 {PARAM_GRADS, ACCUMULATE, FD}, "yours averages over H', W'", id="db-averaged-over-pixels"),
    pytest.param(mistake('np.einsum("noij,ncij->oc", g, xp[:, :, rows, cols])',
                         'np.einsum("noij,ncij->oc", g, xp[:, :, rows, cols]) / len(g)'),
                 {PARAM_GRADS, ACCUMULATE, FD}, "yours divides by the batch size", id="dw-divided-by-batch"),
    pytest.param(mistake("self.weight.grad[:, :, u, v] +=", "self.weight.grad[:, :, u, v] ="), {ACCUMULATE},
                 "not overwrite it", id="dw-overwritten"),
    pytest.param(mistake("self.k, self.s, self.p = kernel_size, stride, padding",
                         "self.k, self.s, self.p = kernel_size, 1, padding"), {STRIDED, DX, PARAM_GRADS, ACCUMULATE, FD},
                 "yours leaves out the stride", id="stride-ignored"),
    pytest.param(mistake("((0, 0), (0, 0), (p, p), (p, p))", "((0, 0), (0, 0), (0, p), (0, p))"),
                 {STRIDED, DX, PARAM_GRADS, ACCUMULATE, FD}, "the padding is added on both sides; yours adds it once",
                 id="padding-on-one-side"),
])
def test_each_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    result = submit(source, "conv2d")
    assert set(failed(result)) == lost, result.report()
    assert any(hint in output for output in failed(result).values()), result.report()


def test_a_wrong_output_size_names_both_shapes(submit):
    result = submit(mistake("((0, 0), (0, 0), (p, p), (p, p))", "((0, 0), (0, 0), (0, 0), (0, 0))"), "conv2d")
    output = failed(result)[STRIDED]
    assert "forward output y: shape (2, 3, 3, 2), expected (2, 3, 4, 3)" in output, result.report()
    assert "yours leaves out the padding" in output


def test_a_finite_difference_failure_names_the_array_and_the_step(submit):
    result = submit(mistake("return gxp[:, :, p:p + h, p:p + w]", "return 2 * gxp[:, :, p:p + h, p:p + w]"), "conv2d")
    assert set(failed(result)) == {DX, FD}, result.report()
    assert "your dLoss/dx against finite differences of your forward" in failed(result)[FD]
    assert "step 0.001" in failed(result)[FD]


def test_an_exception_in_backward_costs_the_backward_checks(submit):
    result = submit(mistake("self.bias.grad += g.sum(axis=(0, 2, 3))", "self.bias.grad += g.sum(axis=(0, 2, 3)) + nope"),
                    "conv2d")
    outputs = failed(result)
    assert set(outputs) == {DX, PARAM_GRADS, ACCUMULATE, FD}, result.report()
    assert "NameError" in outputs[DX] and "nope" in outputs[DX]


def test_list_and_starter(tmp_path, capsys):
    rc, out, _ = run_cli(["grade", "--list"], capsys)
    assert rc == 0 and "conv2d:" in out and DX in out
    rc, _, _ = run_cli(["assignment", "new", "conv2d", str(tmp_path / "hw")], capsys)
    starter = (tmp_path / "hw" / "conv2d.py").read_text()
    assert rc == 0 and "class Conv2d(Module):" in starter and "cross-correlation" in starter
    rc, out, _ = run_cli(["grade", str(tmp_path / "hw" / "conv2d.py"), "--assignment", "conv2d"], capsys)
    assert rc == 1 and "score: 0/14" in out
