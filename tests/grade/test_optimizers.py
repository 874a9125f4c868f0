"""The sgd-momentum and adam assignments: the references and tricklab.optim's classes score full
marks, a student's correct optimizer too, and each known mistake loses exactly its checks with its hint."""

import numpy as np
import pytest

from tests.grade.conftest import failed
from tricklab import optim
from tricklab.grade.assignments import optimizers
from tricklab.grade.core import grade_object
from tricklab.nn import Parameter

SGD_CORRECT = '''
class SGD:
    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, nesterov=False):
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.buffers = [None] * len(self.params)

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        for i, p in enumerate(self.params):
            g = p.grad + self.weight_decay * p.data
            if self.momentum:
                if self.buffers[i] is None:
                    self.buffers[i] = g.copy()
                else:
                    self.buffers[i] = self.momentum * self.buffers[i] + g
                g = g + self.momentum * self.buffers[i] if self.nesterov else self.buffers[i]
            p.data -= self.lr * g
'''

ADAM_CORRECT = '''
class Adam:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 decoupled_weight_decay=False):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled_weight_decay
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        b1, b2 = self.betas
        self.t += 1
        for i, p in enumerate(self.params):
            g = p.grad if self.decoupled else p.grad + self.weight_decay * p.data
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            m_hat = self.m[i] / (1 - b1 ** self.t)
            v_hat = self.v[i] / (1 - b2 ** self.t)
            u = m_hat / (np.sqrt(v_hat) + self.eps)
            if self.decoupled:
                u = u + self.weight_decay * p.data
            p.data -= self.lr * u
'''


def sgd_mistake(old: str, new: str) -> str:
    assert old in SGD_CORRECT
    return SGD_CORRECT.replace(old, new)


def adam_mistake(old: str, new: str) -> str:
    assert old in ADAM_CORRECT
    return ADAM_CORRECT.replace(old, new)


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    """One step of each reference in this process: the forked checks inherit the compiled fused
    kernels instead of each loading them from numba's cache (only the tests' speed depends on it)."""
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps)):
        make([Parameter(np.zeros(2))]).step()


MOMENTUM = "momentum: buf = g at the first step, then momentum * buf + g"
DECAY = "weight decay: g + wd * p before the momentum; p.grad left unchanged"
NESTEROV = "Nesterov: the update is g + momentum * buf"
PLAIN = "plain SGD: p <- p - lr * g"
ADAM = "Adam: bias-corrected moments, p <- p - lr * m_hat / (sqrt(v_hat) + eps)"
DEFAULTS = "the defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-8"
L2 = "weight_decay is L2: g + wd * p before the moments; p.grad left unchanged"
ADAMW = "AdamW (decoupled_weight_decay=True): p <- p - lr * (u + wd * p)"
ZERO = "zero_grad() sets every .grad to 0"


@pytest.mark.parametrize("obj, name", [(optimizers.SGD, "sgd-momentum"), (optim.SGD, "sgd-momentum"),
                                       (optimizers.Adam, "adam"), (optim.Adam, "adam")])
def test_the_references_score_full_marks(obj, name):
    result = grade_object(obj, name)
    assert result.passed and result.score == result.max_score > 0, result.report()


def test_the_assignment_references_are_tricklab_optims_in_the_assignments_scope():
    w0, grads = np.arange(6.0).reshape(2, 3) / 7, [np.full((2, 3), 0.3), np.full((2, 3), -0.2)]
    for mine, ref in ((optimizers.SGD, lambda ps: optim.SGD(ps, 0.1, 0.9, 0.0, 0.1, True)),
                      (optimizers.Adam, lambda ps: optim.AdamW(ps, 0.1, (0.8, 0.9), 1e-3, 0.5))):
        a, b = Parameter(w0), Parameter(w0)
        kwargs = dict(momentum=0.9, weight_decay=0.1, nesterov=True) if mine is optimizers.SGD else \
            dict(betas=(0.8, 0.9), eps=1e-3, weight_decay=0.5, decoupled_weight_decay=True)
        opt_a, opt_b = mine([a], lr=0.1, **kwargs), ref([b])
        for g in grads:
            a.grad[...], b.grad[...] = g, g
            opt_a.step(), opt_b.step()
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("source, name", [(SGD_CORRECT, "sgd-momentum"), (ADAM_CORRECT, "adam")])
def test_a_correct_student_file_scores_full_marks(submit, source, name):
    result = submit(source, name)
    assert result.passed, result.report()


@pytest.mark.parametrize("source, lost, hint", [
    (sgd_mistake("self.buffers[i] = g.copy()", "self.buffers[i] = (1 - self.momentum) * g")
     .replace("self.momentum * self.buffers[i] + g", "self.momentum * self.buffers[i] + (1 - self.momentum) * g"),
     {MOMENTUM, DECAY, NESTEROV},  # the last two build on the momentum buffer
     "the first step must start the buffer at the gradient (torch), not at momentum * 0 + (1 - momentum) g"),
    (sgd_mistake("self.momentum * self.buffers[i] + g", "self.momentum * self.buffers[i] + (1 - self.momentum) * g"),
     {MOMENTUM, DECAY, NESTEROV}, "not + (1 - momentum) * g"),
    (sgd_mistake("            g = p.grad + self.weight_decay * p.data\n",
                 "            g = p.grad\n")
     .replace("            p.data -= self.lr * g", "            p.data -= self.lr * (g + self.weight_decay * p.data)"),
     {DECAY}, "weight decay adds wd * p to the gradient before the momentum"),
    (sgd_mistake("            g = p.grad + self.weight_decay * p.data\n",
                 "            p.grad += self.weight_decay * p.data\n            g = p.grad.copy()\n"),
     {DECAY}, "step must not change p.grad"),
    (sgd_mistake("g + self.momentum * self.buffers[i] if self.nesterov else self.buffers[i]", "self.buffers[i]"),
     {NESTEROV}, "Nesterov's update is g + momentum * buf"),
    (sgd_mistake("p.data -= self.lr * g", "p.data += self.lr * g"),
     {PLAIN, MOMENTUM, DECAY, NESTEROV}, "the step goes against the gradient"),
    (sgd_mistake("            if self.momentum:\n", "            if self.momentum:\n"
                 "                old = 0.0 if self.buffers[i] is None else self.buffers[i]\n")
     .replace("g + self.momentum * self.buffers[i] if self.nesterov", "g + self.momentum * old if self.nesterov"),
     {NESTEROV}, "with buf after this step's update"),  # g + momentum * old buf is plain momentum
    (sgd_mistake("if self.momentum:", "if False:"), {MOMENTUM, DECAY, NESTEROV}, "momentum is ignored"),
    (sgd_mistake("g = p.grad + self.weight_decay * p.data", "g = p.grad"), {DECAY}, "weight_decay is ignored"),
], ids=["moving-average", "buffer-dampened", "decay-after-momentum", "decay-into-grad", "nesterov-ignored",
        "ascent", "nesterov-old-buffer", "momentum-ignored", "decay-ignored"])
def test_each_sgd_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    result = submit(source, "sgd-momentum")
    assert set(failed(result)) == lost, result.report()
    assert any(hint in output for output in failed(result).values()), result.report()


@pytest.mark.parametrize("source, lost, hint", [
    (adam_mistake("            m_hat = self.m[i] / (1 - b1 ** self.t)\n            v_hat = self.v[i] / (1 - b2 ** self.t)\n",
                  "            m_hat, v_hat = self.m[i], self.v[i]\n"),
     {ADAM, DEFAULTS, L2, ADAMW}, "no bias correction in Adam: divide m by 1 - beta1^t and v by 1 - beta2^t"),
    (adam_mistake("np.sqrt(v_hat) + self.eps", "np.sqrt(v_hat + self.eps)"),
     {ADAM, DEFAULTS, L2, ADAMW}, "eps goes outside the square root"),
    (adam_mistake("            if self.decoupled:\n                u = u + self.weight_decay * p.data\n", "")
     .replace("p.grad if self.decoupled else p.grad + self.weight_decay * p.data", "p.grad + self.weight_decay * p.data"),
     {ADAMW}, "AdamW decays the weights directly (p -= lr * wd * p), not through the gradient"),
    (adam_mistake("u = u + self.weight_decay * p.data", "p.data -= self.weight_decay * p.data"),
     {ADAMW}, "AdamW's decay is scaled by the learning rate"),
    (adam_mistake("            if self.decoupled:\n                u = u + self.weight_decay * p.data\n"
                  "            p.data -= self.lr * u\n",
                  "            p.data -= self.lr * u\n"
                  "            if self.decoupled:\n                p.data *= 1 - self.lr * self.weight_decay\n"),
     {ADAMW}, "AdamW decays the weights of before the step"),
    (adam_mistake("p.grad if self.decoupled else p.grad + self.weight_decay * p.data", "p.grad")
     .replace("if self.decoupled:", "if self.weight_decay:"),
     {L2}, "Adam's weight_decay is L2"),
    (adam_mistake("            m_hat = self.m[i] / (1 - b1 ** self.t)\n            v_hat = self.v[i] / (1 - b2 ** self.t)\n"
                  "            u = m_hat / (np.sqrt(v_hat) + self.eps)\n",
                  "            step_size = np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)\n"
                  "            u = step_size * self.m[i] / (np.sqrt(self.v[i]) + self.eps)\n"),
     {ADAM, DEFAULTS, L2, ADAMW}, "eps is added after the bias correction"),
    (adam_mistake("eps=1e-8, weight_decay", "eps=1e-6, weight_decay"), {DEFAULTS}, None),
    (adam_mistake("        self.t += 1\n        for i, p in enumerate(self.params):\n",
                  "        for i, p in enumerate(self.params):\n            self.t += 1\n"),
     {ADAM, DEFAULTS, L2, ADAMW}, None),  # one step count for all the parameters, counted per parameter
], ids=["no-bias-correction", "eps-inside-sqrt", "correction-in-step-size", "adamw-through-gradient", "adamw-without-lr",
        "adamw-after-step", "l2-decoupled", "default-eps", "step-count-per-parameter"])
def test_each_adam_mistake_loses_exactly_its_checks_with_its_hint(submit, source, lost, hint):
    result = submit(source, "adam")
    assert set(failed(result)) == lost, result.report()
    outputs = failed(result).values()
    if hint is None:
        assert not any("hint:" in output for output in outputs), result.report()
    else:
        assert any(hint in output for output in outputs), result.report()


def test_a_failure_names_the_parameter_the_step_and_the_call(submit):
    result = submit(sgd_mistake("self.buffers[i] = g.copy()", "self.buffers[i] = (1 - self.momentum) * g"),
                    "sgd-momentum")
    output = failed(result)[MOMENTUM]
    assert "parameter 0 (shape (3,)) after step 1" in output
    assert "inputs: SGD(params, lr=0.1, momentum=0.9), params of shapes (3,) and (2, 4)" in output
    assert "first mismatch at index" in output and "yours" in output and "expected" in output


def test_a_step_that_changes_the_shape_is_named(submit):
    result = submit(sgd_mistake("p.data -= self.lr * g", "p.data = (p.data - self.lr * g).ravel()"), "sgd-momentum")
    assert set(failed(result)) == {PLAIN, MOMENTUM, DECAY, NESTEROV}, result.report()
    assert all("parameter 1 (shape (2, 4)) after step 1: shape (8,), expected (2, 4)" in output
               for output in failed(result).values()), result.report()


def test_a_zero_grad_that_drops_the_array_loses_its_check(submit):
    result = submit(sgd_mistake("p.grad[...] = 0", "p.grad = None"), "sgd-momentum")
    assert set(failed(result)) == {ZERO}, result.report()
    assert "must be an array of shape (3,), got NoneType" in failed(result)[ZERO]


def test_an_exception_in_step_costs_the_checks_that_step(submit):
    result = submit(adam_mistake("b1, b2 = self.betas", "b1, b2 = self.beta"), "adam")
    outputs = failed(result)
    assert set(outputs) == {ADAM, DEFAULTS, L2, ADAMW}, result.report()
    assert all("AttributeError" in out and "self.beta" in out and "line" in out for out in outputs.values())
